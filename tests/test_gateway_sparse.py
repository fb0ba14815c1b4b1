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
from gateway.storage.base import SparseVec
from services.inference.config import InferenceSettings
from services.inference.device import choose_device
from services.inference.loaders import load_encoder
from services.inference.main import start_servers
from services.inference.model_spec import parse_model_properties
from tests.gateway_support import InferenceUnderTest, make_store
from tests.opensearch_factories import build_tiny_sparse, build_tokenize_zip, register_body

IDF = {"cat": 2.0, "dog": 1.5, "mat": 0.5}


@pytest.fixture(scope="module")
def tokenize_zips(tmp_path_factory):
    """Two SPARSE_TOKENIZE models and a SPARSE_ENCODING masked LM (random weights), one tiny vocabulary."""
    root = tmp_path_factory.mktemp("tok")
    mlm, _ = build_tiny_sparse(root / "mlm", "torchscript")
    return {"idf": build_tokenize_zip(root / "idf", IDF), "plain": build_tokenize_zip(root / "plain", None),
            "mlm": mlm}


def sparse_encoder(zip_path, name: str, tmp_path):
    spec = parse_model_properties({"name": name, "type": "sparse", "localpath": str(zip_path)})
    return load_encoder(spec, choose_device(False), cache_dir=tmp_path / "cache")


def mlm_encoder(art, name: str, tmp_path):
    body = register_body(art, name=name, function_name="SPARSE_ENCODING")
    return load_encoder(parse_model_properties(body), choose_device(False), cache_dir=tmp_path / "cache")


@asynccontextmanager
async def models(tmp_path, tokenize_zips, *, extra: dict | None = None):
    """A gateway over an embedded store with MODELS clip (dense), tok-idf and tok (sparse)."""
    settings = InferenceSettings.from_env({}, model="x", host="127.0.0.1", grpc_port=0, http_port="off")
    servers = [await start_servers(sparse_encoder(tokenize_zips[k].zip_path, f"tok-{k}", tmp_path), settings)
               for k in ("idf", "plain")]
    servers.append(await start_servers(mlm_encoder(tokenize_zips["mlm"], "mlm", tmp_path), settings))
    try:
        async with InferenceUnderTest(dims=16) as dense:
            names = {"clip": dense.address, "tok-idf": servers[0].grpc_target, "tok": servers[1].grpc_target,
                     "mlm": servers[2].grpc_target, **(extra or {})}
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


DOCS = [
    {"id": "a", "properties": {"title": "a cat sits on the mat", "body": "the cat"}},
    {"id": "b", "properties": {"title": "a dog runs in the park", "body": "dog dog"}},
    {"id": "c", "properties": {"title": "the stock market crash hit the bank"}},
    {"id": "d", "properties": {"title": "a photo of a red car", "body": "cat photo"}},
    {"id": "e", "properties": {"title": "people walk by the river at night"}},
]


