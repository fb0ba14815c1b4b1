"""polyvec up keeps its inference services up: a child that dies is restarted on the same port."""

from __future__ import annotations

import asyncio
import json

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
            await asyncio.sleep(1.5)  # the supervisor polls health twice a second and says so
            stop.set()
            await asyncio.wait_for(task, 5)
        finally:
            await child.stop()

    asyncio.run(asyncio.wait_for(scenario(), 240))
    err = capsys.readouterr().err
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
