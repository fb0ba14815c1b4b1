"""polyvec up keeps its inference services up: a child that dies is restarted on the same port, with
restart delays that grow while it keeps dying."""

from __future__ import annotations

import asyncio
import collections
import json
from types import SimpleNamespace

from services.up import Child, ModelConfig, free_port, supervise
from tests.model_factories import build_sentence_transformers_folder


async def wait_serving(child: Child, timeout: float = 120) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await child.serving():
        assert not child.exited, "\n".join(child.tail)
        assert asyncio.get_running_loop().time() < deadline, "not serving in time"
        await asyncio.sleep(0.2)


def test_a_child_that_dies_is_restarted_on_its_port(tmp_path, capsys):
    folder = build_sentence_transformers_folder(tmp_path / "st")
    spec = {"name": "tiny-st", "type": "sentence_transformers", "localpath": str(folder)}
    model = ModelConfig(name="tiny", model_properties=json.dumps(spec), env={"HF_HUB_OFFLINE": "1"})

    async def scenario():
        child = Child(model, free_port(), quiet=True)
        stop = asyncio.Event()
        await child.start()
        try:
            await wait_serving(child)
            first_pid = child.proc.pid
            task = asyncio.create_task(supervise(child, stop.is_set, base_delay_s=0.1))
            child.proc.kill()
            while child.restarts == 0 or child.proc.pid == first_pid:  # the supervisor starts a new one
                await asyncio.sleep(0.1)
            await wait_serving(child)
            assert child.proc.pid != first_pid and child.restarts == 1
            err = ""
            while "is serving again" not in err:  # the supervisor polls health and says so
                err += capsys.readouterr().err
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.wait_for(task, 60)
        finally:
            await child.stop()
        return err

    err = asyncio.run(asyncio.wait_for(scenario(), 240))
    assert "exited with code -9; restarting it" in err and "is serving again" in err


def test_a_child_that_keeps_dying_is_left_down(tmp_path, capsys):
    spec = {"name": "broken", "type": "sentence_transformers", "localpath": str(tmp_path / "missing")}
    model = ModelConfig(name="broken", model_properties=json.dumps(spec))

    async def scenario():
        child = Child(model, free_port(), quiet=True)
        await child.start()
        await child.proc.wait()
        await asyncio.wait_for(
            supervise(child, lambda: False, max_restarts=2, base_delay_s=0.05, ready_timeout_s=60), 120)
        await child.stop()
        return child

    child = asyncio.run(scenario())
    assert child.restarts == 2
    err = capsys.readouterr().err
    assert "exited with code 2 2 times" in err and "leaving it down" in err


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CrashingChild:
    """Stands in for a Child whose model dies again right after every restart (no process, no waiting)."""

    def __init__(self) -> None:
        self.model = ModelConfig(name="crashy", model="crashy/model")
        self.address = "127.0.0.1:1"
        self.proc = SimpleNamespace(returncode=1, pid=0)
        self.tail = collections.deque(["RuntimeError: boom"])
        self.restarts = 0
        self.exited = True

    async def restart(self) -> None:
        self.restarts += 1

    async def serving(self) -> bool:
        return False


def run_supervisor(child: CrashingChild, **options) -> list[float]:
    """Run supervise with a virtual clock: returns the delays it waited, in order."""
    clock, waited = Clock(), []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)
        clock.now += seconds

    asyncio.run(asyncio.wait_for(supervise(child, options.pop("stop", lambda: False), sleep=sleep,
                                           clock=clock, **options), 30))
    return waited


def test_restart_delays_double_up_to_a_ceiling(capsys):
    child = CrashingChild()
    waited = run_supervisor(child, max_restarts=8, window_s=10_000, base_delay_s=1.0, max_delay_s=30.0)
    assert waited == [1, 2, 4, 8, 16, 30, 30, 30]
    assert child.restarts == 8
    err = capsys.readouterr().err
    assert "restarting it in 1 s" in err and "restarting it in 16 s" in err and "restarting it in 30 s" in err
    assert "exited with code 1 8 times within 10000 s; leaving it down" in err


def test_restarts_older_than_the_window_are_forgotten():
    child = CrashingChild()
    waited = run_supervisor(child, max_restarts=100, window_s=10, base_delay_s=1.0,
                            stop=lambda: child.restarts >= 8)
    # restarts at t = 0, 1, 3, 7 push the delay to 8 s; at t = 15 only the one of t = 7 is within the
    # last 10 s, so the delay falls back to 2 s and grows again
    assert waited == [1, 2, 4, 8, 2, 4, 4, 8]
