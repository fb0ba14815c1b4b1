"""Model loaders: turn a :class:`ModelSpec` into a loaded :class:`Encoder`.

``load_encoder`` fetches the artifact the spec names (local path, URL, S3 or a
Hugging Face repo, through :func:`services.inference.artifacts.resolve_artifact`)
and dispatches on ``spec.type`` to one loader module:

* ``open_clip``                          -> :mod:`.open_clip_loader`
* ``clip`` (also ``hf_clip``, ``siglip``)  -> :mod:`.hf_clip_loader` (transformers CLIP / SigLIP)
* ``sentence_transformers`` (also ``hf``)  -> :mod:`.sentence_transformers_loader`
* ``torchscript`` (OpenSearch TORCH_SCRIPT)  -> :mod:`.torchscript_loader`
* ``onnx`` (OpenSearch ONNX)                -> :mod:`.onnx_loader` (onnxruntime)
* ``sparse`` (SPARSE_ENCODING / SPARSE_TOKENIZE, SPLADE folders) -> :mod:`.sparse_loader`

OpenSearch's pretrained models first read the ``config.json`` published next to their zip
(:func:`services.inference.artifacts.apply_published_config`): the zip is verified against it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..model_spec import ModelSpecError
from .artifact_encoder import SparseSettings
from .base import IMAGE, TEXT, Encoder, EncoderInfo, SparseVector, UnsupportedModality, l2_normalize

if TYPE_CHECKING:
    from ..auth import ModelAuth
    from ..device import DeviceChoice
    from ..model_spec import ModelSpec

log = logging.getLogger(__name__)

__all__ = [
    "IMAGE", "TEXT", "LOADER_TYPES", "Encoder", "EncoderInfo", "SparseSettings", "SparseVector",
    "UnsupportedModality", "l2_normalize", "hub_cache", "load_encoder", "loader_kind",
]

# spec.type (lower-case) -> loader
LOADER_TYPES: dict[str, str] = {
    "open_clip": "open_clip",
    "openclip": "open_clip",
    "open-clip": "open_clip",
    "clip": "hf_clip",
    "hf_clip": "hf_clip",
    "siglip": "hf_clip",
    "sentence_transformers": "sentence_transformers",
    "sentence-transformers": "sentence_transformers",
    "hf": "sentence_transformers",
    "torchscript": "torchscript",
    "onnx": "onnx",
    "sparse": "sparse",
}


def loader_kind(model_type: str) -> str:
    """The loader for a ``type`` value; ModelSpecError naming ``type`` when none fits."""
    kind = LOADER_TYPES.get((model_type or "").strip().lower())
    if kind is None:
        known = "open_clip, clip, sentence_transformers (or hf), torchscript, onnx, sparse"
        raise ModelSpecError(f"type {model_type!r} is not supported; use one of {known}")
    return kind


def load_encoder(
    spec: ModelSpec,
    choice: DeviceChoice,
    *,
    auth: ModelAuth | None = None,
    cache_dir: str | Path,
    sparse: SparseSettings | None = None,
    runtime: str = "torch",
) -> Encoder:
    """Fetch the spec's artifact (cached in ``cache_dir``) and load it on ``choice.device``.

    ``sparse``: how a sparse model's weights become sparse vectors (prune ratio, most terms).
    ``runtime``: "onnx" runs a sentence-transformers text model on onnxruntime (:mod:`.st_onnx`); other
    types keep their own runtime (OpenSearch ONNX artifacts are onnxruntime's already), said in the log.
    Raises ModelSpecError (bad spec, e.g. ``dimensions`` not matching the model), ArtifactError (download or
    checksum), or the library's own error when the files are not a valid model.
    """
    kind = loader_kind(spec.type)
    if choice.precision == "fp16" and not str(choice.device).startswith("cuda"):
        from ..device import DeviceError

        raise DeviceError("PRECISION=fp16 is not supported on CPU: use bf16 or fp32 (see choose_device)")
    from ..artifacts import apply_published_config, resolve_artifact

    spec = apply_published_config(spec, cache_dir)
    artifact = resolve_artifact(spec, auth, cache_dir)
    log.info("loading %s model %r from %s on %s (%s)", kind, spec.name, artifact or "the library's hub",
             choice.device, choice.precision)
    hf_token = getattr(auth, "hf_token", None) if auth is not None else None
    if kind == "open_clip":
        from .open_clip_loader import load_open_clip

        encoder: Encoder = load_open_clip(spec, choice, artifact, cache_dir=cache_dir, hf_token=hf_token)
    elif kind == "hf_clip":
        from .hf_clip_loader import load_hf_clip

        encoder = load_hf_clip(spec, choice, artifact, cache_dir=cache_dir, hf_token=hf_token)
    elif kind == "torchscript":
        from .torchscript_loader import load_torchscript

        encoder = load_torchscript(spec, choice, artifact)
    elif kind == "onnx":
        from .onnx_loader import load_onnx

        encoder = load_onnx(spec, choice, artifact)
    elif kind == "sparse":
        from .sparse_loader import load_sparse

        encoder = load_sparse(spec, choice, artifact, settings=sparse or SparseSettings(), auth=auth,
                              cache_dir=cache_dir)
    else:
        from .sentence_transformers_loader import load_sentence_transformer

        encoder = load_sentence_transformer(spec, choice, artifact, cache_dir=cache_dir, hf_token=hf_token)
        if runtime == "onnx":
            from .st_onnx import onnx_runtime_encoder

            encoder = onnx_runtime_encoder(encoder, choice, cache_dir)
    if runtime == "onnx" and kind not in ("sentence_transformers", "onnx") and encoder.info.runtime != "onnx":
        log.warning("RUNTIME=onnx applies to sentence-transformers text models; %s (%s) runs on %s",
                    spec.name, kind, encoder.info.runtime)
    check_dimensions(spec, encoder)
    return encoder


def hub_cache(cache_dir: str | Path) -> str | None:
    """Where libraries cache hub downloads: ``<cache_dir>/hf`` (as resolve_artifact), unless the user set
    HF_HUB_CACHE / HF_HOME, in which case the library's own default (None) applies."""
    if os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME"):
        return None
    return str(Path(cache_dir).expanduser() / "hf")


def check_dimensions(spec: ModelSpec, encoder: Encoder) -> None:
    """Refuse a spec whose ``dimensions`` disagrees with what the model produces."""
    if spec.dimensions is not None and spec.dimensions != encoder.dimensions:
        encoder.close()
        raise ModelSpecError(
            f"dimensions is {spec.dimensions} but model {spec.name!r} produces "
            f"{encoder.dimensions}-dimensional vectors")
