"""OpenSearch artifacts: SHA-256 and size checked before loading (file://, loopback HTTP, the CLI), the
pretrained-name path through a loopback mirror (config.json first, then the zip verified against it),
and the layout's refusals (several model files, no tokenizer, wrong format, not TorchScript)."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from services.inference.artifacts import ArtifactError
from services.inference.device import choose_device
from services.inference.loaders import SparseSettings, load_encoder
from services.inference.model_spec import ModelSpecError, parse_model_properties
from services.inference.registry import artifacts_base_url, builtin_spec, opensearch_urls
from tests.opensearch_factories import (
    artifact,
    build_tiny_dense,
    build_tiny_sparse,
    register_body,
    serve_folder,
)
from tests.test_cli_inference import base_env, run_cli

CPU = choose_device(False)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return build_tiny_dense(tmp_path_factory.mktemp("tiny-onnx"), "onnx")


def reference_cls(bert: Path, texts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoTokenizer, BertModel

    model = BertModel.from_pretrained(str(bert)).eval()
    tok = AutoTokenizer.from_pretrained(str(bert))
    with torch.no_grad():
        out = model(**tok(texts, return_tensors="pt", padding=True, truncation=True)).last_hidden_state
    return out[:, 0].numpy()


def load(body: dict, cache: Path, **kwargs):
    return load_encoder(parse_model_properties(body), CPU, cache_dir=cache, **kwargs)


def test_register_body_over_loopback_http_checks_hash_and_size(tiny_onnx, tmp_path):
    art, bert = tiny_onnx
    config = {"model_type": "bert", "pooling_mode": "cls", "normalize_result": False,
              "embedding_dimension": 32}
    texts = ["a cat sits on the mat", "a dog"]
    with serve_folder(art.zip_path.parent) as base:
        url = f"{base}/{art.zip_path.name}"
        good = register_body(art, url=url, model_format="ONNX", model_config=config)
        encoder = load(good, tmp_path / "cache")
        np.testing.assert_allclose(encoder.encode_text(texts), reference_cls(bert, texts), atol=1e-4)

        bad_hash = {**good, "model_content_hash_value": "0" * 64}
        with pytest.raises(ArtifactError) as info:
            load(bad_hash, tmp_path / "cache2")
        assert "sha256 mismatch" in str(info.value) and art.zip_path.name in str(info.value)
        bad_size = {**good, "model_content_size_in_bytes": art.size + 1}
        with pytest.raises(ArtifactError) as info:
            load(bad_size, tmp_path / "cache3")
        assert "size mismatch" in str(info.value) and art.zip_path.name in str(info.value)
        assert "model_content_size_in_bytes" in str(info.value)
    # nothing refused was left in the caches to be used later
    for cache in ("cache2", "cache3"):
        assert not [p for p in (tmp_path / cache).rglob("*.zip")]


def test_file_url_checks_hash_and_size_before_loading(tiny_onnx, tmp_path):
    art, _ = tiny_onnx
    body = register_body(art, model_format="ONNX")
    assert load(body, tmp_path).dimensions == 32
    with pytest.raises(ArtifactError, match=f"sha256 mismatch for localpath .*{art.zip_path.name}"):
        load({**body, "model_content_hash_value": "f" * 64}, tmp_path)
    with pytest.raises(ArtifactError, match=f"size mismatch for localpath .*{art.zip_path.name}"):
        load({**body, "model_content_size_in_bytes": 12}, tmp_path)


def test_cli_refuses_to_start_on_a_wrong_hash(tiny_onnx, tmp_path):
    art, _ = tiny_onnx
    body = {**register_body(art, model_format="ONNX"), "model_content_hash_value": "a" * 64}
    result = run_cli(["--download-only"], base_env(tmp_path, MODEL_PROPERTIES=json.dumps(body)))
    assert result.returncode == 2, result.stderr
    assert "sha256 mismatch" in result.stderr and art.zip_path.name in result.stderr
    assert "Traceback" not in result.stderr


def _mirror(root: Path, name: str, version: str, fmt: str, zip_path: Path, config: dict) -> None:
    zip_url, config_url = opensearch_urls(name, version, fmt)
    for url, content in ((zip_url, None), (config_url, config)):
        rel = url[len(artifacts_base_url()) + 1:]
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            shutil.copyfile(zip_path, target)
        else:
            target.write_text(json.dumps(content), encoding="utf-8")


def test_pretrained_name_fetches_config_json_then_the_verified_zip(tmp_path, monkeypatch):
    name = "amazon/neural-sparse/opensearch-neural-sparse-encoding-doc-v1"
    art, folder = build_tiny_sparse(tmp_path / "build", "torchscript")
    config = {"name": name, "version": "1.0.1", "model_format": "TORCH_SCRIPT",
              "model_task_type": "SPARSE_ENCODING", "description": "tiny",
              "model_content_size_in_bytes": art.size, "model_content_hash_value": art.sha256}
    mirror = tmp_path / "mirror"
    _mirror(mirror, name, "1.0.1", "TORCH_SCRIPT", art.zip_path, config)
    with serve_folder(mirror) as base:
        monkeypatch.setenv("OPENSEARCH_ARTIFACTS_URL", base)
        encoder = load_encoder(builtin_spec(name), CPU, cache_dir=tmp_path / "cache", sparse=SparseSettings())
        assert encoder.info.kind == "sparse" and encoder.info.function_name == "SPARSE_ENCODING"
        assert encoder.info.name == name
        assert len(encoder.encode_text(["a cat sits on the mat"])[0]) > 0

        # the published hash is what the zip is checked against
        config["model_content_hash_value"] = "b" * 64
        _mirror(mirror, name, "1.0.1", "TORCH_SCRIPT", art.zip_path, config)
        with pytest.raises(ArtifactError) as info:
            load_encoder(builtin_spec(name), CPU, cache_dir=tmp_path / "cache-2")
        assert "sha256 mismatch" in str(info.value)
        zip_name = "neural-sparse_opensearch-neural-sparse-encoding-doc-v1-1.0.1-torch_script.zip"
        assert zip_name in str(info.value)

        # no config.json published at that version: a clear download error
        with pytest.raises(ArtifactError, match="HTTP 404"):
            spec = parse_model_properties({"name": name, "version": "9.9.9", "model_format": "TORCH_SCRIPT"})
            load_encoder(spec, CPU, cache_dir=tmp_path / "cache-3")

        # a published config for another kind of model is refused
        config.update(model_content_hash_value=art.sha256, model_task_type="TEXT_EMBEDDING")
        _mirror(mirror, name, "1.0.1", "TORCH_SCRIPT", art.zip_path, config)
        with pytest.raises(ArtifactError, match="describes a TEXT_EMBEDDING model"):
            load_encoder(builtin_spec(name), CPU, cache_dir=tmp_path / "cache-4")


def _zip_with(tmp_path: Path, art_zip: Path, *, drop: str | None = None,
              add: dict[str, bytes] | None = None) -> Path:
    out = tmp_path / f"variant-{len(list(tmp_path.glob('variant-*')))}.zip"
    with zipfile.ZipFile(art_zip) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            if item.filename != drop:
                dst.writestr(item, src.read(item))
        for name, data in (add or {}).items():
            dst.writestr(name, data)
    return out


def test_layout_refusals_name_the_file(tiny_onnx, tmp_path):
    art, _ = tiny_onnx

    def refused(zip_path: Path, fmt: str, *needles: str) -> None:
        body = register_body(artifact(zip_path), model_format=fmt)
        with pytest.raises(ModelSpecError) as info:
            load(body, tmp_path / "cache")
        for needle in needles:
            assert needle in str(info.value), str(info.value)

    refused(_zip_with(tmp_path, art.zip_path, add={"second.onnx": b"x"}), "ONNX", "several model files",
            "second.onnx", "tiny.onnx")
    refused(_zip_with(tmp_path, art.zip_path, drop="tokenizer.json"), "ONNX", "no tokenizer.json")
    refused(_zip_with(tmp_path, art.zip_path, drop="tiny.onnx"), "ONNX", "no model file", ".onnx")
    refused(art.zip_path, "TORCH_SCRIPT", "model_format is TORCH_SCRIPT", "tiny.onnx")
    broken = _zip_with(tmp_path, art.zip_path, drop="tiny.onnx", add={"model.pt": b"not a torchscript file"})
    refused(broken, "TORCH_SCRIPT", "model.pt is not a TorchScript model")
    broken_onnx = _zip_with(tmp_path, art.zip_path, drop="tiny.onnx", add={"model.onnx": b"garbage"})
    refused(broken_onnx, "ONNX", "model.onnx is not a loadable ONNX model")
    bad_tok = _zip_with(tmp_path, art.zip_path, drop="tokenizer.json", add={"tokenizer.json": b"{}"})
    refused(bad_tok, "ONNX", "tokenizer.json")


def test_embedding_dimension_must_match(tiny_onnx, tmp_path):
    art, _ = tiny_onnx
    body = register_body(art, model_format="ONNX", model_config={"embedding_dimension": 384})
    with pytest.raises(ModelSpecError, match="dimensions is 384 but model .* produces 32"):
        load(body, tmp_path)


def test_zip_layout_with_a_top_folder_is_found(tiny_onnx, tmp_path):
    art, _ = tiny_onnx
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(art.zip_path) as src, zipfile.ZipFile(nested, "w") as dst:
        for item in src.infolist():
            dst.writestr("model-1.0/" + item.filename, src.read(item))
    encoder = load(register_body(artifact(nested), model_format="ONNX"), tmp_path / "cache")
    assert encoder.dimensions == 32


def test_onnx_with_enable_cuda_falls_back_to_the_cpu_with_a_log_line(tiny_onnx, tmp_path, caplog):
    import logging

    import onnxruntime

    from services.inference.config import InferenceSettings
    from services.inference.device import DeviceError
    from services.inference.main import load_model, plan_model

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: no fallback to see")
    art, _ = tiny_onnx
    env = {"MODEL_PROPERTIES": json.dumps(register_body(art, model_format="ONNX")), "ENABLE_CUDA": "1",
           "MODEL_CACHE_DIR": str(tmp_path)}
    plan = plan_model(InferenceSettings.from_env(env))
    with caplog.at_level(logging.WARNING):
        encoder = load_model(plan)
    assert encoder.info.device == "cpu" and encoder.info.precision == "fp32"
    assert any("no CUDAExecutionProvider" in r.getMessage() for r in caplog.records)
    # a torch model still refuses ENABLE_CUDA=1 without a GPU, as before
    ts_env = {**env, "MODEL_PROPERTIES": json.dumps(register_body(art, model_format="TORCH_SCRIPT"))}
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(DeviceError):
            plan_model(InferenceSettings.from_env(ts_env))
