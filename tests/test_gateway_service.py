"""The gateway service layer end to end: the real inference server on loopback, both storage adapters.

The inference server runs the deterministic test encoder (texts: a hashed bag of words; images: a
colour histogram), so rankings below follow from the data, not from stubs.
"""

from __future__ import annotations

import asyncio
import base64
import time

import numpy as np
import pytest

from gateway.errors import BadRequest, Conflict, NotFound, Unavailable
from tests.gateway_support import gateway_with_inference, make_store, png_bytes

STORES = ["qdrant", "edge"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PRODUCTS = {
    "name": "products",
    "vectorizers": {"clip": {"model": "clip", "text_fields": ["title"], "image_fields": ["photo"]}},
    "bm25": {"fields": ["title", "description"]},
}

OBJECTS = [
    {"id": "apple", "properties": {"title": "red apple", "description": "a crisp fruit from the orchard",
                                   "price": 3, "colour": "red", "tags": ["fruit"]}},
    {"id": "sky", "properties": {"title": "blue sky poster", "description": "print of a cloudless day",
                                 "price": 12, "colour": "blue", "tags": ["poster"],
                                 "photo": b64(png_bytes("blue"))}},
    {"id": "grass", "properties": {"title": "green grass seeds", "description": "lawn seeds for the garden",
                                   "price": 7, "colour": "green", "tags": ["garden"]}},
    {"id": "leaf", "properties": {"title": "green tree leaf", "description": "a pressed leaf in a frame",
                                  "price": 25, "colour": "green", "tags": ["garden", "poster"]}},
    {"id": "banana", "properties": {"title": "yellow banana", "description": "a sweet fruit",
                                    "price": 1, "colour": "yellow", "tags": ["fruit"],
                                    "photo": b64(png_bytes("yellow"))}},
]


def run(coro):
    return asyncio.run(coro)


async def seeded(svc):
    await svc.create_collection(PRODUCTS)
    out = await svc.import_objects("products", {"objects": OBJECTS})
    assert out["errors"] == 0, out
    return out


def ids(result):
    return [h["id"] for h in result["hits"]]


@pytest.mark.parametrize("kind", STORES)
def test_collections_lifecycle(kind, tmp_path):
    async def scenario():
        async with gateway_with_inference(make_store(kind, tmp_path), dims=24) as (svc, inference):
            created = await svc.create_collection(PRODUCTS)
            assert created["vectorizers"]["clip"]["dimensions"] == 24
            assert created["vectorizers"]["clip"]["model_name"] == "fake-clip"
            got = await svc.get_collection("products")
            assert got["name"] == "products" and got["count"] == 0
            assert got["bm25"]["fields"] == ["title", "description"]
            await svc.create_collection({"name": "other", "vectorizers": {"v": {"dimensions": 3}}})
            assert [c["name"] for c in await svc.list_collections()] == ["other", "products"]
            with pytest.raises(Conflict):
                await svc.create_collection(PRODUCTS)
            assert (await svc.delete_collection("products"))["deleted"]
            with pytest.raises(NotFound):
                await svc.get_collection("products")
            with pytest.raises(NotFound):
                await svc.delete_collection("products")
            assert [c["name"] for c in await svc.list_collections()] == ["other"]

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_create_checks_inference_service(kind, tmp_path):
    async def scenario():
        settings = {"inference_timeout_s": 2, "inference_query_retry_budget_s": 0.3}
        async with gateway_with_inference(make_store(kind, tmp_path), dims=24, modalities=("text",),
                                          settings=settings) as (svc, inference):
            bad_dims = {"name": "c1",
                        "vectorizers": {"v": {"model": "clip", "text_fields": ["t"], "dimensions": 8}}}
            with pytest.raises(BadRequest) as info:
                await svc.create_collection(bad_dims)
            assert info.value.field == "vectorizers.v.dimensions" and "24" in info.value.message
            with pytest.raises(BadRequest) as info:
                await svc.create_collection({"name": "c2", "vectorizers": {"v": {"model": "clip",
                                                                                 "image_fields": ["p"]}}})
            assert info.value.field == "vectorizers.v.image_fields"
            with pytest.raises(BadRequest) as info:
                await svc.create_collection({"name": "c3", "vectorizers": {"v": {"model": "nope",
                                                                                 "text_fields": ["t"]}}})
            assert info.value.field == "vectorizers.v.model"
            address = inference.address
            await inference.stop()
            started = time.monotonic()
            with pytest.raises(Unavailable) as info:
                await svc.create_collection({"name": "c4", "vectorizers": {"v": {"model": "clip",
                                                                                 "text_fields": ["t"]}}})
            assert time.monotonic() - started < 10  # the budget (0.3 s), not the 30 s default
            assert address in info.value.message and "clip" in info.value.service
            # nothing half-made
            assert await svc.list_collections() == []
            assert not svc.store.collection_exists("c4")

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_import_per_object_status_and_failures_not_written(kind, tmp_path):
    async def scenario():
        async with gateway_with_inference(make_store(kind, tmp_path)) as (svc, inference):
            await svc.create_collection(PRODUCTS)
            batch = [
                {"id": "ok1", "properties": {"title": "red apple", "photo": b64(png_bytes("red"))}},
                {"id": "badimg", "properties": {"title": "broken", "photo": b64(b"this is not a png")}},
                {"id": "badb64", "properties": {"title": "x", "photo": "%%%not base64%%%"}},
                {"id": "notext", "properties": {"title": 42.5, "photo": None}},
                {"id": "nofields", "properties": {"other": "x"}},
                {"id": "ok2", "properties": {"title": "green grass"}},
                {"properties": {"title": "no id given"}},
                "not an object",
            ]
            out = await svc.import_objects("products", {"objects": batch})
            status = {r["index"]: r for r in out["results"]}
            assert [status[i]["status"] for i in range(8)] == [
                "ok", "error", "error", "ok", "error", "ok", "ok", "error"]
            assert status[1]["field"] == "objects.1.properties.photo" and "rejected" in status[1]["error"]
            assert status[2]["field"] == "objects.2.properties.photo" and "base64" in status[2]["error"]
            assert status[4]["field"] == "objects.4.properties"
            assert status[7]["field"] == "objects.7"
            assert out["ok"] == 4 and out["errors"] == 4
            assert await asyncio.to_thread(svc.store.count, "products") == 4
            for r in out["results"]:
                if r["status"] == "error" and r.get("id"):
                    with pytest.raises(NotFound):
                        await svc.get_object("products", r["id"])
            # batched: 5 texts in one call; 2 images in one call, rejected, split in halves, and the
            # rejected half tried once more alone
            assert inference.service.vectorize_calls == 1 + 3 + 1
            assert (await svc.get_object("products", status[6]["id"]))["properties"]["title"] == "no id given"

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_user_ids_are_stable_and_reimport_replaces(kind, tmp_path):
    async def scenario():
        async with gateway_with_inference(make_store(kind, tmp_path)) as (svc, inference):
            first = await seeded(svc)
            again = await svc.import_objects("products", {"objects": OBJECTS})
            assert [r["uuid"] for r in first["results"]] == [r["uuid"] for r in again["results"]]
            assert [r["id"] for r in again["results"]] == [o["id"] for o in OBJECTS]
            assert await asyncio.to_thread(svc.store.count, "products") == len(OBJECTS)
            obj = await svc.get_object("products", "apple")
            assert obj["id"] == "apple" and obj["properties"]["price"] == 3
            assert "_polyvec_id" not in obj["properties"]
            assert (await svc.get_object("products", obj["uuid"]))["id"] == "apple"

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_user_vectors(kind, tmp_path):
    async def scenario():
        async with gateway_with_inference(make_store(kind, tmp_path), dims=8) as (svc, inference):
            await svc.create_collection({"name": "own", "vectorizers": {
                "mine": {"dimensions": 3}, "clip": {"model": "clip", "text_fields": ["t"]}}})
            out = await svc.import_objects("own", {"objects": [
                {"id": "a", "properties": {"t": "alpha"}, "vectors": {"mine": [1, 0, 0]}},
                {"id": "b", "properties": {"t": "beta"}, "vectors": {"mine": [0, 1, 0], "clip": [0.5] * 8}},
                {"id": "c", "properties": {"t": "gamma"}, "vectors": {"mine": [1, 2]}},
                {"id": "d", "properties": {"t": "delta"}},
                {"id": "e", "properties": {"t": "eps"}, "vectors": {"other": [1, 2, 3]}},
            ]})
            res = [r["status"] for r in out["results"]]
            assert res == ["ok", "ok", "error", "error", "error"]
            assert out["results"][2]["field"] == "objects.2.vectors.mine"
            assert out["results"][3]["field"] == "objects.3.vectors.mine"
            assert out["results"][4]["field"] == "objects.4.vectors.other"
            assert inference.service.texts_seen == ["alpha"]  # b brought its own clip vector
            got = await svc.get_object("own", "b", with_vectors=True)
            assert got["vectors"]["mine"] == pytest.approx([0, 1, 0])
            clip = np.asarray(got["vectors"]["clip"])
            assert clip / np.linalg.norm(clip) == pytest.approx([8 ** -0.5] * 8)  # the direction sent
            hits = await svc.search("own", {"near_vector": {"vector": [0.9, 0.1, 0]}, "vector": "mine"})
            assert ids(hits) == ["a", "b"]
            with pytest.raises(BadRequest) as info:
                await svc.search("own", {"near_text": {"query": "x"}, "vector": "mine"})
            assert info.value.field == "near_text.query"

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_put_revectorizes_only_when_a_vectorized_field_changed(kind, tmp_path):
    async def scenario():
        async with gateway_with_inference(make_store(kind, tmp_path)) as (svc, inference):
            await seeded(svc)
            before = await svc.get_object("products", "apple", with_vectors=True)
            calls = inference.service.vectorize_calls
            out = await svc.put_object("products", "apple", {"properties": {**OBJECTS[0]["properties"],
                                                                             "price": 4}})
            assert out["vectorized"] == [] and not out["created"]
            assert inference.service.vectorize_calls == calls
            after = await svc.get_object("products", "apple", with_vectors=True)
            assert after["properties"]["price"] == 4
            assert after["vectors"]["clip"] == pytest.approx(before["vectors"]["clip"])
            # the title feeds the vector: re-vectorized, and search follows the new text
            out = await svc.put_object("products", "apple", {"properties": {"title": "purple plum"}})
            assert out["vectorized"] == ["clip"]
            assert inference.service.vectorize_calls == calls + 1
            res = await svc.search("products", {"near_text": {"query": "purple plum"}, "limit": 1})
            assert ids(res) == ["apple"]
            assert ids(await svc.search("products", {"bm25": {"query": "plum"}})) == ["apple"]
            # description feeds only BM25: no inference call, BM25 updated
            calls = inference.service.vectorize_calls
            out = await svc.put_object("products", "apple", {"properties": {"title": "purple plum",
                                                                             "description": "juicy"}})
            assert out["vectorized"] == [] and inference.service.vectorize_calls == calls
            assert ids(await svc.search("products", {"bm25": {"query": "juicy"}})) == ["apple"]
            created = await svc.put_object("products", "new-one", {"properties": {"title": "fresh"}})
            assert created["created"] and created["vectorized"] == ["clip"]
            with pytest.raises(BadRequest) as info:
                await svc.put_object("products", "apple", {"properties": {"title": "x", "photo": "@@"}})
            assert info.value.field == "properties.photo"
            assert (await svc.delete_object("products", "apple"))["deleted"]
            with pytest.raises(NotFound):
                await svc.get_object("products", "apple")
            with pytest.raises(NotFound):
                await svc.delete_object("products", "apple")

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_every_search_kind(kind, tmp_path):
    async def scenario():
        async with gateway_with_inference(make_store(kind, tmp_path)) as (svc, inference):
            await seeded(svc)
            res = await svc.search("products", {"near_text": {"query": "green"}, "limit": 2})
            assert set(ids(res)) == {"grass", "leaf"} and res["took_ms"] >= 0
            assert res["hits"][0]["score"] >= res["hits"][1]["score"]
            res = await svc.search("products", {"near_image": {"image": b64(png_bytes("blue"))}, "limit": 1})
            assert ids(res) == ["sky"]
            res = await svc.search("products", {"near_image": {"image": b64(png_bytes("yellow"))},
                                                "limit": 1})
            assert ids(res) == ["banana"]
            target = (await svc.get_object("products", "grass", with_vectors=True))["vectors"]["clip"]
            res = await svc.search("products", {"near_vector": {"vector": target}, "limit": 1})
            assert ids(res) == ["grass"] and res["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
            res = await svc.search("products", {"bm25": {"query": "fruit"}})
            assert set(ids(res)) == {"apple", "banana"}  # description words count for BM25
            res = await svc.search("products", {"bm25": {"query": "orchard"}})
            assert ids(res) == ["apple"]
            for fusion in ("rrf", "relative_score"):
                res = await svc.search("products", {"hybrid": {"query": "yellow fruit", "alpha": 0.5,
                                                               "fusion": fusion}, "limit": 3})
                assert ids(res)[0] == "banana", (fusion, res)
            for fusion in ("rrf", "relative_score"):
                q = "green leaf in a frame"
                only_bm25 = await svc.search("products",
                                             {"hybrid": {"query": q, "alpha": 0.0, "fusion": fusion}})
                assert ids(only_bm25) == ids(await svc.search("products", {"bm25": {"query": q}}))
                only_vec = await svc.search("products",
                                            {"hybrid": {"query": q, "alpha": 1.0, "fusion": fusion}})
                assert ids(only_vec) == ids(await svc.search("products", {"near_text": {"query": q}}))
                assert ids(only_bm25)[0] == ids(only_vec)[0] == "leaf"

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_filters_paging_and_properties(kind, tmp_path):
    async def scenario():
        async with gateway_with_inference(make_store(kind, tmp_path)) as (svc, inference):
            await seeded(svc)
            q = {"near_text": {"query": "green"}}
            res = await svc.search("products", {**q, "filter": {"colour": "green"}, "limit": 10})
            assert set(ids(res)) == {"grass", "leaf"}
            res = await svc.search("products", {**q, "filter": {"price": {"gte": 5, "lt": 20}}})
            assert set(ids(res)) == {"sky", "grass"}
            res = await svc.search("products", {**q, "filter": {"colour": ["red", "yellow"]}})
            assert set(ids(res)) == {"apple", "banana"}
            res = await svc.search("products", {**q, "filter": {"tags": "poster",
                                                                "must_not": [{"colour": "blue"}]}})
            assert ids(res) == ["leaf"]
            res = await svc.search("products", {**q, "filter": {"should": [{"price": {"lt": 2}},
                                                                           {"colour": "blue"}]}})
            assert set(ids(res)) == {"banana", "sky"}
            res = await svc.search("products", {"bm25": {"query": "fruit"}, "filter": {"price": {"gt": 2}}})
            assert ids(res) == ["apple"]
            res = await svc.search("products", {"hybrid": {"query": "green"}, "filter": {"colour": "green"}})
            assert set(ids(res)) == {"grass", "leaf"}
            full = ids(await svc.search("products", {**q, "limit": 5}))
            assert len(full) == 5
            assert ids(await svc.search("products", {**q, "limit": 2, "offset": 1})) == full[1:3]
            res = await svc.search("products", {**q, "limit": 1, "properties": ["price", "colour"]})
            assert set(res["hits"][0]["properties"]) == {"price", "colour"}
            assert res["hits"][0]["id"] == full[0]
            res = await svc.search("products", {**q, "limit": 1, "properties": []})
            assert res["hits"][0]["properties"] == {} and res["hits"][0]["id"] == full[0]

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_errors(kind, tmp_path):
    async def scenario():
        store = make_store(kind, tmp_path)
        settings = {"inference_timeout_s": 2, "inference_retry_budget_s": 0.3,
                    "inference_query_retry_budget_s": 0.3}
        async with gateway_with_inference(store, settings=settings) as (svc, inference):
            await seeded(svc)
            await svc.create_collection({"name": "nobm25", "vectorizers": {"clip": {"model": "clip",
                                                                                    "text_fields": ["t"]}},
                                         "bm25": {"fields": []}})
            with pytest.raises(NotFound):
                await svc.search("missing", {"near_text": {"query": "x"}})
            with pytest.raises(NotFound):
                await svc.import_objects("missing", {"objects": []})
            cases = [
                ({"near_vector": {"vector": [1.0, 2.0]}}, "near_vector.vector"),
                ({"near_image": {"image": "***"}}, "near_image.image"),
                ({"near_image": {"image": b64(b"no image")}}, "near_image.image"),
                ({"near_text": {"query": "x"}, "vector": "nope"}, "vector"),
                ({"bm25": {"query": "x"}, "vector": "nope"}, "vector"),
                ({"near_text": {"query": "x"}, "filter": {"price": {"gte": "x"}}}, "filter.price.gte"),
                ({"hybrid": {"query": "x", "alpha": -0.1}}, "hybrid.alpha"),
            ]
            for body, field in cases:
                with pytest.raises(BadRequest) as info:
                    await svc.search("products", body)
                assert info.value.field == field, body
            with pytest.raises(BadRequest) as info:
                await svc.search("nobm25", {"bm25": {"query": "x"}})
            assert info.value.field == "bm25"
            with pytest.raises(BadRequest) as info:
                await svc.import_objects("products", {"objects": "x"})
            assert info.value.field == "objects"
            # inference down: 503 naming the service, quickly, and nothing written
            await inference.stop()
            started = time.monotonic()
            with pytest.raises(Unavailable) as info:
                await svc.search("products", {"near_text": {"query": "x"}})
            assert "clip" in info.value.service and inference.address in info.value.message
            with pytest.raises(Unavailable):
                await svc.import_objects("products", {"objects": [{"id": "z", "properties": {"title": "z"}}]})
            assert time.monotonic() - started < 10  # the budgets (0.3 s each), not the 30 s default
            assert await asyncio.to_thread(svc.store.count, "products") == len(OBJECTS)
            # searches that need no inference still work
            assert ids(await svc.search("products", {"bm25": {"query": "orchard"}})) == ["apple"]

    run(scenario())


def test_import_batch_limit_and_weights(tmp_path):
    async def scenario():
        store = make_store("qdrant", tmp_path)
        async with gateway_with_inference(store, settings={"import_batch_size": 3}) as (svc, _):
            await svc.create_collection({"name": "w", "vectorizers": {"clip": {
                "model": "clip", "text_fields": ["a", "b"], "weights": {"a": 1, "b": 9}}}})
            with pytest.raises(BadRequest) as info:
                await svc.import_objects("w", {"objects": [{"properties": {"a": "x"}}] * 4})
            assert info.value.field == "objects"
            await svc.import_objects("w", {"objects": [
                {"id": "1", "properties": {"a": "cat", "b": "dog"}},
                {"id": "2", "properties": {"a": "dog", "b": "cat"}},
            ]})
            # object 1's vector leans to "dog" (weight 9), object 2's to "cat"
            assert ids(await svc.search("w", {"near_text": {"query": "dog"}, "limit": 1})) == ["1"]
            assert ids(await svc.search("w", {"near_text": {"query": "cat"}, "limit": 1})) == ["2"]

    run(scenario())
