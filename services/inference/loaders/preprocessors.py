"""Image preprocessing presets (``imagePreprocessor``) and the torchvision transform they build.

The presets mirror the defaults open_clip itself attaches to its pretrained
weights (``open_clip/pretrained.py``: ``_pcfg``, ``_slpcfg``, ``_mccfg``,
``_apcfg``), so a checkpoint loaded from a plain file is preprocessed the same
way the library would preprocess it when loaded by its pretrained tag:

=============  ===========================  ==========================  ============  ===========
preset         mean                         std                         interpolation resize mode
=============  ===========================  ==========================  ============  ===========
OpenCLIP       CLIP (0.4815, 0.4578, ...)   CLIP (0.2686, 0.2613, ...)  bicubic       shortest
OpenAI         CLIP                         CLIP                        bicubic       shortest
SigLIP         (0.5, 0.5, 0.5)              (0.5, 0.5, 0.5)             bicubic       squash
MobileCLIP     (0, 0, 0)                    (1, 1, 1)                   bilinear      shortest
CLIPA          ImageNet (0.485, ...)        ImageNet (0.229, ...)       bilinear      squash
=============  ===========================  ==========================  ============  ===========

``shortest``: resize the shortest side to ``size`` then centre-crop a square;
``squash``: resize both sides to ``size`` ignoring the aspect ratio;
``longest``: resize the longest side to ``size`` and pad to a square.
Explicit ``mean`` / ``std`` / ``size`` in the model spec win over the preset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .torchvision_compat import ensure_torchvision_importable

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

INTERPOLATIONS = ("bicubic", "bilinear")
RESIZE_MODES = ("shortest", "squash", "longest")


class PreprocessError(ValueError):
    """A preprocessing setting is invalid; the message names the model-spec key."""


@dataclass(frozen=True)
class ImagePreprocess:
    """Everything needed to turn a PIL image into the model's input tensor."""

    size: int | tuple[int, int] = 224
    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0


# name (lower-case) -> settings; the keys are the documented ``imagePreprocessor`` values.
PRESETS: dict[str, dict[str, Any]] = {
    "openclip": dict(mean=OPENAI_MEAN, std=OPENAI_STD, interpolation="bicubic", resize_mode="shortest"),
    "openai": dict(mean=OPENAI_MEAN, std=OPENAI_STD, interpolation="bicubic", resize_mode="shortest"),
    "siglip": dict(mean=INCEPTION_MEAN, std=INCEPTION_STD, interpolation="bicubic", resize_mode="squash"),
    "mobileclip": dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear",
                       resize_mode="shortest"),
    "clipa": dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear", resize_mode="squash"),
}
PRESET_NAMES = ("OpenCLIP", "OpenAI", "SigLIP", "MobileCLIP", "CLIPA")


def preset(name: str) -> dict[str, Any]:
    """A named preset's settings (case-insensitive); unknown: PreprocessError naming imagePreprocessor."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in PRESETS:
        raise PreprocessError(
            f"imagePreprocessor {name!r} is not one of {', '.join(PRESET_NAMES)}")
    return dict(PRESETS[key])


def resolve_preprocess(
    base: Mapping[str, Any] | ImagePreprocess | None = None,
    *,
    image_preprocessor: str | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    size: int | None = None,
) -> ImagePreprocess:
    """Layer the settings: the model's own defaults (``base``), then the preset, then explicit overrides."""
    if isinstance(base, ImagePreprocess):
        cfg = base
    else:
        known = {k: v for k, v in dict(base or {}).items() if k in ImagePreprocess.__dataclass_fields__}
        cfg = ImagePreprocess(**known)
    if image_preprocessor:
        cfg = replace(cfg, **preset(image_preprocessor))
    if mean is not None:
        cfg = replace(cfg, mean=_triple("mean", mean))
    if std is not None:
        std = _triple("std", std)
        if any(s <= 0 for s in std):
            raise PreprocessError(f"std values must be > 0, got {list(std)}")
        cfg = replace(cfg, std=std)
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise PreprocessError(f"size must be a positive integer, got {size!r}")
        cfg = replace(cfg, size=size)
    if cfg.interpolation not in INTERPOLATIONS:
        raise PreprocessError(f"interpolation {cfg.interpolation!r} is not one of {INTERPOLATIONS}")
    if cfg.resize_mode not in RESIZE_MODES:
        raise PreprocessError(f"resize mode {cfg.resize_mode!r} is not one of {RESIZE_MODES}")
    return replace(cfg, mean=tuple(float(m) for m in cfg.mean), std=tuple(float(s) for s in cfg.std))


def _triple(key: str, values: Any) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise PreprocessError(f"{key} must be a list of 3 numbers, got {values!r}") from None
    if len(out) == 1:
        out = out * 3
    if len(out) != 3:
        raise PreprocessError(f"{key} must be a list of 3 numbers (one per RGB channel), got {list(out)}")
    return out


def _square(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def build_transform(cfg: ImagePreprocess) -> Callable[[Any], Any]:
    """A torchvision transform PIL image -> float tensor (3, H, W): the steps open_clip uses at inference."""
    ensure_torchvision_importable()
    from torchvision import transforms as T
    from torchvision.transforms import InterpolationMode

    mode = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}[cfg.interpolation]
    height, width = _square(cfg.size)
    steps: list[Any] = [_to_rgb]
    if cfg.resize_mode == "squash":
        steps.append(T.Resize((height, width), interpolation=mode))
    elif cfg.resize_mode == "shortest":
        if height == width:
            steps.append(T.Resize(height, interpolation=mode))
        else:
            from open_clip.transform import ResizeKeepRatio

            # open_clip resizes non-square targets bicubic whatever the interpolation; match the library
            steps.append(ResizeKeepRatio((height, width)))
        steps.append(T.CenterCrop((height, width)))
    else:  # longest: fit inside the square, pad the rest
        from open_clip.transform import CenterCropOrPad, ResizeKeepRatio

        steps.append(ResizeKeepRatio((height, width), interpolation=mode, longest=1))
        steps.append(CenterCropOrPad((height, width), fill=cfg.fill_color))
    steps += [T.ToTensor(), T.Normalize(mean=cfg.mean, std=cfg.std)]
    return T.Compose(steps)


def _to_rgb(image: Any) -> Any:
    return image if getattr(image, "mode", "RGB") == "RGB" else image.convert("RGB")
