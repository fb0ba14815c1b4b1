"""CPU thread settings for serving, applied before torch (and its OpenMP runtime) loads.

OpenMP worker threads spin for a while after each parallel region by default.
A served model runs many short forward passes, and between them the gRPC
event loop, the batch scheduler and the preparation threads need the same
cores: spinning workers starve them (measured on a 2-core machine with
all-MiniLM-L6-v2: 32 single-item clients without batching got 19.5 texts/s with
spinning workers, 65 texts/s with passive waiting). So the service asks
OpenMP to sleep when idle unless the operator chose a policy already: either
``OMP_WAIT_POLICY`` or libgomp's ``GOMP_SPINCOUNT`` (how many spins an idle
worker waits before it sleeps; the CPU torch wheel ships libgomp, and an
explicit ``GOMP_SPINCOUNT`` overrides the spin that ``OMP_WAIT_POLICY`` implies).

:func:`openmp_policy` describes the policy an environment gives, so the
benchmark can print what its raw rows and its servers ran under.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping

#: the variables by which an operator chooses how idle OpenMP workers wait
POLICY_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def prefer_passive_openmp(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE unless the operator set OMP_WAIT_POLICY or GOMP_SPINCOUNT, or torch
    is loaded already (too late: the runtime has read its settings); True if it took effect."""
    env = os.environ if environ is None else environ
    if any(var in env for var in POLICY_VARS):
        return False
    if "torch" in sys.modules:
        return False
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def openmp_policy(environ: Mapping[str, str] | None = None) -> str:
    """How idle OpenMP (libgomp) workers wait under ``environ``, in words, e.g.
    ``"OMP_WAIT_POLICY=PASSIVE (spin 0)"`` or ``"GOMP_SPINCOUNT=10000 (OMP_WAIT_POLICY=PASSIVE)"``."""
    env = os.environ if environ is None else environ
    policy = env.get("OMP_WAIT_POLICY", "").strip().upper()
    spin = env.get("GOMP_SPINCOUNT", "").strip()
    if spin:
        return f"GOMP_SPINCOUNT={spin}" + (f" (OMP_WAIT_POLICY={policy})" if policy else "")
    implied = {"PASSIVE": "spin 0", "ACTIVE": "spin until work"}.get(policy)
    if implied:
        return f"OMP_WAIT_POLICY={policy} ({implied})"
    return "OpenMP default (libgomp: spin 300000, then sleep)"
