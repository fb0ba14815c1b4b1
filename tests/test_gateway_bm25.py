"""BM25 through the gateway: Qdrant's analyzer by default, per-collection analyzer settings, and collections
written by the old code path (legacy tokenizer) that keep answering until they are rebuilt."""

from __future__ import annotations

import asyncio

import pytest

from gateway.bm25 import legacy_term_index, legacy_tokenize
from gateway.config import GatewaySettings
from gateway.errors import BadRequest
from gateway.service import GatewayService
from gateway.service.vectors import object_uuid
from gateway.storage.base import CollectionSchema, PointRecord, SparseVec
from tests.gateway_support import make_store

STORES = ["qdrant", "edge"]

def shoe(key: str, title: str, description: str) -> dict:
    return {"id": key, "properties": {"title": title, "description": description}}


SHOES = [
    shoe("sku-1", "Red running shoes", "Lightweight trainers for road running"),
    shoe("sku-2", "Leather office shoes", "Black oxford shoes for work"),
    shoe("sku-3", "Trail backpack", "20 litre pack for hiking"),
    shoe("sku-4", "Jogging bottoms", "Soft cotton, ideal for a jog"),
]


def run(coro):
    return asyncio.run(coro)


def ids(result):
    return [h["id"] for h in result["hits"]]


def service(kind, tmp_path, **settings) -> GatewayService:
    return GatewayService(make_store(kind, tmp_path), GatewaySettings.from_env({}, **settings))


async def closing(svc: GatewayService):
    await svc.close()
    svc.store.close()


@pytest.mark.parametrize("kind", STORES)
def test_default_analyzer_stems_and_ignores_stopwords(kind, tmp_path):
    async def scenario():
        svc = service(kind, tmp_path)
        try:
            created = await svc.create_collection({"name": "shoes",
                                                   "bm25": {"fields": ["title", "description"]}})
            assert created["bm25"]["analyzer"] == "qdrant" and created["bm25"]["language"] == "english"
            assert (await svc.import_objects("shoes", {"objects": SHOES}))["errors"] == 0
            # "for" is in three objects, but a stopword: only jogging -> jog (stemmed) matches
            assert ids(await svc.search("shoes", {"bm25": {"query": "sneakers for jogging"}})) == ["sku-4"]
            assert ids(await svc.search("shoes", {"bm25": {"query": "for"}})) == []
            got = ids(await svc.search("shoes", {"bm25": {"query": "run"}}))
            assert got == ["sku-1"]  # running / running: stemmed to run
            # a per-collection analyzer: no stemming, no stopwords
            await svc.create_collection({"name": "plain", "bm25": {"fields": ["title", "description"],
                                                                   "stemmer": False, "stopwords": []}})
            await svc.import_objects("plain", {"objects": SHOES})
            assert set(ids(await svc.search("plain", {"bm25": {"query": "for"}}))) == {
                "sku-1", "sku-2", "sku-3", "sku-4"}
            assert ids(await svc.search("plain", {"bm25": {"query": "run"}})) == []
            # German with ASCII folding and custom stopwords added to the language's
            await svc.create_collection({"name": "de", "bm25": {
                "fields": ["t"], "language": "german", "ascii_folding": True,
                "stopwords": {"languages": ["german"], "words": ["billig"]}}})
            await svc.import_objects("de", {"objects": [
                {"id": "a", "properties": {"t": "Große Häuser und billige Gärten"}},
                {"id": "b", "properties": {"t": "Ein billig Haus"}}]})
            assert ids(await svc.search("de", {"bm25": {"query": "grosse"}})) == ["a"]
            assert ids(await svc.search("de", {"bm25": {"query": "billig und"}})) == []
            assert set(ids(await svc.search("de", {"bm25": {"query": "haus"}}))) == {"a", "b"}
        finally:
            await closing(svc)

    run(scenario())


