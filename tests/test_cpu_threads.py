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
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
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
