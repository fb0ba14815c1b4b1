"""Collection definitions are reused for DEFINITION_CACHE_S; changes through any gateway are honoured."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import GatewaySettings, SettingsError
from gateway.errors import NotFound
from gateway.service import GatewayService
from tests.gateway_support import gateway_with_inference, make_store

DEFINITION = {"name": "notes", "vectorizers": {"main": {"model": "clip", "text_fields": ["text"]}}}
OBJECTS = {"objects": [{"id": "a", "properties": {"text": "apples and pears"}},
                       {"id": "b", "properties": {"text": "trains and buses"}}]}


class CountingLoads:
    """Wraps store.load_definition to count how often the store is asked."""

    def __init__(self, store):
        self.calls = 0
        self._load = store.load_definition
        store.load_definition = self

    def __call__(self, name):
        self.calls += 1
        return self._load(name)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_definitions_are_reused_within_the_ttl_and_dropped_on_delete(tmp_path):
    async def scenario():
        store = make_store("edge", tmp_path)
        async with gateway_with_inference(store, settings={"definition_cache_s": 60}) as (svc, _):
            await svc.create_collection(DEFINITION)
            loads = CountingLoads(store)
            await svc.import_objects("notes", OBJECTS)
            for _ in range(5):
                hits = await svc.search("notes", {"bm25": {"query": "apples"}})
                assert hits["hits"][0]["id"] == "a"
            assert loads.calls == 1
            await svc.delete_collection("notes")
            with pytest.raises(NotFound):
                await svc.search("notes", {"bm25": {"query": "apples"}})

    run(scenario())


def test_concurrent_requests_share_one_read_of_an_expired_definition(tmp_path):
    """When the cached definition expires under load, the requests then in flight share one store read
    (each used to make its own, a herd queued in the worker threads ahead of the searches)."""

    async def scenario():
        store = make_store("qdrant", tmp_path)
        async with gateway_with_inference(store, settings={"definition_cache_s": 30}) as (svc, _):
            clock = svc.clock = Clock()
            await svc.create_collection(DEFINITION)
            await svc.import_objects("notes", OBJECTS)
            loads = CountingLoads(store)
            clock.now += 31  # expired
            search = {"bm25": {"query": "apples"}}
            outs = await asyncio.gather(*(svc.search("notes", search) for _ in range(20)))
            assert all(out["hits"][0]["id"] == "a" for out in outs)
            assert loads.calls == 1
            await asyncio.gather(*(svc.search("notes", {"bm25": {"query": "apples"}}) for _ in range(5)))
            assert loads.calls == 1  # cached again
            # a collection deleted meanwhile: a read that began before the delete is not shared after it
            clock.now += 31
            first = asyncio.ensure_future(svc.get_collection("notes"))
            await asyncio.sleep(0)
            await svc.delete_collection("notes")
            with pytest.raises(NotFound):
                await svc.search("notes", {"bm25": {"query": "apples"}})
            await asyncio.gather(first, return_exceptions=True)
            assert "notes" not in svc._definitions

    run(scenario())


def test_ttl_zero_reads_the_definition_every_time(tmp_path):
    async def scenario():
        store = make_store("qdrant", tmp_path)
        async with gateway_with_inference(store, settings={"definition_cache_s": 0}) as (svc, _):
            await svc.create_collection(DEFINITION)
            loads = CountingLoads(store)
            for _ in range(3):
                await svc.search("notes", {"bm25": {"query": "x"}})
            assert loads.calls == 3

    run(scenario())


def test_a_collection_deleted_through_another_gateway_is_not_found_at_once(tmp_path):
    async def scenario():
        store = make_store("qdrant", tmp_path)
        async with gateway_with_inference(store, settings={"definition_cache_s": 60}) as (svc, inference):
            other = GatewayService(store, GatewaySettings.from_env({}, models={"clip": inference.address}))
            try:
                await svc.create_collection(DEFINITION)
                await svc.import_objects("notes", OBJECTS)
                await svc.search("notes", {"bm25": {"query": "apples"}})  # cached in svc now
                await other.delete_collection("notes")
                # svc still holds the definition, but the store says the collection is gone: 404
                with pytest.raises(NotFound):
                    await svc.search("notes", {"bm25": {"query": "apples"}})
                assert "notes" not in svc._definitions
            finally:
                await other.close()

    run(scenario())


def test_bad_ttl_is_refused():
    with pytest.raises(SettingsError, match="DEFINITION_CACHE_S"):
        GatewaySettings.from_env({"DEFINITION_CACHE_S": "-1"})
    with pytest.raises(SettingsError, match="DEFINITION_CACHE_S"):
        GatewaySettings.from_env({"DEFINITION_CACHE_S": "soon"})


@pytest.mark.parametrize("kind", ["edge", "qdrant"])
def test_the_default_vector_is_the_first_declared_also_when_read_back(kind, tmp_path):
    """The stores keep definitions as JSON with sorted keys; "the collection's first" vector (the default
    of searches without ``vector``) must not turn into the alphabetically first one once read back."""
    from gateway.service.collections import StoredCollection

    definition = {"name": "order", "vectorizers": {"zeta": {"model": "clip", "text_fields": ["t"]},
                                                   "alpha": {"dimensions": 4}}}

    async def scenario():
        store = make_store(kind, tmp_path)
        async with gateway_with_inference(store, settings={"definition_cache_s": 0}) as (svc, _):
            created = await svc.create_collection(definition)
            assert list(created["vectorizers"]) == ["zeta", "alpha"]
            read_back = StoredCollection.from_record(store.load_definition("order"))
            assert list(read_back.definition.vectorizers) == ["zeta", "alpha"]
            assert read_back.definition.default_vector() == "zeta"
            assert list((await svc.get_collection("order"))["vectorizers"]) == ["zeta", "alpha"]
            # a definition written before the order was kept reads back as the store gives it
            record = store.load_definition("order")
            record.pop("order")
            assert list(StoredCollection.from_record(record).definition.vectorizers) == ["alpha", "zeta"]

    run(scenario())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_change_through_another_gateway_is_seen_once_the_ttl_has_passed(tmp_path):
    async def scenario():
        store = make_store("qdrant", tmp_path)
        async with gateway_with_inference(store, settings={"definition_cache_s": 30}) as (svc, inference):
            clock = svc.clock = Clock()
            other = GatewayService(store, GatewaySettings.from_env({}, models={"clip": inference.address}))
            try:
                await svc.create_collection(DEFINITION)
                assert (await svc.get_collection("notes"))["bm25"]["fields"] == ["text"]  # read and cached
                # another gateway replaces the collection: BM25 now on "title" instead of "text"
                await other.delete_collection("notes")
                await other.create_collection({**DEFINITION, "bm25": {"fields": ["title"]}})
                clock.now += 29  # within the TTL this gateway still uses what it read
                assert (await svc.get_collection("notes"))["bm25"]["fields"] == ["text"]
                clock.now += 2  # past DEFINITION_CACHE_S: read again, the change is seen
                assert (await svc.get_collection("notes"))["bm25"]["fields"] == ["title"]
                out = await svc.import_objects("notes", {"objects": [
                    {"id": "t", "properties": {"text": "zebra", "title": "walrus"}}]})
                assert out["ok"] == 1
                hits = await svc.search("notes", {"bm25": {"query": "walrus"}})
                assert [h["id"] for h in hits["hits"]] == ["t"]  # indexed with the new BM25 fields
                assert (await svc.search("notes", {"bm25": {"query": "zebra"}}))["hits"] == []
            finally:
                await other.close()

    run(scenario())