def test_analyzer_settings_are_checked(tmp_path):
    async def scenario():
        svc = service("qdrant", tmp_path)
        try:
            cases = [
                ({"fields": ["t"], "language": "klingon"}, "bm25.language"),
                ({"fields": ["t"], "stemmer": "klingon"}, "bm25.stemmer"),
                ({"fields": ["t"], "stemmer": 1.5}, "bm25.stemmer"),
                ({"fields": ["t"], "stopwords": {"languages": ["elvish"]}}, "bm25.stopwords"),
                ({"fields": ["t"], "stopwords": [""]}, "bm25.stopwords"),
                ({"fields": ["t"], "tokenizer": "regex"}, "bm25.tokenizer"),
                ({"fields": ["t"], "analyzer": "legacy", "language": "english"}, "bm25.language"),
                ({"fields": ["t"], "analyzer": "snowball"}, "bm25.analyzer"),
                ({"fields": ["t"], "avg_len": 0}, "bm25.avg_len"),
            ]
            for bm25, field in cases:
                with pytest.raises(BadRequest) as info:
                    await svc.create_collection({"name": "c", "bm25": bm25})
                assert info.value.field == field, bm25
            assert await svc.list_collections() == []
        finally:
            await closing(svc)

    run(scenario())


def old_code_path_collection(store, name: str, docs: dict[str, str]) -> None:
    """A collection exactly as the gateway wrote it before analyzers existed: its definition record has no
    ``analyzer`` (and ``stopwords: []``), its BM25 vectors come from the blake2b-hashed tokenizer."""
    store.create_collection(CollectionSchema(name=name, dense={}, sparse=["bm25"]))
    store.save_definition(name, {
        "name": name,
        "definition": {"name": name, "vectorizers": {}, "distance": "cosine", "shard_number": None,
                       "replication_factor": None, "hnsw_m": None, "hnsw_ef_construct": None,
                       "bm25": {"fields": ["text"], "k1": 1.2, "b": 0.75, "avg_len": None, "stopwords": []}},
        "vectors": {},
        "created_at": 1_700_000_000.0,
    })
    points = []
    for key, text in docs.items():
        tokens = legacy_tokenize(text)
        norm = 1.2 * (0.25 + 0.75 * len(tokens) / 256.0)
        tf = {t: tokens.count(t) for t in set(tokens)}
        weights = {legacy_term_index(t): n * 2.2 / (n + norm) for t, n in tf.items()}
        indices = sorted(weights)
        points.append(PointRecord(object_uuid(key), {"text": text, "_polyvec_id": key},
                                  sparse={"bm25": SparseVec(indices, [weights[i] for i in indices])}))
    store.upsert(name, points)


@pytest.mark.parametrize("kind", STORES)
def test_collection_from_the_old_code_path_keeps_working(kind, tmp_path):
    async def scenario():
        svc = service(kind, tmp_path)
        try:
            old_code_path_collection(svc.store, "old", {"a": "running shoes for the road",
                                                        "b": "shoes for work", "c": "a runner's guide"})
            got = await svc.get_collection("old")
            assert got["bm25"]["analyzer"] == "legacy" and "language" not in got["bm25"]
            # queries are analysed like the stored documents: no stemming, no stopwords
            assert ids(await svc.search("old", {"bm25": {"query": "running"}})) == ["a"]
            assert set(ids(await svc.search("old", {"bm25": {"query": "for"}}))) == {"a", "b"}
            # new objects are written with the collection's own (legacy) analyzer
            await svc.import_objects("old", {"objects": [{"id": "d", "properties": {"text": "run for fun"}}]})
            assert set(ids(await svc.search("old", {"bm25": {"query": "for"}}))) == {"a", "b", "d"}
            assert ids(await svc.search("old", {"bm25": {"query": "run"}})) == ["d"]
            listed = await svc.list_collections()
            assert listed[0]["bm25"]["analyzer"] == "legacy"
        finally:
            await closing(svc)

    run(scenario())


def test_definition_cache_keeps_analyzer(tmp_path):
    """A cached definition and a freshly read one build the same encoder (no drift between gateways)."""
    async def scenario():
        svc = service("edge", tmp_path, definition_cache_s=60)
        try:
            await svc.create_collection({"name": "c", "bm25": {"fields": ["t"], "language": "french"}})
            first = await svc._load("c")
            svc._definitions.clear()
            second = await svc._load("c")
            text = "Les chaussures de course rouges"
            assert first.bm25_encoder.document(text) == second.bm25_encoder.document(text)
            assert second.definition.bm25.language == "french"
        finally:
            await closing(svc)

    run(scenario())


