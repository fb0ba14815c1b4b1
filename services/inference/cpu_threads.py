"""CPU thread settings for serving, applied before torch (and its OpenMP runtime) loads.

An idle OpenMP worker thread spins ``GOMP_SPINCOUNT`` times after each parallel region before it
sleeps (libgomp, which the CPU torch wheel ships; its default is 300,000 spins, ~15 ms here). A served
model runs many short forward passes, and between them the gRPC event loop, the batch scheduler and
the preparation threads need the same cores: long spins starve them (measured on a 2-core machine
with all-MiniLM-L6-v2: 32 single-item clients without batching got 19.5 texts/s with libgomp's
default spin, 65 texts/s with none). No spin at all costs the other way: a forward pass is ~200
regions, and a worker asleep between two of them must be woken (~27 us each), 6-8% of the pass. So
the service sets ``OMP_WAIT_POLICY=PASSIVE`` with a short spin, ``GOMP_SPINCOUNT=10000`` (~0.6 ms:
the gaps inside a pass are shorter, the idle time between passes is not spent spinning), unless the
operator chose a policy already with either variable (an explicit ``GOMP_SPINCOUNT`` overrides the
spin ``OMP_WAIT_POLICY`` implies). Measured on a quiet 2-core machine, served, in alternating A/B
rounds (README, Performance): against no spin, 1.24x at 32 single-item gRPC clients, 1.39x for a
lone caller, 1.10x at 32 HTTP clients, 1.07x for 64-text requests; against 1,000 spins 1.01-1.10x
(1,000 lost to no spin at 32 HTTP clients), for up to 5% more CPU per text. Where the service shares
its cores with other busy processes, spinning loses (``GOMP_SPINCOUNT=0`` spends the least CPU).

:func:`openmp_policy` describes the policy an environment gives, so the
benchmark can print what its raw rows and its servers ran under.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping

#: the variables by which an operator chooses how idle OpenMP workers wait
POLICY_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
#: what the service sets when the operator set neither
DEFAULT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"}


def default_openmp_wait(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set :data:`DEFAULT_POLICY` (a short spin, then sleep) unless the operator set OMP_WAIT_POLICY or
    GOMP_SPINCOUNT, or torch is loaded already (too late: the runtime has read its settings); True if
    it took effect."""
    env = os.environ if environ is None else environ
    if any(var in env for var in POLICY_VARS):
        return False
    if "torch" in sys.modules:
        return False
    env.update(DEFAULT_POLICY)
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
