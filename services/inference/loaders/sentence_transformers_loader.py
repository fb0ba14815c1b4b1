"""sentence-transformers models: a folder (or an extracted archive / HF snapshot) or a hub name.

Text, plus images where the model's input module takes them (CLIP-style sentence-transformers
models). Tokenising is the library's own ``preprocess`` (it truncates to ``max_seq_length`` and
prepends the model's default prompt, as ``encode`` does); the forward pass runs the module chain and
returns ``sentence_embedding``. A model whose last module is ``Normalize`` returns unit vectors
whatever ``normalize`` says.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..model_spec import ModelSpec
from .base import IMAGE, TEXT, EncoderInfo
from .torch_encoder import TorchEncoder, to_numpy
from .torchvision_compat import ensure_torchvision_importable

log = logging.getLogger(__name__)


class SentenceTransformerEncoder(TorchEncoder):
    def __init__(self, model: Any, info: EncoderInfo, *, device: str, prompt: str | None,
                 dtype: Any = None) -> None:
        super().__init__(model, info, device)
        self._dtype = dtype or self._torch.float32
        self._prompt = prompt

    def prepare_texts(self, texts: list[str]) -> Any:
        with self._token_lock:
            if self._prompt:
                return self.model.preprocess(list(texts), prompt=self._prompt)
            return self.model.preprocess(list(texts))

    def forward_texts(self, prepared: Any) -> np.ndarray:
        torch = self._torch
        features = {}
        for key, value in prepared.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self._device, dtype=self._dtype) if torch.is_floating_point(value) \
                    else value.to(self._device)
            features[key] = value
        with torch.inference_mode():
            out = self.model(features)["sentence_embedding"]
        return to_numpy(out)

    def prepare_images(self, images: list[Image.Image]) -> Any:
        if IMAGE not in self.info.modalities:
            return super().prepare_images(images)
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        with self._token_lock:
            return self.model.preprocess(rgb)

    def forward_images(self, prepared: Any) -> np.ndarray:
        if IMAGE not in self.info.modalities:
            return super().forward_images(prepared)
        return self.forward_texts(prepared)


def load_sentence_transformer(spec: ModelSpec, choice: Any, artifact: Path | None, *, cache_dir: str | Path,
                              hf_token: str | None = None) -> SentenceTransformerEncoder:
    ensure_torchvision_importable()
    import torch
    from sentence_transformers import SentenceTransformer

    from . import hub_cache

    source = str(artifact) if artifact is not None else spec.name
    hub_kwargs: dict[str, Any] = {}
    if artifact is None:
        hub_kwargs = {"cache_folder": hub_cache(cache_dir), "token": hf_token}
    model = SentenceTransformer(source, device=str(choice.device), **hub_kwargs)
    dtype = getattr(choice, "torch_dtype", None) or torch.float32
    if dtype != torch.float32:
        model.to(dtype=dtype)
    model.eval()
    max_len = model.max_seq_length
    if spec.max_text_tokens:
        max_len = min(max_len, spec.max_text_tokens) if max_len else spec.max_text_tokens
        model.max_seq_length = max_len
    prompt = None
    if getattr(model, "default_prompt_name", None):
        prompt = (getattr(model, "prompts", None) or {}).get(model.default_prompt_name)
    modalities = (TEXT, IMAGE) if IMAGE in list(getattr(model, "modalities", None) or []) else (TEXT,)
    info = EncoderInfo(name=spec.name, type="sentence_transformers", dimensions=0, modalities=modalities,
                       device=str(choice.device), precision=choice.precision or "fp32",
                       normalize=spec.normalize, max_text_tokens=int(max_len or 512))
    encoder = SentenceTransformerEncoder(model, info, device=str(choice.device), prompt=prompt, dtype=dtype)
    dims = int(encoder.forward_texts(encoder.prepare_texts(["a"])).shape[1])
    encoder.info = EncoderInfo(**{**info.__dict__, "dimensions": dims})
    log.info("sentence-transformers model %s ready: %d dims, max %s tokens", source, dims, max_len)
    return encoder
