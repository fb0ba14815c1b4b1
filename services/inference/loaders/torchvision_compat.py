"""Make ``import torchvision`` work when its compiled ops cannot load.

open_clip imports ``torchvision.transforms`` (pure Python). Where torchvision's
compiled extension cannot load next to the installed torch (a CUDA-built
torchvision wheel beside a CPU-only torch, as on our CPU build machines),
torchvision's import fails in ``_meta_registrations`` while registering fake
kernels for ``torchvision::nms`` / ``torchvision::qnms`` -- ops that were never
defined because the extension did not load. We never call those detection ops,
so when (and only when) the extension is absent we declare their schemas so the
import succeeds; transforms behave exactly as usual. Where torchvision loads
normally this module does nothing.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)
_done = False
_lib = None  # keep the Library object alive: dropping it undefines the ops


def ensure_torchvision_importable() -> None:
    global _done, _lib
    if _done or "torchvision" in sys.modules:
        _done = True
        return
    _done = True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import torch

    folder = Path(next(iter(spec.submodule_search_locations)))
    candidates = sorted(folder.glob("_C*.so")) + sorted(folder.glob("_C*.pyd"))
    if not candidates:
        return
    try:
        torch.ops.load_library(str(candidates[0]))
        return  # the extension loads: torchvision defines its own ops
    except OSError:
        pass
    log.info("torchvision's compiled ops do not load beside this torch build; "
             "declaring nms/qnms schemas so its transforms can be imported")
    _lib = torch.library.Library("torchvision", "DEF")
    _lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