def test_grpc_carries_analyzer_settings(tmp_path):
    import grpc
    from google.protobuf import struct_pb2

    from gateway.grpc_api import start_grpc_server
    from protos import gateway_pb2 as pb
    from protos import gateway_pb2_grpc

    def value(v) -> struct_pb2.Value:
        s = struct_pb2.Struct()
        s.update({"v": v})
        return s.fields["v"]

    async def scenario():
        svc = service("edge", tmp_path)
        server, port = await start_grpc_server(svc, "127.0.0.1", 0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                created = await stub.CreateCollection(pb.CollectionDefinition(name="g", bm25=pb.Bm25(
                    fields=["t"], language="german", stemmer=value(False),
                    stopwords=value({"languages": ["german"], "words": ["billig"]}), ascii_folding=True)))
                bm = created.definition.bm25
                assert bm.analyzer == "qdrant" and bm.language == "german" and bm.ascii_folding
                assert bm.stemmer.bool_value is False and bm.stemmer.HasField("bool_value")
                assert list(bm.stopwords.struct_value["words"]) == ["billig"]
                await stub.ImportObjects(pb.ImportObjectsRequest(collection="g", objects=[
                    pb.ObjectIn(id="a", properties=struct_pb2.Struct(fields={"t": value("Große Häuser")}))]))
                hits = await stub.Search(pb.SearchRequest(collection="g", bm25=pb.Bm25Query(query="grosse")))
                assert [h.id for h in hits.hits] == ["a"]
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.CreateCollection(pb.CollectionDefinition(name="h", bm25=pb.Bm25(
                        fields=["t"], stemmer=value("klingon"))))
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert dict(info.value.trailing_metadata())["field"] == "bm25.stemmer"
        finally:
            await server.stop(None)
            await closing(svc)

    run(scenario())


def fidelity_corpus() -> tuple[list[str], list[str]]:
    from tests.test_bm25_fidelity import QUERIES, catalogue

    return catalogue()[:160] + ["the and of", "For the"], QUERIES  # two documents of stopwords only


@pytest.mark.parametrize("kind", STORES)
def test_reindex_measures_avg_len_and_then_scores_exactly_like_okapi_bm25(kind, tmp_path):
    import numpy as np

    from gateway.bm25 import Bm25Settings, make_encoder, mean_length
    from tests.test_bm25_fidelity import QdrantIdfBM25, analysed

    docs, queries = fidelity_corpus()
    keys = [f"d{i}" for i in range(len(docs))]

    async def scenario():
        svc = service(kind, tmp_path)
        try:
            old_code_path_collection(svc.store, "cat", dict(zip(keys, docs, strict=True)))
            out = await svc.reindex_bm25("cat")
            probe = make_encoder(Bm25Settings())
            mean = mean_length(probe, docs)
            assert out["objects"] == len(docs) and out["avg_len"] == pytest.approx(mean)
            assert out["bm25"]["analyzer"] == "qdrant" and out["bm25"]["language"] == "english"
            got = await svc.get_collection("cat")
            assert got["bm25"]["analyzer"] == "qdrant" and got["bm25"]["avg_len"] == pytest.approx(mean)
            # Okapi BM25 over the analysed corpus; documents without any term have no BM25 vector
            # (and are not part of N), so rank-bm25 gets only the others
            corpus = [(key, analysed(probe, d)) for key, d in zip(keys, docs, strict=True)]
            corpus = [(key, terms) for key, terms in corpus if terms]
            assert len(corpus) == len(docs) - 2
            reference = QdrantIdfBM25([terms for _, terms in corpus], k1=1.2, b=0.75)
            assert reference.avgdl == pytest.approx(mean)
            compared = 0
            for query in queries:
                expected = np.asarray(reference.get_scores(probe.query(query).indices))
                want = sorted((-expected[j], corpus[j][0]) for j in range(len(corpus)) if expected[j] > 0)
                res = await svc.search("cat", {"bm25": {"query": query}, "limit": 10})
                top = [-s for s, _ in want[:10]]
                assert [h["score"] for h in res["hits"]] == pytest.approx(top, rel=1e-4)
                by_key = {key: -s for s, key in want}
                for hit in res["hits"]:
                    assert hit["score"] == pytest.approx(by_key[hit["id"]], rel=1e-4)
                    compared += 1
            assert compared > 100
            # the stopword-only documents lost their vector; new objects use the new settings
            assert ids(await svc.search("cat", {"bm25": {"query": "lamps"}, "limit": 200}))
            await svc.import_objects("cat", {"objects": [{"id": "new", "properties": {"text": "zeppelins"}}]})
            assert ids(await svc.search("cat", {"bm25": {"query": "zeppelin"}})) == ["new"]
        finally:
            await closing(svc)

    run(scenario())


def test_reindex_options_and_errors(tmp_path):
    async def scenario():
        svc = service("edge", tmp_path)
        try:
            await svc.create_collection({"name": "c", "bm25": {"fields": ["t"]}})
            await svc.import_objects("c", {"objects": [
                {"id": "a", "properties": {"t": "Die großen Häuser"}},
                {"id": "b", "properties": {"t": "ein Haus"}}]})
            out = await svc.reindex_bm25("c", {"bm25": {"language": "german", "ascii_folding": True},
                                                "avg_len": 7})
            assert out["avg_len"] == 7 and out["bm25"]["language"] == "german"
            assert set(ids(await svc.search("c", {"bm25": {"query": "haus"}}))) == {"a", "b"}
            assert ids(await svc.search("c", {"bm25": {"query": "grossen"}})) == ["a"]
            for body, field in [({"bm25": {"language": "klingon"}}, "bm25.language"),
                                ({"bm25": {"avg_len": 3}}, "bm25.avg_len"),
                                ({"bm25": {"fields": []}}, "bm25.fields"),
                                ({"avg_len": -1}, "avg_len"),
                                ({"bm25": {"analyzer": "legacy", "language": "german"}}, "bm25.language")]:
                with pytest.raises(BadRequest) as info:
                    await svc.reindex_bm25("c", body)
                assert info.value.field == field, body
            await svc.create_collection({"name": "nobm25", "vectorizers": {"v": {"dimensions": 2}},
                                         "bm25": {"fields": []}})
            with pytest.raises(BadRequest) as info:
                await svc.reindex_bm25("nobm25")
            assert info.value.field == "bm25"
        finally:
            await closing(svc)

    run(scenario())


def test_reindex_bm25_command_through_a_running_gateway(tmp_path, capsys):
    import threading

    import uvicorn

    from gateway.http_api import create_app
    from services.cli import main as polyvec
    from services.up import free_port

    svc = service("edge", tmp_path)
    old_code_path_collection(svc.store, "old", {"a": "running shoes for the road", "b": "shoes for work"})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(svc, api_keys=["k1"]), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.05)
        url = f"http://127.0.0.1:{port}"
        assert polyvec(["reindex-bm25", "old", "--url", url, "--api-key", "k1"]) == 0
        printed = capsys.readouterr().out
        assert "2 objects of 'old'" in printed and "analyzer qdrant (english)" in printed
        assert "avg_len 2.50" in printed  # run shoe road / shoe work: 3 and 2 terms
        assert polyvec(["reindex-bm25", "old", "--url", url, "--api-key", "k1", "--stemmer", "false",
                        "--stopwords", "[]"]) == 0
        assert "avg_len 4.00" in capsys.readouterr().out  # nothing dropped or merged: 5 and 3 words
        assert polyvec(["reindex-bm25", "ghost", "--url", url, "--api-key", "k1"]) == 1
        assert "404" in capsys.readouterr().err
        assert polyvec(["reindex-bm25", "old", "--url", url]) == 1  # no API key
        assert "401" in capsys.readouterr().err
        assert polyvec(["reindex-bm25", "old", "--url", url, "--api-key", "k1", "--language", "elvish"]) == 1
        assert "bm25.language" in capsys.readouterr().err
    finally:
        server.should_exit = True
        thread.join(30)
        run(closing(svc))
