"""The inference service's OpenMP idle policy: a short spin, then sleep, unless the operator chose one
(README)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.inference.cpu_threads import default_openmp_wait, openmp_policy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_torch(monkeypatch):
    """As in a fresh server process: torch not loaded yet."""
    monkeypatch.delitem(sys.modules, "torch", raising=False)


def test_a_short_spin_when_the_operator_chose_nothing(no_torch):
    env: dict[str, str] = {}
    assert default_openmp_wait(env) is True
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"}


@pytest.mark.parametrize("chosen", [{"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "2000"},
                                    {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"}])
def test_the_operators_choice_is_kept(no_torch, chosen):
    env = dict(chosen)
    assert default_openmp_wait(env) is False
    assert env == chosen


def test_too_late_once_torch_is_loaded(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", object())
    env: dict[str, str] = {}
    assert default_openmp_wait(env) is False
    assert env == {}


def test_policy_in_words():
    assert openmp_policy({}) == "OpenMP default (libgomp: spin 300000, then sleep)"
    assert openmp_policy({"OMP_WAIT_POLICY": "passive"}) == "OMP_WAIT_POLICY=PASSIVE (spin 0)"
    assert openmp_policy({"OMP_WAIT_POLICY": "ACTIVE"}) == "OMP_WAIT_POLICY=ACTIVE (spin until work)"
    assert openmp_policy({"GOMP_SPINCOUNT": "10000"}) == "GOMP_SPINCOUNT=10000"
    assert openmp_policy({"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"}) == \
        "GOMP_SPINCOUNT=10000 (OMP_WAIT_POLICY=PASSIVE)"


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``code`` run by a fresh interpreter in the repository, as the server is started; it must succeed."""
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def _server_openmp(extra: dict[str, str]) -> str:
    """What torch's OpenMP runtime reads in a process started like the server: services.inference.main's
    own entry step, then torch (libgomp prints its settings with OMP_DISPLAY_ENV)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(extra, OMP_DISPLAY_ENV="VERBOSE")
    code = ("import sys, services.inference.main as m\n"
            "assert 'torch' not in sys.modules, 'importing the server loads torch before its OpenMP policy'\n"
            "m.default_openmp_wait()\n"
            "import torch\n"
            "torch.ones(8).sum()\n")
    done = _python(code, env)
    return done.stderr + done.stdout


def test_the_server_runs_torch_with_a_short_spin_by_default():
    shown = _server_openmp({})
    if "GOMP_SPINCOUNT" not in shown:
        pytest.skip("this torch build's OpenMP runtime is not libgomp")
    assert "GOMP_SPINCOUNT = '10000'" in shown and "OMP_WAIT_POLICY = 'PASSIVE'" in shown


def test_the_operators_spin_count_reaches_torch():
    shown = _server_openmp({"GOMP_SPINCOUNT": "12345"})
    if "GOMP_SPINCOUNT" not in shown:
        pytest.skip("this torch build's OpenMP runtime is not libgomp")
    assert "GOMP_SPINCOUNT = '12345'" in shown


# --- one OpenMP team: the model thread's ----------------------------------------------------------------

def _threads_now() -> int:
    return len(os.listdir("/proc/self/task"))


def test_a_preparation_thread_runs_torch_without_a_team_of_its_own():
    """After torch_alone_in_this_thread a parallel torch operation in that thread starts no OpenMP worker
    (libgomp would keep one for as long as the thread lives, and more workers than CPUs throttle the model
    thread's team); another thread's setting is untouched."""
    import threading

    import torch

    from services.inference.cpu_threads import torch_alone_in_this_thread, torch_openmp_runtime

    runtime = torch_openmp_runtime()
    if runtime is None or torch.get_num_threads() < 2:
        pytest.skip("needs torch's OpenMP runtime and 2 cores")
    seen: dict = {}

    def worker(alone: bool) -> None:
        took = torch_alone_in_this_thread() if alone else None
        before = _threads_now()
        (torch.randn(3, 224, 224) - 0.5) / 0.25  # 150,528 floats: a parallel region
        seen[alone] = (took, runtime.omp_get_max_threads(), _threads_now() - before)
        ready.set()
        leave.wait()

    for alone in (True, False):
        ready, leave = threading.Event(), threading.Event()
        thread = threading.Thread(target=worker, args=(alone,))
        thread.start()
        ready.wait(60)
        leave.set()
        thread.join()
    assert seen[True] == (True, 1, 0)  # alone: no worker thread appeared
    assert seen[False][1] >= 2 and seen[False][2] >= 1  # the default: a team, with a worker of its own
    assert runtime.omp_get_max_threads() >= 2  # the calling (model-like) thread keeps its team size


def test_the_service_prepares_in_threads_without_a_team():
    """The inference service's preparation threads run torch_alone_in_this_thread as they start."""
    import asyncio
    import io

    import numpy as np
    import torch  # noqa: F401 - loaded, as it is beside every torch model
    from PIL import Image

    from services.inference.config import InferenceSettings
    from services.inference.cpu_threads import torch_openmp_runtime
    from services.inference.service import InferenceService
    from tests.fake_encoders import FakeEncoder

    runtime = torch_openmp_runtime()
    if runtime is None:
        pytest.skip("needs torch's OpenMP runtime")
    team_sizes: list[int] = []

    class Recording(FakeEncoder):
        def prepare_images(self, images):
            team_sizes.append(runtime.omp_get_max_threads())
            return super().prepare_images(images)

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    service = InferenceService(Recording(), InferenceSettings.from_env({"MODEL": "m"}))

    async def run():
        try:
            await service.vectorize([], [buf.getvalue()] * 3)
        finally:
            await service.close()

    asyncio.run(run())
    assert team_sizes and set(team_sizes) == {1}


# --- the GIL's switch interval -------------------------------------------------------------------------

def _server_switch_interval(extra: dict[str, str]) -> float:
    """sys.getswitchinterval() as the server's event loop would start, in a process started like the
    server (services.inference.main.main, its event loop replaced by a probe)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PROPERTIES", "SWITCH_INTERVAL_MS")}
    env.update({"MODEL": "sentence-transformers/all-MiniLM-L6-v2", "LOG_LEVEL": "WARNING", **extra})
    code = ("import sys, services.inference.main as m\n"
            "def probe(coro):\n"
            "    coro.close()\n"
            "    print('interval', sys.getswitchinterval())\n"
            "    return 0\n"
            "m.run_event_loop = probe\n"
            "sys.exit(m.main([]))\n")
    return float(_python(code, env).stdout.split("interval", 1)[1])


@pytest.mark.parametrize("setting, seconds", [(None, 0.001), ("2.5", 0.0025)])
def test_the_server_runs_with_the_configured_switch_interval(setting, seconds):
    """SWITCH_INTERVAL_MS (default 1: Python's own is 5 ms) is in force before the server serves."""
    extra = {} if setting is None else {"SWITCH_INTERVAL_MS": setting}
    assert _server_switch_interval(extra) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["0", "-1", "1001", "soon"])
def test_a_bad_switch_interval_is_refused_naming_it(bad):
    from services.inference.config import InferenceSettings, SettingsError

    with pytest.raises(SettingsError, match="SWITCH_INTERVAL_MS"):
        InferenceSettings.from_env({"MODEL": "m", "SWITCH_INTERVAL_MS": bad})
