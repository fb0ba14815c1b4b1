"""Sparse vectorizers in the gateway, against real inference servers on loopback: a dense test model
(tests.gateway_support) and real sparse models (SPARSE_TOKENIZE over a tiny WordPiece vocabulary, built
here). Definitions, the Meta checks at creation, and the stored schema."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import pytest

from gateway.config import GatewaySettings
from gateway.definitions import parse_definition
from gateway.errors import BadRequest
from gateway.service import GatewayService
from services.inference.config import InferenceSettings
from services.inference.device import choose_device
from services.inference.loaders import load_encoder
from services.inference.main import start_servers
from services.inference.model_spec import parse_model_properties
from tests.gateway_support import InferenceUnderTest, make_store
from tests.opensearch_factories import build_tokenize_zip

IDF = {"cat": 2.0, "dog": 1.5, "mat": 0.5}


@pytest.fixture(scope="module")
def tokenize_zips(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    return {"idf": build_tokenize_zip(root / "idf", IDF), "plain": build_tokenize_zip(root / "plain", None)}


def sparse_encoder(zip_path, name: str, tmp_path):
    spec = parse_model_properties({"name": name, "type": "sparse", "localpath": str(zip_path)})
    return load_encoder(spec, choose_device(False), cache_dir=tmp_path / "cache")


@asynccontextmanager
async def models(tmp_path, tokenize_zips, *, extra: dict | None = None):
    """A gateway over an embedded store with MODELS clip (dense), tok-idf and tok (sparse)."""
    settings = InferenceSettings.from_env({}, model="x", host="127.0.0.1", grpc_port=0, http_port="off")
    servers = [await start_servers(sparse_encoder(tokenize_zips[k].zip_path, f"tok-{k}", tmp_path), settings)
               for k in ("idf", "plain")]
    try:
        async with InferenceUnderTest(dims=16) as dense:
            names = {"clip": dense.address, "tok-idf": servers[0].grpc_target, "tok": servers[1].grpc_target,
                     **(extra or {})}
            svc = GatewayService(make_store("edge", tmp_path), GatewaySettings.from_env({}, models=names))
            try:
                yield svc
            finally:
                await svc.close()
                svc.store.close()
    finally:
        for server in servers:
            await server.stop(grace=0)


def refused(definition: dict, field: str, needle: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_definition(definition)
    assert info.value.field == field and needle in info.value.detail, (info.value.field, info.value.detail)


def test_definition_rules():
    ok = parse_definition({"name": "c", "vectorizers": {"d": {"model": "clip", "text_fields": ["title"]}},
                           "sparse_vectorizers": {"s": {"model": "tok", "query_model": "tok-idf",
                                                        "text_fields": ["body"]}}})
    assert ok.sparse_vectorizers["s"].has_query_model and ok.default_sparse_vector() == "s"
    assert ok.bm25 is not None and ok.bm25.fields == ["title", "body"]  # default: every text field
    assert {"title", "body"} <= ok.vectorized_fields()
    only_sparse = parse_definition({"name": "c", "sparse_vectorizers": {"s": {"inference_url": "h:1",
                                                                              "text_fields": ["t"]}},
                                    "bm25": {"fields": []}})
    assert only_sparse.sparse_vectorizers["s"].inference_url == "h:1"
    refused({"name": "c", "sparse_vectorizers": {"s": {"text_fields": ["t"]}}}, "sparse_vectorizers.s.model",
            "give model or inference_url")
    both = {"model": "m", "inference_url": "h:1", "text_fields": ["t"]}
    refused({"name": "c", "sparse_vectorizers": {"s": both}}, "sparse_vectorizers.s.inference_url",
            "not both")
    refused({"name": "c", "sparse_vectorizers": {"s": {"model": "m", "text_fields": []}}},
            "sparse_vectorizers.s.text_fields", "at least 1")
    refused({"name": "c", "sparse_vectorizers": {"s": {"model": "m", "text_fields": ["t"], "query_model": "q",
                                                       "query_inference_url": "h:2"}}},
            "sparse_vectorizers.s.query_inference_url", "query_model or query_inference_url")
    refused({"name": "c", "sparse_vectorizers": {"bm25": {"model": "m", "text_fields": ["t"]}}},
            "sparse_vectorizers", "reserved")
    refused({"name": "c", "vectorizers": {"v": {"model": "m", "text_fields": ["t"]}},
             "sparse_vectorizers": {"v": {"model": "m", "text_fields": ["t"]}}},
            "sparse_vectorizers.v", "distinct")
    refused({"name": "c", "sparse_vectorizers": {"s": {"model": "m", "text_fields": ["t"], "weights": {}}}},
            "sparse_vectorizers.s.weights", "unknown field")
    refused({"name": "c", "sparse_vectorizers": {"s": {"inference_url": "nohost", "text_fields": ["t"]}}},
            "sparse_vectorizers.s.inference_url", "host:port")


def test_create_checks_the_models_meta(tmp_path, tokenize_zips):
    async def run():
        async with models(tmp_path, tokenize_zips) as svc:
            out = await svc.create_collection({
                "name": "docs", "vectorizers": {"clip": {"model": "clip", "text_fields": ["title"]}},
                "sparse_vectorizers": {"sp": {"model": "tok", "query_model": "tok-idf",
                                              "text_fields": ["title"]}}})
            sp = out["sparse_vectorizers"]["sp"]
            assert sp["vocab_size"] > 50 and sp["model_name"] == "tok-plain"
            assert sp["query_model_name"] == "tok-idf"
            assert sp["function_name"] == sp["query_function_name"] == "SPARSE_TOKENIZE"
            again = await svc.get_collection("docs")
            assert again["sparse_vectorizers"]["sp"]["vocab_size"] == sp["vocab_size"]
            errors = []
            for body in (
                {"name": "a", "sparse_vectorizers": {"sp": {"model": "clip", "text_fields": ["t"]}}},
                {"name": "b", "vectorizers": {"v": {"model": "tok", "text_fields": ["t"]}}},
                {"name": "c", "sparse_vectorizers": {"sp": {"model": "tok", "query_model": "clip",
                                                            "text_fields": ["t"]}}},
                {"name": "d", "sparse_vectorizers": {"sp": {"model": "nope", "text_fields": ["t"]}}},
                {"name": "e", "sparse_vectorizers": {"sp": {"model": "tok", "query_model": "nope",
                                                            "text_fields": ["t"]}}},
            ):
                with pytest.raises(BadRequest) as info:
                    await svc.create_collection(body)
                errors.append((info.value.field, info.value.detail))
            return errors

    errors = asyncio.run(run())
    assert errors[0][0] == "sparse_vectorizers.sp.model" and "dense model" in errors[0][1]
    assert errors[1][0] == "vectorizers.v.model" and "sparse model" in errors[1][1]
    assert errors[1][1].endswith("declare it under sparse_vectorizers")
    assert errors[2][0] == "sparse_vectorizers.sp.query_model" and "dense model" in errors[2][1]
    assert errors[3][0] == "sparse_vectorizers.sp.model" and "unknown model 'nope'" in errors[3][1]
    assert errors[4][0] == "sparse_vectorizers.sp.query_model" and "unknown model 'nope'" in errors[4][1]
