"""OpenCLIP models: an architecture plus a checkpoint, an ``hf-hub:`` name, or a pretrained tag.

Where the model comes from (first match wins):

* ``name`` is ``hf-hub:ORG/NAME`` or ``local-dir:/folder``: open_clip resolves config and weights itself.
* the artifact (``localpath`` / ``url`` / ``modelLocation``, fetched by ``resolve_artifact``) is a folder
  holding ``open_clip_config.json`` and a weights file: loaded as ``local-dir:`` (config, preprocessing
  and tokenizer from that folder).
* the artifact is a folder holding an architecture config ``*.json`` (``embed_dim``, ``vision_cfg``,
  ``text_cfg``) and a checkpoint: the config is registered with ``open_clip.add_model_config`` and the
  checkpoint loaded into it.
* the artifact is a checkpoint file: loaded into the architecture ``name``.
* no artifact: ``name`` with the open_clip pretrained tag ``spec.pretrained`` (the library downloads).

``name`` may also be a path to an architecture config ``.json`` (users bring their own architecture);
its file stem becomes the architecture name.
"""

from __future__ import annotations

import json
import logging
import threading
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
_ARCH_KEYS = ("embed_dim", "vision_cfg", "text_cfg")
_CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".npz")
_register_lock = threading.Lock()
_registered: dict[str, tuple[int, int]] = {}  # config path -> (mtime_ns, size) already added to open_clip


class OpenClipEncoder(TorchEncoder):
    """A loaded open_clip model; texts via its tokenizer, images via the resolved preprocessing."""

    def __init__(self, model: Any, tokenizer: Any, preprocess: ImagePreprocess, info: EncoderInfo,
                 device: str, input_dtype: Any) -> None:
        super().__init__(model, info, device)
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.transform = build_transform(preprocess)
        self._input_dtype = input_dtype

    def prepare_texts(self, texts: list[str]) -> Any:
        with self._token_lock:
            return self.tokenizer(list(texts))

    def forward_texts(self, prepared: Any) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            features = self.model.encode_text(prepared.to(self._device))
        return to_numpy(features)

    def prepare_images(self, images: list[Image.Image]) -> Any:
        return self._torch.stack([self.transform(image) for image in images])

    merges_prepared_images = True

    def merge_prepared_images(self, parts: list[Any]) -> Any:
        return self._torch.cat(parts)

    def forward_images(self, prepared: Any) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            features = self.model.encode_image(prepared.to(self._device, dtype=self._input_dtype))
        return to_numpy(features)


def load_open_clip(spec: ModelSpec, choice: Any, artifact: Path | None, *, cache_dir: str | Path,
                   hf_token: str | None = None) -> OpenClipEncoder:
    """Build the open_clip model, tokenizer and image transform the spec describes."""
    ensure_torchvision_importable()
    import open_clip
    import torch
    from open_clip.model import get_input_dtype, get_model_preprocess_cfg, get_model_tokenize_cfg

    from . import hub_cache

    if hf_token and spec.name.startswith("hf-hub:"):
        log.warning("open_clip downloads hf-hub: models with the HF_TOKEN environment variable, "
                    "not MODEL_AUTH")
    model_name, pretrained, base_pp = _model_source(spec, artifact, Path(cache_dir))
    precision = choice.precision or "fp32"
    # OpenAI's weights were trained with QuickGELU; open_clip only warns when the architecture lacks it
    tag_cfg: dict[str, Any] = {}
    if pretrained and not Path(pretrained).is_file():
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained) or {}
    try:
        model = open_clip.create_model(
            model_name, pretrained=pretrained, precision=precision, device=choice.device, jit=spec.jit,
            cache_dir=hub_cache(cache_dir), pretrained_text=False, require_pretrained=True,
            force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
        )
    except RuntimeError as exc:
        if "not found in built-ins" in str(exc):
            raise ModelSpecError(
                f"name {spec.name!r} is not an open_clip architecture (see open_clip.list_models()), an "
                "'hf-hub:ORG/NAME' name, or a path to an architecture config .json") from None
        if "Required pretrained weights" in str(exc):
            raise ModelSpecError(
                f"model {spec.name!r} has no weights to load: give localpath, url or modelLocation with a "
                "checkpoint, a pretrained tag, or an 'hf-hub:' name") from None
        raise
    model.eval()
    tokenize_cfg = get_model_tokenize_cfg(model)
    context_length = int(tokenize_cfg.get("context_length") or 77)
    tokenizer_name = spec.tokenizer or model_name
    if tokenizer_name.lower().endswith(".json"):  # the tokenizer of a bring-your-own architecture config
        tokenizer_name, _ = register_model_config(Path(tokenizer_name), Path(cache_dir), key="tokenizer")
    tokenizer = open_clip.get_tokenizer(tokenizer_name, context_length=context_length,
                                        cache_dir=hub_cache(cache_dir))
    context_length = int(getattr(tokenizer, "context_length", context_length) or context_length)

    model_pp = dict(get_model_preprocess_cfg(model))
    if base_pp:  # an open_clip_config.json's preprocess_cfg beside a bring-your-own architecture
        model_pp.update({k: v for k, v in base_pp.items() if k != "size"})
    preprocess = resolve_preprocess(model_pp, image_preprocessor=spec.image_preprocessor,
                                    mean=spec.mean, std=spec.std, size=spec.size)
    input_dtype = get_input_dtype(precision) or torch.float32
    info = EncoderInfo(name=spec.name, type="open_clip", dimensions=0, modalities=(TEXT, IMAGE),
                       device=str(choice.device), precision=precision, normalize=spec.normalize,
                       max_text_tokens=context_length)
    encoder = OpenClipEncoder(model, tokenizer, preprocess, info, str(choice.device), input_dtype)
    dims = int(encoder.forward_texts(encoder.prepare_texts(["a"])).shape[1])
    encoder.info = EncoderInfo(**{**info.__dict__, "dimensions": dims})
    log.info("open_clip model %s ready: %d dims, preprocessing %s", model_name, dims, preprocess)
    return encoder