def test_import_and_search_with_a_sparse_vectorizer(tmp_path, tokenize_zips):
    from gateway.storage import fusion

    doc_model = mlm_encoder(tokenize_zips["mlm"], "ref-mlm", tmp_path)
    query_model = sparse_encoder(tokenize_zips["idf"].zip_path, "ref-idf", tmp_path)

    def weights(encoder, text: str) -> dict[int, float]:
        (v,) = encoder.encode_text([text])
        return dict(zip(v.indices.tolist(), v.values.tolist(), strict=True))

    async def run():
        async with models(tmp_path, tokenize_zips) as svc:
            await svc.create_collection({
                "name": "docs", "vectorizers": {"clip": {"model": "clip", "text_fields": ["title"]}},
                "sparse_vectorizers": {"sp": {"model": "mlm", "query_model": "tok-idf",
                                              "text_fields": ["title", "body"]}}})
            bad = {"id": "x", "properties": {"title": "fine", "body": {"not": "text"}}}
            result = await svc.import_objects("docs", {"objects": [*DOCS, bad]})
            assert result["ok"] == len(DOCS) and result["errors"] == 1
            assert result["results"][-1]["field"] == "objects.5.properties.body"
            stored = {d["id"]: (await svc.get_object("docs", d["id"], with_vectors=True)) for d in DOCS}
            records = svc.store.retrieve("docs", [s["uuid"] for s in stored.values()], with_vectors=True)
            by_id = {r.payload.get("_polyvec_id", r.id): r for r in records}
            # each field encoded alone, merged by the largest weight per token
            for d in DOCS:
                expected: dict[int, float] = {}
                for text in d["properties"].values():
                    for i, w in weights(doc_model, text).items():
                        expected[i] = max(expected.get(i, 0.0), w)
                sv = by_id[d["id"]].sparse["sp"]
                assert dict(zip(sv.indices, sv.values, strict=True)) == pytest.approx(expected, abs=1e-5)

            # neural_sparse: the query through the query model (IDF weights), scored by the dot product
            q = weights(query_model, "cat on the mat")
            out = await svc.search("docs", {"neural_sparse": {"query": "cat on the mat"}, "limit": 10})
            scores = {h["id"]: h["score"] for h in out["hits"]}
            dots = {}
            for d in DOCS:
                sv = by_id[d["id"]].sparse["sp"]
                dots[d["id"]] = sum(w * q.get(i, 0.0) for i, w in zip(sv.indices, sv.values, strict=True))
                assert scores.get(d["id"], 0.0) == pytest.approx(dots[d["id"]], rel=1e-5)
            assert out["hits"][0]["id"] == max(dots, key=dots.get) and len(out["hits"]) >= 3

            # hybrid of three lists equals the n-list formula over the three full lists
            query = "a cat on the mat"
            dense_vec = await svc._embed_query(await svc._load("docs"), "clip", "q", text=query)  # noqa: SLF001
            bm25_vec = (await svc._load("docs")).bm25_encoder.query(query)  # noqa: SLF001
            qw = sorted(weights(query_model, query).items())
            sp_vec = SparseVec([i for i, _ in qw], [w for _, w in qw])
            full = [svc.store.search_dense("docs", "clip", dense_vec, limit=50, with_payload=False),
                    svc.store.search_sparse("docs", "bm25", bm25_vec, limit=50, with_payload=False),
                    svc.store.search_sparse("docs", "sp", sp_vec, limit=50, with_payload=False)]
            for method in ("rrf", "relative_score"):
                w = {"clip": 0.5, "bm25": 0.2, "sp": 0.3}
                expected = fusion.fuse_lists(method, [(w[k], [fusion.Ranked(h.id, h.score) for h in hits])
                                                      for k, hits in zip(w, full, strict=True)])
                got = await svc.search("docs", {"hybrid": {"query": query, "weights": w, "fusion": method}})
                assert [h["score"] for h in got["hits"]] == pytest.approx([f.score for f in expected[:10]],
                                                                          rel=1e-5)
                want_ids = {obj_id(svc, f.id) for f in expected[:3]}
                assert {h["id"] for h in got["hits"][:3]} == want_ids

            # the alpha shorthand keeps meaning dense + BM25
            two = await svc.search("docs", {"hybrid": {"query": query, "alpha": 0.7}})
            pair = {"clip": 0.7, "bm25": 0.3}
            same = await svc.search("docs", {"hybrid": {"query": query, "weights": pair}})
            assert [h["id"] for h in two["hits"]] == [h["id"] for h in same["hits"]]
            return svc

    asyncio.run(run())


def obj_id(svc, point_id: str) -> str:
    rec = svc.store.retrieve("docs", [point_id])[0]
    return rec.payload.get("_polyvec_id", point_id)


def test_sparse_search_errors_name_the_field(tmp_path, tokenize_zips):
    async def run():
        async with models(tmp_path, tokenize_zips) as svc:
            await svc.create_collection({
                "name": "docs", "vectorizers": {"clip": {"model": "clip", "text_fields": ["title"]},
                                                "clip2": {"model": "clip", "text_fields": ["title"]}},
                "sparse_vectorizers": {"sp": {"model": "tok", "text_fields": ["title"]}}})
            clip = {"model": "clip", "text_fields": ["title"]}
            await svc.create_collection({"name": "plain", "vectorizers": {"clip": clip}})
            cases = [
                ("plain", {"neural_sparse": {"query": "cat"}}, "neural_sparse.vector",
                 "no sparse_vectorizers"),
                ("docs", {"neural_sparse": {"query": "cat", "vector": "nope"}}, "neural_sparse.vector",
                 "'nope'"),
                ("docs", {"neural_sparse": {"query": "cat"}, "vector": "clip"}, "vector", "dense vector"),
                ("docs", {"hybrid": {"query": "cat", "weights": {"clip": 1, "nope": 1}}},
                 "hybrid.weights.nope", "not a list"),
                ("docs", {"hybrid": {"query": "cat", "weights": {"clip": 1, "clip2": 1}}}, "hybrid.weights",
                 "at most one dense"),
                ("docs", {"hybrid": {"query": "cat", "weights": {"clip": 1, "sp": 1}}, "vector": "clip2"},
                 "vector", "'clip'"),
                ("docs", {"hybrid": {"query": "cat", "alpha": 0.3, "weights": {"clip": 1, "sp": 1}}},
                 "hybrid", "not both"),
                ("docs", {"hybrid": {"query": "cat", "weights": {"clip": 1}}}, "hybrid.weights",
                 "two or three"),
                ("docs", {"hybrid": {"query": "cat", "weights": {"clip": 0, "sp": 0}}}, "hybrid.weights",
                 "above 0"),
            ]
            out = []
            for coll, body, field, needle in cases:
                with pytest.raises(BadRequest) as info:
                    await svc.search(coll, body)
                out.append((info.value.field, info.value.detail, field, needle))
            return out

    for got_field, detail, field, needle in asyncio.run(run()):
        assert got_field == field and needle in detail, (got_field, detail, field, needle)


