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

import ctypes
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


def torch_openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime torch's CPU kernels use (its bundled libgomp, or the Intel one), as loaded in
    this process; None when torch is not loaded or it cannot be found (not Linux). Other packages bundle
    their own libgomp (sentencepiece does): only torch's governs torch's parallel regions."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            loaded = {line.split()[-1] for line in maps if line.rstrip().endswith((".so", ".so.1", ".so.5"))}
    except OSError:  # pragma: no cover - not Linux
        return None
    if not getattr(torch, "__file__", None):
        return None
    torch_lib = os.path.join(os.path.dirname(str(torch.__file__)), "lib") + os.sep
    for path in sorted(loaded):
        if path.startswith(torch_lib) and os.path.basename(path).startswith(("libgomp", "libiomp")):
            return ctypes.CDLL(path)
    return None


def torch_alone_in_this_thread() -> bool:
    """Make torch run its parallel regions in the calling thread on that thread alone, without an OpenMP
    team of its own; True if it took effect.

    libgomp keeps a team of worker threads for every thread that has started a parallel region, for as
    long as that thread lives, and once it manages more threads than there are CPUs it throttles every
    team: an idle worker spins at most 100 times (1000 under OMP_WAIT_POLICY=ACTIVE, none under PASSIVE)
    instead of GOMP_SPINCOUNT before it sleeps, so each parallel region of a forward pass waits for a
    worker to wake. Image preparation runs torch operations in the preparation threads (to tensor,
    normalise), and each of them used to keep a team: the model thread's forward passes then took ~1.8x
    as long on 2 cores (``bench/openmp_teams.py``). The preparation threads call this as they start, so
    the model thread's team is the only one."""
    torch = sys.modules.get("torch")
    runtime = torch_openmp_runtime()
    if torch is None or runtime is None:
        return False
    torch.get_num_threads()  # torch sets each thread's team size at its first parallel call: do that first
    runtime.omp_set_num_threads(1)  # this thread's own setting (an OpenMP ICV); other threads keep theirs
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
