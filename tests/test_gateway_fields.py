"""Declared fields through the gateway: payload indexes and their state, per-object type checks, the filter
grammar (every operator, errors naming the path), facets, browsing in field order, MMR, PATCH; on both
storage adapters, over the service, HTTP and gRPC."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from gateway.config import GatewaySettings
from gateway.errors import BadRequest
from gateway.http_api import create_app
from gateway.service import GatewayService
from gateway.storage.base import StoreError
from tests.gateway_support import make_store

STORES = ["qdrant", "edge"]
FIELDS = {"price": "float", "brand": "keyword", "released": "datetime",
          "title": {"type": "text"}, "tags": "keyword[]", "location": "geo", "in_stock": "bool",
          "stock": "integer", "sku": "uuid"}
PRODUCTS = {"name": "products", "vectorizers": {"v": {"dimensions": 2}}, "bm25": {"fields": ["title"]},
            "fields": FIELDS}


def item(key: str, vector: list[float], **props) -> dict:
    return {"id": key, "properties": props, "vectors": {"v": vector}}


ITEMS = [
    item("p1", [1.0, 0.0], price=89.0, brand="Fleet", released="2024-03-01T10:00:00Z",
         title="Red running shoes", tags=["shoe", "red"], location={"lat": 52.52, "lon": 13.40},
         in_stock=True, stock=5,
         sku="2b7e8b7c-0f4e-4d5e-9e55-1b1f0a7c9d01"),
    item("p2", [0.9, 0.1], price=129.5, brand="Oxley", released="2023-11-20T00:00:00+01:00",
         title="Leather office shoes", tags=[], location={"lat": 48.85, "lon": 2.35}, in_stock=False,
         stock=0),
    item("p3", [0.0, 1.0], price=59, brand="Fleetwood", released="2022-01-01", title="Trail backpack",
         tags=["bag"], location={"lat": 51.50, "lon": -0.12}, in_stock=True, stock=12),
    item("p4", [0.7, 0.7], brand="Fleet", title="Running socks", tags=["sock", "red", "shoe"], stock=40),
]


def run(coro):
    return asyncio.run(coro)


def ids(result) -> list[str]:
    return [h["id"] for h in result["hits"]]


def service(kind, tmp_path, **settings) -> GatewayService:
    return GatewayService(make_store(kind, tmp_path), GatewaySettings.from_env({}, **settings))


async def closing(svc: GatewayService) -> None:
    await svc.close()
    svc.store.close()


async def seeded(svc: GatewayService) -> dict:
    created = await svc.create_collection(PRODUCTS)
    out = await svc.import_objects("products", {"objects": ITEMS})
    assert out["errors"] == 0, out
    return created


@pytest.mark.parametrize("kind", STORES)
def test_declared_fields_get_indexes_and_imports_check_types(kind, tmp_path):
    async def scenario():
        svc = service(kind, tmp_path)
        try:
            created = await seeded(svc)
            assert created["fields"]["price"] == {"type": "float"} and created["fields"]["tags"] == {
                "type": "keyword[]"}
            assert {k: v["state"] for k, v in created["indexes"].items()} == {k: "ready" for k in FIELDS}
            got = await svc.get_collection("products")
            assert got["indexes"]["tags"]["type"] == "keyword[]"
            if kind == "edge":
                assert got["indexes"]["price"]["points"] == 3 and got["indexes"]["tags"]["points"] == 3
            bad = [
                ({"price": "cheap"}, "objects.0.properties.price", "must be a number"),
                ({"price": True}, "objects.1.properties.price", "must be a number"),
                ({"price": float("inf")}, "objects.2.properties.price", "finite"),
                ({"tags": ["a", 3]}, "objects.3.properties.tags.1", "must be a string"),
                ({"tags": "a"}, "objects.4.properties.tags", "list"),
                ({"brand": ["a"]}, "objects.5.properties.brand", "not a list"),
                ({"released": "yesterday"}, "objects.6.properties.released", "RFC 3339"),
                ({"released": "2024-02-30"}, "objects.7.properties.released", "not a valid date"),
                ({"location": {"lat": 95, "lon": 0}}, "objects.8.properties.location", "lat"),
                ({"location": "Berlin"}, "objects.9.properties.location", "geo point"),
                ({"in_stock": "yes"}, "objects.10.properties.in_stock", "true or false"),
                ({"stock": 2.5}, "objects.11.properties.stock", "integer"),
                ({"sku": "not-a-uuid"}, "objects.12.properties.sku", "UUID"),
                ({"title": 7}, "objects.13.properties.title", "string"),
            ]
            objects = [item(f"bad{i}", [1.0, 0.0], **props) for i, (props, _, _) in enumerate(bad)]
            objects.append(item("fine", [1.0, 0.0], price=None, other={"anything": [1, "x"]}))
            out = await svc.import_objects("products", {"objects": objects})
            for result, (_, field, text) in zip(out["results"], bad, strict=False):
                assert result["status"] == "error" and result["field"] == field, result
                assert text in result["error"], result
            assert out["results"][-1]["status"] == "ok" and out["errors"] == len(bad)
            assert await asyncio.to_thread(svc.store.count, "products") == len(ITEMS) + 1
            with pytest.raises(BadRequest) as info:
                await svc.put_object("products", "p1", {"properties": {"price": "free"},
                                                        "vectors": {"v": [1, 0]}})
            assert info.value.field == "properties.price"
        finally:
            await closing(svc)

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_filter_grammar_on_declared_fields(kind, tmp_path):
    async def scenario():
        svc = service(kind, tmp_path)
        try:
            await seeded(svc)
            cases = [
                ({"brand": "Fleet"}, {"p1", "p4"}),
                ({"brand": ["Oxley", "Fleetwood"]}, {"p2", "p3"}),
                ({"brand": {"ne": "Fleet"}}, {"p2", "p3"}),
                ({"brand": {"prefix": "Fleet"}}, {"p1", "p3", "p4"}),
                ({"price": {"gte": 59, "lt": 100}}, {"p1", "p3"}),
                ({"price": 129.5}, {"p2"}),
                ({"price": {"ne": 89}}, {"p2", "p3", "p4"}),  # p4 has no price: ne holds for it
                ({"price": {"ne": 89, "exists": True}}, {"p2", "p3"}),
                ({"stock": {"in": [0, 12]}}, {"p2", "p3"}),
                ({"released": {"gte": "2023-01-01T00:00:00Z"}}, {"p1", "p2"}),
                ({"released": {"lt": "2023-11-20"}}, {"p2", "p3"}),  # p2 is 2023-11-19T23:00Z
                ({"released": {"gt": "2023-11-19T23:00:00Z"}}, {"p1"}),
                ({"released": "2022-01-01T00:00:00Z"}, {"p3"}),
                ({"title": {"match": "running backpack"}}, {"p1", "p3", "p4"}),
                ({"title": {"match_all": "running shoes"}}, {"p1"}),
                ({"title": {"phrase": "office shoes"}}, {"p2"}),
                ({"title": {"phrase": "shoes office"}}, set()),
                ({"title": {"prefix": "Run"}}, {"p4"}),
                ({"location": {"geo_radius": {"lat": 52.5, "lon": 13.4, "meters": 10_000}}}, {"p1"}),
                ({"location": {"geo_box": {"top_left": {"lat": 53, "lon": -1},
                                           "bottom_right": {"lat": 50, "lon": 14}}}}, {"p1", "p3"}),
                ({"tags": {"is_empty": True}}, {"p2"}),
                ({"tags": {"values_count": {"gte": 2}}}, {"p1", "p4"}),
                ({"location": {"exists": False}}, {"p4"}),
                ({"in_stock": False}, {"p2"}),
                ({"sku": "2b7e8b7c-0f4e-4d5e-9e55-1b1f0a7c9d01"}, {"p1"}),
                ({"should": [{"brand": "Oxley"}, {"tags": "bag"}], "must_not": [{"in_stock": False}]},
                 {"p3"}),
            ]
            for flt, want in cases:
                got = await svc.search("products", {"near_vector": {"vector": [1, 0]}, "filter": flt,
                                                    "limit": 10})
                assert set(ids(got)) == want, flt
            errors = [
                ({"colour": "red"}, "filter.colour", "not a declared field"),
                ({"must": [{"colour": "red"}]}, "filter.must.0.colour", "not a declared field"),
                ({"price": {"match": "x"}}, "filter.price.match", "does not apply to float"),
                ({"brand": 5}, "filter.brand", "must be a string"),
                ({"brand": {"in": ["a", 1]}}, "filter.brand.in.1", "must be a string"),
                ({"stock": {"eq": "five"}}, "filter.stock.eq", "integer"),
                ({"price": {"gte": "2024-01-01"}}, "filter.price.gte", "must be a number"),
                ({"released": {"gte": 5}}, "filter.released.gte", "RFC 3339"),
                ({"released": {"gte": "2024-13-01"}}, "filter.released.gte", "not a valid date"),
                ({"title": {"phrase": ""}}, "filter.title.phrase", "non-empty"),
                ({"location": {"geo_radius": {"lat": 1, "lon": 2}}}, "filter.location.geo_radius", "meters"),
                ({"location": {"geo_radius": {"lat": 91, "lon": 2, "meters": 5}}},
                 "filter.location.geo_radius", "lat"),
                ({"location": {"geo_radius": {"lat": 1, "lon": 2, "meters": 0}}},
                 "filter.location.geo_radius.meters", "> 0"),
                ({"location": {"geo_box": {"top_left": {"lat": 1, "lon": 0},
                                           "bottom_right": {"lat": 2, "lon": 1}}}},
                 "filter.location.geo_box.top_left.lat", "south"),
                ({"tags": {"values_count": {"gte": -1}}}, "filter.tags.values_count.gte", ">= 0"),
                ({"tags": {"values_count": {"most": 2}}}, "filter.tags.values_count.most", "unknown bound"),
                ({"tags": {"exists": "yes"}}, "filter.tags.exists", "true or false"),
                ({"tags": {"near": 1}}, "filter.tags.near", "unknown operator"),
            ]
            for flt, field, text in errors:
                with pytest.raises(BadRequest) as info:
                    await svc.search("products", {"near_vector": {"vector": [1, 0]}, "filter": flt})
                assert info.value.field == field and text in info.value.detail, (flt, info.value.message)
        finally:
            await closing(svc)

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_undeclared_collections_keep_todays_filters_plus_the_new_operators(kind, tmp_path):
    async def scenario():
        svc = service(kind, tmp_path)
        try:
            await svc.create_collection({"name": "free", "vectorizers": {"v": {"dimensions": 2}}})
            objects = [dict(o, properties={**o["properties"], "extra": i}) for i, o in enumerate(ITEMS)]
            await svc.import_objects("free", {"objects": objects + [item("odd", [1, 0], price="n/a")]})
            got = await svc.search("free", {"near_vector": {"vector": [1, 0]}, "filter": {"colour": "red"}})
            assert ids(got) == []  # an unknown field matches nothing (no declarations: no check)
            got = await svc.search("free", {"near_vector": {"vector": [1, 0]},
                                            "filter": {"released": {"gte": "2023-01-01T00:00:00Z"}}})
            assert set(ids(got)) == {"p1", "p2"}
            got = await svc.search("free", {"near_vector": {"vector": [1, 0]},
                                            "filter": {"title": {"phrase": "running shoes"}}})
            assert ids(got) == ["p1"]
            got = await svc.search("free", {"near_vector": {"vector": [1, 0]},
                                            "filter": {"brand": {"ne": "Fleet"}}})
            assert set(ids(got)) == {"p2", "p3", "odd"}  # another brand, or none at all
            with pytest.raises(BadRequest) as info:
                await svc.search("free", {"near_vector": {"vector": [1, 0]},
                                          "filter": {"price": {"gte": 5, "lt": "2024-01-01"}}})
            assert info.value.field.startswith("filter.price.")
            with pytest.raises(BadRequest) as info:  # facets and order need a declared field
                await svc.facets("free", {"field": "brand"})
            assert info.value.field == "field" and "declare" in info.value.detail
            with pytest.raises(BadRequest) as info:
                await svc.search("free", {"order_by": {"field": "price"}})
            assert info.value.field == "order_by.field"
        finally:
            await closing(svc)

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_facets_browse_and_mmr(kind, tmp_path):
    async def scenario():
        svc = service(kind, tmp_path)
        try:
            await seeded(svc)
            out = await svc.facets("products", {"field": "brand", "exact": True})
            assert out["values"][0] == {"value": "Fleet", "count": 2}  # the most frequent first
            assert sorted((v["value"], v["count"]) for v in out["values"]) == [
                ("Fleet", 2), ("Fleetwood", 1), ("Oxley", 1)]
            out = await svc.facets("products", {"field": "tags", "filter": {"brand": "Fleet"}, "limit": 2})
            assert [v["count"] for v in out["values"]] == [2, 2]
            assert {v["value"] for v in out["values"]} == {"shoe", "red"}
            out = await svc.facets("products", {"field": "in_stock"})
            assert {v["value"]: v["count"] for v in out["values"]} == {True: 2, False: 1}
            for body, field in [({"field": "price"}, "field"), ({"field": "colour"}, "field"),
                                ({"field": "brand", "limit": 0}, "limit"),
                                ({"field": "brand", "filter": {"colour": 1}}, "filter.colour")]:
                with pytest.raises(BadRequest) as info:
                    await svc.facets("products", body)
                assert info.value.field == field, body

            # browsing: no query, only a filter and an order
            got = await svc.search("products", {"filter": {"in_stock": True},
                                                "order_by": {"field": "price", "direction": "desc"}})
            assert ids(got) == ["p1", "p3"] and all(h["score"] == 0 for h in got["hits"])
            got = await svc.search("products", {"order_by": {"field": "released"}, "limit": 2, "offset": 1})
            assert ids(got) == ["p2", "p1"]
            got = await svc.search("products", {"order_by": {"field": "stock", "direction": "desc"},
                                                "properties": ["stock"]})
            assert [h["properties"] for h in got["hits"]] == [{"stock": 40}, {"stock": 12}, {"stock": 5},
                                                              {"stock": 0}]
            got = await svc.search("products", {"filter": {"brand": "Fleet"}})
            assert sorted(ids(got)) == ["p1", "p4"]
            for body, field in [({"order_by": {"field": "brand"}}, "order_by.field"),
                                ({"order_by": {"field": "tags"}}, "order_by.field"),
                                ({"order_by": {"field": "price", "direction": "up"}}, "order_by.direction"),
                                ({"near_vector": {"vector": [1, 0]}, "order_by": {"field": "price"}},
                                 "order_by"),
                                ({}, "near_text|near_image|near_vector|bm25|neural_sparse|hybrid")]:
                with pytest.raises(BadRequest) as info:
                    await svc.search("products", body)
                assert info.value.field == field, body

            # MMR: the second hit is the far one, not the near duplicate of the first
            plain = await svc.search("products", {"near_vector": {"vector": [1, 0]}, "limit": 2})
            assert ids(plain) == ["p1", "p2"]
            diverse = await svc.search("products", {"near_vector": {"vector": [1, 0]}, "limit": 2,
                                                    "diversity": {"mmr": {"lambda": 0.3}}})
            assert ids(diverse) == ["p1", "p3"]
            relevant = await svc.search("products", {"near_vector": {"vector": [1, 0]}, "limit": 2,
                                                     "diversity": {"mmr": {"lambda": 1.0}}})
            assert ids(relevant) == ["p1", "p2"]
            for body, field in [({"bm25": {"query": "shoes"}, "diversity": {"mmr": {}}}, "diversity"),
                                ({"near_vector": {"vector": [1, 0]}, "limit": 5,
                                  "diversity": {"mmr": {"candidates": 3}}}, "diversity.mmr.candidates"),
                                ({"near_vector": {"vector": [1, 0]}, "diversity": {"mmr": {"lambda": 2}}},
                                 "diversity.mmr.lambda")]:
                with pytest.raises(BadRequest) as info:
                    await svc.search("products", body)
                assert info.value.field == field, body
        finally:
            await closing(svc)

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_patch_declares_fields_and_builds_their_indexes_in_the_background(kind, tmp_path, monkeypatch):
    async def scenario():
        svc = service(kind, tmp_path, definition_cache_s=60)
        try:
            await svc.create_collection({"name": "c", "vectorizers": {"v": {"dimensions": 2}}})
            await svc.import_objects("c", {"objects": [item("a", [1, 0], brand="x", n=1),
                                                       item("b", [0, 1], brand="y", n="two")]})
            assert "indexes" not in await svc.get_collection("c")
            release = threading.Event()
            real = svc.store.create_payload_index

            def gated(name, key, kind_):
                assert release.wait(30)
                return real(name, key, kind_)

            monkeypatch.setattr(svc.store, "create_payload_index", gated)
            out = await svc.update_collection("c", {"fields": {"brand": "keyword", "n": "integer"}})
            assert out["fields"] == {"brand": {"type": "keyword"}, "n": {"type": "integer"}}
            assert out["indexes"]["brand"]["state"] == "building" and out["count"] == 2
            assert (await svc.get_collection("c"))["indexes"]["n"]["state"] == "building"
            release.set()
            await svc.indexes.wait("c")
            got = await svc.get_collection("c")
            assert {k: v["state"] for k, v in got["indexes"].items()} == {"brand": "ready", "n": "ready"}
            # filters now check the declared fields; imports check types (old objects are not rechecked)
            with pytest.raises(BadRequest):
                await svc.search("c", {"filter": {"other": 1}})
            assert ids(await svc.search("c", {"filter": {"n": 1}})) == ["a"]
            out = await svc.import_objects("c", {"objects": [item("c", [1, 1], n="three")]})
            assert out["results"][0]["field"] == "objects.0.properties.n"
            # a declared type cannot change; the same declaration again is fine
            with pytest.raises(BadRequest) as info:
                await svc.update_collection("c", {"fields": {"n": "float"}})
            assert info.value.field == "fields.n" and "integer" in info.value.detail
            for body, field in [
                ({"fields": {"x": "money"}}, "fields.x"), ({"fields": {"x": 5}}, "fields.x"),
                ({"fields": {"x": {"type": "money"}}}, "fields.x.type"), ({"fields": 5}, "fields"),
                ({"fields": {"a.b": "keyword", "a": "keyword"}}, "fields.a.b"), ({}, "fields"),
                ({"fields": {"bad name": "keyword"}}, "fields"), ({"fields": {}, "name": "d"}, "name"),
            ]:
                with pytest.raises(BadRequest) as info:
                    await svc.update_collection("c", body)
                assert info.value.field == field, body

            # a failed build is shown (on every gateway: it is kept with the definition), and PATCHing
            # the same field again builds it again
            def broken(name, key, kind_):
                raise StoreError(f"{name}: disk full")

            monkeypatch.setattr(svc.store, "create_payload_index", broken)
            await svc.update_collection("c", {"fields": {"when": "datetime"}})
            await svc.indexes.wait("c")
            state = (await svc.get_collection("c"))["indexes"]["when"]
            assert state["state"] == "failed" and "disk full" in state["error"]
            other = GatewayService(svc.store, GatewaySettings.from_env({}))
            assert (await other.get_collection("c"))["indexes"]["when"]["state"] == "failed"
            monkeypatch.setattr(svc.store, "create_payload_index", real)
            out = await svc.update_collection("c", {"fields": {"when": "datetime"}})
            assert out["indexes"]["when"]["state"] == "building"
            await svc.indexes.wait("c")
            assert (await other.get_collection("c"))["indexes"]["when"]["state"] == "ready"
            await other.close()
        finally:
            await closing(svc)

    run(scenario())


def test_http_routes(tmp_path):
    async def scenario():
        svc = service("edge", tmp_path)
        app = create_app(svc)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
                r = await c.post("/v1/collections", json=PRODUCTS)
                assert r.status_code == 201 and r.json()["indexes"]["title"]["state"] == "ready"
                r = await c.post("/v1/collections/products/objects", json={"objects": ITEMS + [
                    item("bad", [1, 0], price="x")]})
                assert r.json()["results"][-1]["field"] == "objects.4.properties.price"
                r = await c.post("/v1/collections/products/search", json={
                    "filter": {"released": {"gte": "2023-01-01T00:00:00Z"}},
                    "order_by": {"field": "released", "direction": "desc"}})
                assert r.status_code == 200 and ids(r.json()) == ["p1", "p2"]
                r = await c.post("/v1/collections/products/search", json={"filter": {"colour": "red"}})
                assert r.status_code == 400 and r.json()["field"] == "filter.colour"
                r = await c.post("/v1/collections/products/search", json={
                    "near_vector": {"vector": [1, 0]}, "limit": 2, "diversity": {"mmr": {"lambda": 0.3}}})
                assert ids(r.json()) == ["p1", "p3"]
                r = await c.post("/v1/collections/products/search", json={
                    "near_vector": {"vector": [1, 0]}, "diversity": {"mmr": {"lambda": -1}}})
                assert r.status_code == 400 and r.json()["field"] == "diversity.mmr.lambda"
                r = await c.post("/v1/collections/products/facets", json={"field": "brand", "limit": 1})
                assert r.status_code == 200 and r.json()["values"] == [{"value": "Fleet", "count": 2}]
                r = await c.post("/v1/collections/products/facets", json={"field": "price"})
                assert r.status_code == 400 and r.json()["field"] == "field"
                r = await c.post("/v1/collections/ghost/facets", json={"field": "brand"})
                assert r.status_code == 404
                r = await c.patch("/v1/collections/products", json={"fields": {"colour": "keyword"}})
                assert r.status_code == 200
                assert r.json()["indexes"]["colour"]["state"] in ("building", "ready")
                await svc.indexes.wait("products")
                r = await c.get("/v1/collections/products")
                assert r.json()["indexes"]["colour"]["state"] == "ready"
                r = await c.patch("/v1/collections/products", json={"fields": {"price": "integer"}})
                assert r.status_code == 400 and r.json()["field"] == "fields.price"
                r = await c.post("/v1/collections/products/bm25/reindex")
                assert r.status_code == 200 and r.json()["objects"] == 4
                r = await c.post("/v1/collections/products/bm25/reindex", json={"avg_len": 0})
                assert r.status_code == 400 and r.json()["field"] == "avg_len"
        finally:
            await closing(svc)

    run(scenario())


def test_grpc_mirrors_the_new_routes(tmp_path):
    import grpc
    from google.protobuf import json_format, struct_pb2

    from gateway.grpc_api import start_grpc_server
    from protos import gateway_pb2 as pb
    from protos import gateway_pb2_grpc

    def struct(data: dict) -> struct_pb2.Struct:
        out = struct_pb2.Struct()
        out.update(data)
        return out

    async def scenario():
        svc = service("qdrant", tmp_path)
        server, port = await start_grpc_server(svc, "127.0.0.1", 0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                definition = json_format.ParseDict(
                    {**PRODUCTS, "fields": {k: v if isinstance(v, dict) else {"type": v}
                                            for k, v in FIELDS.items()}}, pb.CollectionDefinition())
                created = await stub.CreateCollection(definition)
                assert created.definition.fields["tags"].type == "keyword[]"
                assert created.indexes["price"].state == "ready"
                out = await stub.ImportObjects(pb.ImportObjectsRequest(collection="products", objects=[
                    pb.ObjectIn(id=o["id"], properties=struct(o["properties"]),
                                vectors={"v": pb.FloatList(values=o["vectors"]["v"])}) for o in ITEMS]))
                assert out.ok == len(ITEMS)
                res = await stub.Search(pb.SearchRequest(collection="products", filter=struct(
                    {"in_stock": True}), order_by=pb.OrderBy(field="price", direction="desc")))
                assert [h.id for h in res.hits] == ["p1", "p3"]
                mmr = pb.Mmr(candidates=10)
                setattr(mmr, "lambda", 0.3)
                res = await stub.Search(pb.SearchRequest(collection="products", limit=2,
                                                         near_vector=pb.NearVector(vector=[1, 0]),
                                                         diversity=pb.Diversity(mmr=mmr)))
                assert [h.id for h in res.hits] == ["p1", "p3"]
                facets = await stub.Facets(pb.FacetsRequest(collection="products", field="in_stock",
                                                            exact=True))
                assert {v.value.bool_value: v.count for v in facets.values} == {True: 2, False: 1}
                updated = await stub.UpdateCollection(pb.UpdateCollectionRequest(
                    name="products", fields={"colour": pb.FieldDeclaration(type="keyword")}))
                assert updated.definition.fields["colour"].type == "keyword"
                assert updated.indexes["colour"].state in ("building", "ready")
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Search(pb.SearchRequest(collection="products", filter=struct({"nope": 1})))
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert dict(info.value.trailing_metadata())["field"] == "filter.nope"
                reindexed = await stub.ReindexBm25(pb.ReindexBm25Request(collection="products",
                                                                         bm25=pb.Bm25(language="english")))
                assert reindexed.objects == 4 and reindexed.bm25.analyzer == "qdrant"
                assert reindexed.avg_len > 0
        finally:
            await server.stop(None)
            await closing(svc)

    run(scenario())


def mmr_order(query, vectors: dict[str, list[float]], lam: float, limit: int) -> list[str]:
    """Maximal marginal relevance over unit vectors, computed here (cosine similarity)."""
    import numpy as np

    unit = {k: np.asarray(v) / np.linalg.norm(v) for k, v in vectors.items()}
    q = np.asarray(query) / np.linalg.norm(query)
    pool = sorted(unit, key=lambda k: -float(unit[k] @ q))
    chosen = [pool.pop(0)]
    while pool and len(chosen) < limit:
        scores = {k: lam * float(unit[k] @ q) - (1 - lam) * max(float(unit[k] @ unit[c]) for c in chosen)
                  for k in pool}
        best, second = sorted(scores.values(), reverse=True)[:2] if len(scores) > 1 else (0.0, -1.0)
        assert best - second > 1e-3  # no near tie: the engines' choice is determined
        pick = max(scores, key=scores.__getitem__)
        pool.remove(pick)
        chosen.append(pick)
    return chosen


@pytest.mark.parametrize("kind", STORES)
def test_diversity_on_near_text_and_near_image(kind, tmp_path):
    import base64

    from tests.gateway_support import gateway_with_inference, png_bytes

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    titles = {"a": "red apple", "b": "red apple fresh", "c": "red apple juicy", "d": "green grass apple",
              "e": "blue sky"}
    colours = {"a": "red", "b": "yellow", "c": "white", "d": "green", "e": "blue"}

    async def scenario():
        async with gateway_with_inference(make_store(kind, tmp_path)) as (svc, inference):
            vectorizers = {"t": {"model": "clip", "text_fields": ["title"]},
                           "i": {"model": "clip", "image_fields": ["photo"]}}
            await svc.create_collection({"name": "m", "vectorizers": vectorizers})
            await svc.import_objects("m", {"objects": [
                {"id": k, "properties": {"title": t, "photo": b64(png_bytes(colours[k]))}}
                for k, t in titles.items()]})
            text_vectors = {k: inference.text_vector(t).tolist() for k, t in titles.items()}
            query = inference.text_vector("red apple pie").tolist()
            for lam in (1.0, 0.5, 0.1):
                got = await svc.search("m", {"near_text": {"query": "red apple pie"}, "vector": "t",
                                             "limit": 3, "diversity": {"mmr": {"lambda": lam}}})
                assert ids(got) == mmr_order(query, text_vectors, lam, 3), lam
            plain = await svc.search("m", {"near_text": {"query": "red apple pie"}, "vector": "t",
                                           "limit": 3})
            diverse = await svc.search("m", {"near_text": {"query": "red apple pie"}, "vector": "t",
                                             "limit": 3, "diversity": {"mmr": {"lambda": 0.1}}})
            assert ids(plain) != ids(diverse)
            got = await svc.search("m", {"near_image": {"image": b64(png_bytes("red"))},
                                         "vector": "i", "limit": 2, "diversity": {"mmr": {"lambda": 0.2}}})
            image_vectors = {k: (await svc.get_object("m", k, with_vectors=True))["vectors"]["i"]
                             for k in titles}
            assert ids(got) == mmr_order(image_vectors["a"], image_vectors, 0.2, 2)

    run(scenario())