def test_put_reencodes_only_changed_fields_and_a_down_model_is_503(tmp_path, tokenize_zips):
    from gateway.errors import Unavailable

    async def run():
        async with models(tmp_path, tokenize_zips) as svc:
            await svc.create_collection({
                "name": "docs", "bm25": {"fields": []},
                "sparse_vectorizers": {"sp": {"model": "tok", "text_fields": ["title"]}}})
            server = svc.pool.get(svc.settings.models["tok"])
            await svc.import_objects("docs", {"objects": DOCS[:2]})
            before = server.calls
            await svc.put_object("docs", "a", {"properties": {"title": "a cat sits on the mat", "price": 3}})
            assert server.calls == before  # title unchanged: the sparse vector is kept
            await svc.put_object("docs", "a", {"properties": {"title": "a dog on the mat"}})
            assert server.calls == before + 1
            hits = (await svc.search("docs", {"neural_sparse": {"query": "dog"}}))["hits"]
            assert {h["id"] for h in hits} == {"a", "b"}
            return svc

    asyncio.run(run())

    async def down():
        async with models(tmp_path / "down", tokenize_zips, extra={"gone": "127.0.0.1:9"}) as svc:
            sp = {"model": "tok", "text_fields": ["t"]}
            await svc.create_collection({"name": "docs", "bm25": {"fields": []},
                                         "sparse_vectorizers": {"sp": sp}})
            svc.settings.models["tok"] = "127.0.0.1:9"  # the model's service goes away
            svc._definitions.clear()  # noqa: SLF001
            with pytest.raises(Unavailable) as info:
                await svc.import_objects("docs", {"objects": [{"properties": {"t": "cat"}}]})
            assert "model 'tok'" in str(info.value.service)
            with pytest.raises(Unavailable):
                await svc.search("docs", {"neural_sparse": {"query": "cat"}})

    asyncio.run(down())


def test_sparse_calls_fit_the_service_limits_and_an_oversize_text_fails_alone(tmp_path, tokenize_zips):
    """VectorizeSparse calls go through the same sizing as Vectorize: a sparse service that takes at most 4
    texts and 300 bytes per request still encodes a 30-object import, and a text larger than any request
    fails its own object (naming the field) or its query, without a call."""
    async def run():
        settings = InferenceSettings.from_env({}, model="x", host="127.0.0.1", grpc_port=0, http_port="off",
                                              max_items_per_request=4, max_request_bytes=300)
        server = await start_servers(sparse_encoder(tokenize_zips["plain"].zip_path, "tok-small", tmp_path),
                                     settings)
        svc = GatewayService(make_store("edge", tmp_path),
                             GatewaySettings.from_env({}, models={"tok": server.grpc_target}))
        try:
            await svc.create_collection({"name": "small", "sparse_vectorizers": {
                "sp": {"model": "tok", "text_fields": ["title"]}}})
            client = svc.pool.get(server.grpc_target)
            objects = [{"id": f"o{i}", "properties": {"title": f"the cat {i} on the mat"}} for i in range(30)]
            objects.append({"id": "huge", "properties": {"title": "cat " * 100}})
            calls = client.calls
            result = await svc.import_objects("small", {"objects": objects})
            assert result["ok"] == 30 and result["errors"] == 1
            assert result["results"][-1]["field"] == "objects.30.properties.title"
            assert "MAX_REQUEST_BYTES" in result["results"][-1]["error"]
            assert client.calls - calls == 8  # 30 texts in calls of at most 4 (not refused and halved)
            with pytest.raises(BadRequest) as info:
                await svc.search("small", {"neural_sparse": {"query": "cat " * 100}})
            assert info.value.field == "neural_sparse.query" and "MAX_REQUEST_BYTES" in info.value.detail
            hits = (await svc.search("small", {"neural_sparse": {"query": "cat"}, "limit": 50}))["hits"]
            assert len(hits) == 30
        finally:
            await svc.close()
            svc.store.close()
            await server.stop(grace=0)

    asyncio.run(run())
