"""Hugging Face CLIP and SigLIP models through transformers (``AutoModel`` + ``AutoProcessor``).

The model comes from the artifact folder (``localpath`` / ``url`` / ``modelLocation`` archives and HF
snapshots, fetched by ``resolve_artifact``) or, with no location, from the hub name in ``name``.
Texts are tokenised the way each family expects: CLIP pads to the longest text in the batch, SigLIP
pads to ``max_length`` (it was trained that way and pools the last token); both truncate to the
model's text positions. Images go through the model's own image processor unless the spec asks for
an ``imagePreprocessor`` preset or ``mean``/``std``/``size`` overrides, in which case the torchvision
transform from :mod:`.preprocessors` is built on top of the processor's own settings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..model_spec import ModelSpec, ModelSpecError
from .base import IMAGE, TEXT, EncoderInfo
from .preprocessors import ImagePreprocess, build_transform, resolve_preprocess
from .torch_encoder import TorchEncoder, to_numpy
from .torchvision_compat import ensure_torchvision_importable

log = logging.getLogger(__name__)
_PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}


class HfClipEncoder(TorchEncoder):
    """A transformers dual encoder with ``get_text_features`` / ``get_image_features``."""

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, info: EncoderInfo, *,
                 padding: bool | str, max_length: int, device: str, dtype: Any,
                 transform_cfg: ImagePreprocess | None = None) -> None:
        super().__init__(model, info, device)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.transform_cfg = transform_cfg
        self._transform = build_transform(transform_cfg) if transform_cfg is not None else None
        self._padding = padding
        self._max_length = max_length
        self._dtype = dtype

    def prepare_texts(self, texts: list[str]) -> Any:
        with self._token_lock:
            return dict(self.tokenizer(list(texts), padding=self._padding, truncation=True,
                                       max_length=self._max_length, return_tensors="pt"))

    def forward_texts(self, prepared: Any) -> np.ndarray:
        with self._torch.inference_mode():
            out = self.model.get_text_features(**{k: v.to(self._device) for k, v in prepared.items()})
        return _features(out)

    def prepare_images(self, images: list[Image.Image]) -> Any:
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        if self._transform is not None:
            return {"pixel_values": self._torch.stack([self._transform(im) for im in rgb])}
        return dict(self.image_processor(images=rgb, return_tensors="pt"))

    merges_prepared_images = True

    def merge_prepared_images(self, parts: list[Any]) -> Any:
        return {key: self._torch.cat([part[key] for part in parts]) for key in parts[0]}

    def forward_images(self, prepared: Any) -> np.ndarray:
        torch = self._torch
        device, dtype = self._device, self._dtype
        inputs = {k: v.to(device, dtype=dtype) if torch.is_floating_point(v) else v.to(device)
                  for k, v in prepared.items()}
        with torch.inference_mode():
            out = self.model.get_image_features(**inputs)
        return _features(out)


def _features(out: Any) -> np.ndarray:
    """transformers < 5 returns the projected features; 5.x a ModelOutput whose pooler_output holds them."""
    tensor = out if hasattr(out, "detach") else getattr(out, "pooler_output", None)
    if tensor is None:
        tensor = out[0] if isinstance(out, tuple) else out["pooler_output"]
    return to_numpy(tensor)


def load_hf_clip(spec: ModelSpec, choice: Any, artifact: Path | None, *, cache_dir: str | Path,
                 hf_token: str | None = None) -> HfClipEncoder:
    ensure_torchvision_importable()
    import torch
    from transformers import AutoModel, AutoProcessor, AutoTokenizer

    from . import hub_cache

    source = str(artifact) if artifact is not None else spec.name
    hub_kwargs: dict[str, Any] = {}
    if artifact is None:
        hub_kwargs = {"cache_dir": hub_cache(cache_dir), "token": hf_token}
    dtype = getattr(choice, "torch_dtype", None) or torch.float32
    model = AutoModel.from_pretrained(source, dtype=dtype, **hub_kwargs)
    if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
        raise ModelSpecError(
            f"type {spec.type!r} needs a CLIP or SigLIP model with text and image towers; {spec.name!r} is a "
            f"{model.config.model_type!r} model (use type sentence_transformers for text-only models)")
    model.to(choice.device).eval()
    processor = AutoProcessor.from_pretrained(source, **hub_kwargs)
    tokenizer = (AutoTokenizer.from_pretrained(spec.tokenizer, cache_dir=hub_cache(cache_dir), token=hf_token)
                 if spec.tokenizer else processor.tokenizer)
    image_processor = processor.image_processor

    model_type = str(model.config.model_type)
    siglip = model_type.startswith("siglip")
    text_positions = int(getattr(model.config.text_config, "max_position_embeddings", 0) or 77)
    max_length = min(text_positions, spec.max_text_tokens or text_positions)
    transform_cfg = None
    if spec.image_preprocessor or spec.mean is not None or spec.std is not None or spec.size is not None:
        transform_cfg = resolve_preprocess(_processor_settings(image_processor, siglip),
                                           image_preprocessor=spec.image_preprocessor,
                                           mean=spec.mean, std=spec.std, size=spec.size)
    info = EncoderInfo(name=spec.name, type="clip", dimensions=0, modalities=(TEXT, IMAGE),
                       device=str(choice.device), precision=choice.precision or "fp32",
                       normalize=spec.normalize, max_text_tokens=max_length)
    encoder = HfClipEncoder(model, tokenizer, image_processor, info,
                            padding="max_length" if siglip else True, max_length=max_length,
                            device=str(choice.device), dtype=dtype, transform_cfg=transform_cfg)
    dims = int(encoder.forward_texts(encoder.prepare_texts(["a"])).shape[1])
    encoder.info = EncoderInfo(**{**info.__dict__, "dimensions": dims})
    log.info("transformers %s model %s ready: %d dims", model_type, source, dims)
    return encoder


def _processor_settings(image_processor: Any, siglip: bool) -> dict[str, Any]:
    """The image processor's own size/mean/std/resampling as ImagePreprocess settings."""
    crop = getattr(image_processor, "crop_size", None) or {}
    size = getattr(image_processor, "size", None) or {}
    if getattr(image_processor, "do_center_crop", False) and crop:
        side = crop.get("height") or crop.get("shortest_edge")
        resize_mode = "shortest"
    else:
        side = size.get("height") or size.get("shortest_edge")
        resize_mode = "squash" if siglip or "height" in size else "shortest"
    resample = getattr(image_processor, "resample", 3)
    return {
        "size": int(side or 224),
        "mean": tuple(getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)),
        "std": tuple(getattr(image_processor, "image_std", None) or (0.5, 0.5, 0.5)),
        "interpolation": _PIL_RESAMPLE.get(int(getattr(resample, "value", resample) or 3), "bicubic"),
        "resize_mode": resize_mode,
    }