def _model_source(spec: ModelSpec, artifact: Path | None,
                  cache_dir: Path) -> tuple[str, str | None, dict[str, Any] | None]:
    """(model_name for open_clip, pretrained tag or checkpoint path, preprocess cfg from a config file)."""
    name = spec.name
    base_pp: dict[str, Any] | None = None
    if name.startswith(("hf-hub:", "local-dir:")):
        if artifact is not None:
            log.warning("name %r carries its own weights; ignoring the artifact %s", name, artifact)
        return name, None, None
    if name.lower().endswith(".json"):
        name, base_pp = register_model_config(Path(name), cache_dir)
    if artifact is None:
        return name, spec.pretrained, base_pp
    artifact = Path(artifact)
    if artifact.is_dir():
        if (artifact / "open_clip_config.json").is_file():
            return f"local-dir:{artifact}", None, None
        configs = [p for p in sorted(artifact.rglob("*.json")) if _is_arch_config(p)]
        if configs:
            chosen = next((p for p in configs if p.stem == name), configs[0] if len(configs) == 1 else None)
            if chosen is None:
                raise ModelSpecError(f"name {name!r} matches none of the architecture configs in the "
                                     f"model folder: {[p.name for p in configs]}")
            name, base_pp = register_model_config(chosen, cache_dir)
        return name, str(_find_checkpoint(artifact)), base_pp
    return name, str(artifact), base_pp


def _is_arch_config(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if isinstance(data, dict) and isinstance(data.get("model_cfg"), dict):
        data = data["model_cfg"]
    return isinstance(data, dict) and all(k in data for k in _ARCH_KEYS)


def register_model_config(path: Path, cache_dir: Path, *,
                          key: str = "name") -> tuple[str, dict[str, Any] | None]:
    """Register a bring-your-own architecture config with open_clip: (architecture name, preprocess cfg).

    Accepts open_clip's architecture format (``embed_dim``, ``vision_cfg``, ``text_cfg`` at the top level) and
    its ``open_clip_config.json`` format (``model_cfg`` + ``preprocess_cfg``).
    """
    import open_clip

    if not path.is_file():
        raise ModelSpecError(f"{key} {str(path)!r} looks like a model config file but no such file exists")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelSpecError(f"{key} {str(path)!r}: the model config is not valid JSON ({exc})") from None
    preprocess_cfg = None
    if isinstance(data, dict) and isinstance(data.get("model_cfg"), dict):
        preprocess_cfg = data.get("preprocess_cfg") or None
        data = data["model_cfg"]
    if not isinstance(data, dict) or not all(k in data for k in _ARCH_KEYS):
        raise ModelSpecError(f"{key} {str(path)!r}: the model config needs the keys {', '.join(_ARCH_KEYS)}")
    arch = path.stem if path.stem != "open_clip_config" else path.parent.name
    target = path
    if preprocess_cfg is not None or arch != path.stem:  # open_clip registers flat configs named by file stem
        target = cache_dir / "open_clip_configs" / f"{arch}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data), encoding="utf-8")
    stat = target.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    with _register_lock:  # open_clip rescans every registered path on each add: add each version once
        if _registered.get(str(target.resolve())) != stamp or arch not in open_clip.list_models():
            open_clip.add_model_config(target)
            _registered[str(target.resolve())] = stamp
    return arch, preprocess_cfg


def _find_checkpoint(folder: Path) -> Path:
    found = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in _CHECKPOINT_SUFFIXES]
    if not found:
        raise ModelSpecError(f"no checkpoint ({', '.join(_CHECKPOINT_SUFFIXES)}) in the model "
                             f"folder {folder}")
    found.sort(key=lambda p: (p.suffix != ".safetensors", "open_clip" not in p.name, p.name))
    if len(found) > 1:
        log.warning("several checkpoints in %s; using %s", folder, found[0].name)
    return found[0]
