"""CPU thread settings for serving, applied before torch (and its OpenMP runtime) loads.

OpenMP worker threads spin for a while after each parallel region by default.
A served model runs many short forward passes, and between them the gRPC
event loop, the batch scheduler and the preparation threads need the same
cores: spinning workers starve them (measured on a 2-core machine with
all-MiniLM-L6-v2: 32 single-item clients without batching got 19.5 texts/s with
spinning workers, 65 texts/s with passive waiting). So the service asks
OpenMP to sleep when idle unless the operator set ``OMP_WAIT_POLICY`` already.
"""

from __future__ import annotations

import os
import sys


def prefer_passive_openmp() -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE if unset and torch is not loaded yet; True if it took effect."""
    if "OMP_WAIT_POLICY" in os.environ:
        return False
    if "torch" in sys.modules:  # too late: the runtime has read its settings
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
