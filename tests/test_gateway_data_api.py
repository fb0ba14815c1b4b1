"""Getting data out and in bulk: scroll (cursor), count, delete by filter or ids, batch search, limits.

The service layer runs on both storage adapters against real inference servers (tests.real_gateway);
the HTTP and gRPC fronts are checked over loopback, including a bad-input table for every new field.
"""

from __future__ import annotations

import asyncio
import base64
import io
import random
import re

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from PIL import Image

from gateway.errors import BadRequest, NotFound
from gateway.service.paging import decode_cursor, encode_cursor
from protos import gateway_pb2 as pb
from protos import gateway_pb2_grpc
from tests.gateway_support import make_store
from tests.gateway_thread import GatewayThread, gateway_with_models

STORES = ["edge", "qdrant"]
COLOURS = ["red", "green", "blue"]


def run(coro):
    return asyncio.run(coro)


def png(rgb: tuple[int, int, int], size: tuple[int, int] = (16, 16)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


DEFINITION = {"name": "items", "vectorizers": {"main": {"model": "fake", "text_fields": ["title"],
                                                        "image_fields": ["photo"]}}}


def objects(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"item-{i:04d}", "properties": {"title": f"{COLOURS[i % 3]} thing number {i}", "n": i,
                                                  "colour": COLOURS[i % 3]}}
            for i in range(start, start + n)]


async def seeded(svc, n: int = 30) -> None:
    await svc.create_collection(DEFINITION)
    out = await svc.import_objects("items", {"objects": objects(n)})
    assert out["errors"] == 0, out


async def scroll_ids(svc, body: dict) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await svc.scroll_objects("items", {**body, "cursor": cursor})
        ids += [o["id"] for o in page["objects"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return ids, pages


# ---------------------------------------------------------------------------------------------- cursor
def test_cursor_is_opaque_and_checked():
    pid = "8d2c0a5e-9d5c-4f0c-9b8e-2f0c4a1e7b11"
    cursor = encode_cursor(pid)
    assert pid not in cursor and decode_cursor(cursor) == pid
    # URL-safe as it is, without base64 padding (it may travel in a query string unescaped)
    assert re.fullmatch(r"[A-Za-z0-9_-]{23}", cursor), cursor
    assert encode_cursor(None) is None and decode_cursor(None) is None
    for bad in ["", "abc", cursor[:-2], "!!!!", base64.urlsafe_b64encode(b"\x02" + b"x" * 16).decode()]:
        with pytest.raises(BadRequest) as info:
            decode_cursor(bad)
        assert info.value.field == "cursor"
        assert info.value.detail == "is not a cursor this API returned (pass next_cursor back unchanged)"


# ---------------------------------------------------------------------------------------------- service
@pytest.mark.parametrize("kind", STORES)
def test_scroll_count_delete(kind, tmp_path):
    async def scenario():
        async with gateway_with_models(make_store(kind, tmp_path)) as (svc, _):
            await seeded(svc, 30)
            ids, pages = await scroll_ids(svc, {"limit": 7})
            assert sorted(ids) == [f"item-{i:04d}" for i in range(30)] and len(set(ids)) == 30
            assert pages == 5
            page = await svc.scroll_objects("items", {"limit": 3, "properties": ["n"], "with_vectors": True})
            for o in page["objects"]:
                assert set(o["properties"]) == {"n"} and len(o["vectors"]["main"]) == 24
                assert o["id"].startswith("item-") and o["uuid"]
            blue, _ = await scroll_ids(svc, {"limit": 4, "filter": {"colour": "blue"}})
            assert sorted(blue) == [f"item-{i:04d}" for i in range(30) if i % 3 == 2]

            assert (await svc.count_objects("items"))["count"] == 30
            assert (await svc.count_objects("items", {"filter": {"n": {"lt": 10}}}))["count"] == 10
            assert (await svc.count_objects("items", {"filter": {"colour": "red"}, "exact": False}))[
                "count"] <= 30

            # delete by ids: only those present count
            out = await svc.delete_objects("items", {"ids": ["item-0000", "item-0001", "nope", "item-0000"]})
            assert out == {"deleted": 2}
            # by filter: the count is exact
            out = await svc.delete_objects("items", {"filter": {"colour": "green", "n": {"gte": 10}}})
            assert out == {"deleted": 7}
            assert (await svc.count_objects("items"))["count"] == 21
            # a filter matching everything, an empty filter, no filter: all refused without "all": true
            for body, field in [({"filter": {"n": {"gte": 0}}}, "all"), ({"filter": {}}, "all"),
                                ({}, "filter"), ({"all": False}, "filter")]:
                with pytest.raises(BadRequest) as info:
                    await svc.delete_objects("items", body)
                assert info.value.field == field, body
            assert (await svc.count_objects("items"))["count"] == 21
            assert (await svc.delete_objects("items", {"filter": {"n": {"gte": 0}}, "all": True}))[
                "deleted"] == 21
            await svc.import_objects("items", {"objects": objects(5)})
            assert (await svc.delete_objects("items", {"all": True}))["deleted"] == 5
            assert (await svc.count_objects("items"))["count"] == 0
            assert (await svc.scroll_objects("items", {}))["objects"] == []
            for call in (svc.scroll_objects("ghost", {}), svc.count_objects("ghost"),
                         svc.delete_objects("ghost", {"all": True})):
                with pytest.raises(NotFound):
                    await call

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_scroll_stable_while_importing(kind, tmp_path):
    """Imports and deletes between pages: every object that stays is seen exactly once."""

    async def scenario():
        async with gateway_with_models(make_store(kind, tmp_path)) as (svc, _):
            await seeded(svc, 40)
            rng = random.Random(5)
            seen: list[str] = []
            deleted: set[str] = set()
            cursor = None
            step = 0
            while True:
                page = await svc.scroll_objects("items", {"limit": 6, "cursor": cursor})
                seen += [o["id"] for o in page["objects"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
                step += 1
                await svc.import_objects("items", {"objects": objects(3, start=1000 + 3 * step)})
                victim = f"item-{rng.randrange(40):04d}"
                if victim not in seen:
                    await svc.delete_objects("items", {"ids": [victim]})
                    deleted.add(victim)
            assert len(seen) == len(set(seen)), "an object came twice"
            originals = {f"item-{i:04d}" for i in range(40)}
            assert originals - deleted <= set(seen)
            assert not deleted & set(seen)

    run(scenario())


def two_model_definition() -> dict:
    return {"name": "items", "vectorizers": {
        "main": {"model": "fake", "text_fields": ["title"], "image_fields": ["photo"]},
        "other": {"model": "second", "text_fields": ["title"]}}}


def assert_same_ranking(got: list[dict], want: list[dict]) -> None:
    """The same hits in the same order, except that hits with equal scores may come in either order
    (the engine does not order ties), and a tie at the last place may be cut at a different hit."""
    assert [h["score"] for h in got] == pytest.approx([h["score"] for h in want])
    if not want:
        return
    last = want[-1]["score"]

    def groups(hits: list[dict]) -> list[tuple[float, set[str]]]:
        out: list[tuple[float, set[str]]] = []
        for h in hits:
            if h["score"] == pytest.approx(last):
                continue  # the cut-off tie: any of the tied hits may fill it
            if out and h["score"] == pytest.approx(out[-1][0]):
                out[-1][1].add(h["id"])
            else:
                out.append((h["score"], {h["id"]}))
        return out

    assert [ids for _, ids in groups(got)] == [ids for _, ids in groups(want)]
    wanted = {h["id"]: h["properties"] for h in want}
    for h in got:
        if h["id"] in wanted:
            assert h["properties"] == wanted[h["id"]], h["id"]


@pytest.mark.parametrize("kind", STORES)
def test_batch_search_matches_single_searches(kind, tmp_path):
    async def scenario():
        models = {"fake": {"dims": 24}, "second": {"dims": 16, "modalities": ("text",)}}
        async with gateway_with_models(make_store(kind, tmp_path), models) as (svc, running):
            await svc.create_collection(two_model_definition())
            objs = objects(24)
            objs[5]["properties"]["photo"] = png((220, 20, 20))
            objs[6]["properties"]["photo"] = png((20, 20, 220))
            assert (await svc.import_objects("items", {"objects": objs}))["errors"] == 0
            vec = (await svc.get_object("items", "item-0003", with_vectors=True))["vectors"]["main"]
            searches = [
                {"near_text": {"query": "red thing"}, "limit": 5},
                {"near_text": {"query": "blue thing"}, "vector": "other", "filter": {"n": {"gte": 6}}},
                {"near_image": {"image": png((200, 30, 30))}, "limit": 2, "properties": ["n"]},
                {"near_vector": {"vector": vec}, "limit": 3, "offset": 1},
                {"bm25": {"query": "number 7"}, "limit": 4},
                {"hybrid": {"query": "green number 4", "alpha": 0.4}, "limit": 5},
                {"hybrid": {"query": "green number 4", "alpha": 0.7, "fusion": "relative_score"},
                 "vector": "other", "limit": 5, "properties": ["colour"]},
                {"near_text": {"query": "red thing"}, "limit": 5},  # a repeated query is embedded once
            ]
            singles = [await svc.search("items", s) for s in searches]
            clients = {n: svc.pool.get(running[n].address) for n in ("fake", "second")}
            before = {n: c.calls for n, c in clients.items()}
            served_before = {n: running[n].vectorize_calls for n in clients}
            batches_before = {n: list(running[n].encoder.seen.batches) for n in clients}
            out = await svc.search_batch("items", {"searches": searches})
            # one Vectorize call per inference service for every query text and image of the batch
            assert {n: c.calls - before[n] for n, c in clients.items()} == {"fake": 1, "second": 1}
            served = {n: running[n].vectorize_calls - served_before[n] for n in clients}
            assert served == {"fake": 1, "second": 1}
            fake_new = running["fake"].encoder.seen.batches[len(batches_before["fake"]):]
            assert sorted(fake_new) == [("image", 1), ("text", 2)]  # 2 texts (one asked twice), 1 image
            assert len(out["results"]) == len(searches)
            for got, want in zip(out["results"], singles, strict=True):
                assert_same_ranking(got["hits"], want["hits"])
                assert got["took_ms"] > 0
            assert out["results"][2]["hits"][0]["id"] == "item-0005"

    run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_batch_search_one_bad_search_fails_alone(kind, tmp_path):
    async def scenario():
        async with gateway_with_models(make_store(kind, tmp_path)) as (svc, _):
            await seeded(svc, 12)
            good = {"near_text": {"query": "red thing"}, "limit": 3}
            searches = [
                good,
                {"hybrid": {"query": "x", "alpha": 2}},  # pydantic check
                {"near_vector": {"vector": [1.0, 2.0]}},  # wrong dimensions
                {"near_text": {"query": "a poison pill"}},  # the model rejects this text
                {"near_image": {"image": png((1, 2, 3), size=(13, 7))}},  # ... and this image
                {"near_image": {"image": "@@not base64"}},
                {"bm25": {"query": "thing"}, "filter": {"n": {"gt": "x"}}},
                {"near_text": {"query": "q"}, "vector": "nope"},
                {"near_text": {"query": "q"}, "bm25": {"query": "q"}},
                "not an object",
                good,
            ]
            out = await svc.search_batch("items", {"searches": searches})
            fields = [r.get("field") for r in out["results"]]
            assert fields == [None, "searches.1.hybrid.alpha", "searches.2.near_vector.vector",
                              "searches.3.near_text.query", "searches.4.near_image.image",
                              "searches.5.near_image.image", "searches.6.filter.n.gt", "searches.7.vector",
                              "searches.8.near_text|near_image|near_vector|bm25|neural_sparse|hybrid",
                              "searches.9", None]
            for r in out["results"][1:-1]:
                assert r["error"].startswith(r["field"] + ": ") and "hits" not in r
            assert "rejected" in out["results"][3]["error"]
            single = await svc.search("items", good)
            for r in (out["results"][0], out["results"][-1]):
                assert [h["id"] for h in r["hits"]] == [h["id"] for h in single["hits"]]
            # only bad searches: still 200, every one with its error
            out = await svc.search_batch("items", {"searches": searches[1:3]})
            assert [r["field"] for r in out["results"]] == ["searches.0.hybrid.alpha",
                                                            "searches.1.near_vector.vector"]

    run(scenario())


def test_batch_search_limits(tmp_path):
    async def scenario():
        async with gateway_with_models(make_store("edge", tmp_path), search_batch_size=3,
                                             max_page_size=5) as (svc, _):
            await seeded(svc, 6)
            s = {"bm25": {"query": "thing"}}
            assert len((await svc.search_batch("items", {"searches": [s] * 3}))["results"]) == 3
            cases = [({"searches": [s] * 4}, "searches"), ({"searches": []}, "searches"), ({}, "searches"),
                     ({"searches": [s], "extra": 1}, "extra"), ({"searches": s}, "searches")]
            for body, field in cases:
                with pytest.raises(BadRequest) as info:
                    await svc.search_batch("items", body)
                assert info.value.field == field, body
            with pytest.raises(BadRequest) as info:
                await svc.scroll_objects("items", {"limit": 6})
            assert info.value.field == "limit" and "MAX_PAGE_SIZE" in info.value.message
            assert len((await svc.scroll_objects("items", {"limit": 5}))["objects"]) == 5
            assert svc.limits() == {"import_batch_size": 1000, "max_page_size": 5, "search_batch_size": 3,
                                    "max_request_bytes": 64 * 1024 * 1024}

    run(scenario())


# ---------------------------------------------------------------------------------------------- HTTP
BAD_HTTP = [
    # (method, path, body, status, field)
    ("post", "objects/scroll", {"limit": 0}, 400, "limit"),
    ("post", "objects/scroll", {"limit": 1001}, 400, "limit"),
    ("post", "objects/scroll", {"limit": "many"}, 400, "limit"),
    ("post", "objects/scroll", {"cursor": "not-a-cursor"}, 400, "cursor"),
    ("post", "objects/scroll", {"cursor": 5}, 400, "cursor"),
    ("post", "objects/scroll", {"filter": {"n": {"gt": "x"}}}, 400, "filter.n.gt"),
    ("post", "objects/scroll", {"filter": "colour=red"}, 400, "filter"),
    ("post", "objects/scroll", {"properties": "n"}, 400, "properties"),
    ("post", "objects/scroll", {"with_vectors": "yes"}, 400, "with_vectors"),
    ("post", "objects/scroll", {"page": 2}, 400, "page"),
    ("get", "objects?limit=0", None, 400, "limit"),
    ("get", "objects?limit=abc", None, 400, "limit"),
    ("get", "objects?cursor=zzz", None, 400, "cursor"),
    ("post", "count", {"filter": {"n": {"bad": 1}}}, 400, "filter.n.bad"),
    ("post", "count", {"exact": "no"}, 400, "exact"),
    ("post", "count", {"where": {}}, 400, "where"),
    ("post", "objects/delete", {}, 400, "filter"),
    ("post", "objects/delete", {"filter": {}}, 400, "all"),
    ("post", "objects/delete", {"filter": {"n": {"gte": 0}}}, 400, "all"),
    ("post", "objects/delete", {"filter": {"n": []}}, 400, "filter.n"),
    ("post", "objects/delete", {"ids": []}, 400, "ids"),
    ("post", "objects/delete", {"ids": "item-1"}, 400, "ids"),
    ("post", "objects/delete", {"ids": [" "]}, 400, "ids"),
    ("post", "objects/delete", {"ids": ["a"], "filter": {"n": 1}}, 400, "ids"),
    ("post", "objects/delete", {"ids": [str(i) for i in range(1001)]}, 400, "ids"),
    ("post", "objects/delete", {"all": "true"}, 400, "all"),
    ("post", "search/batch", {}, 400, "searches"),
    ("post", "search/batch", {"searches": []}, 400, "searches"),
    ("post", "search/batch", {"searches": {"bm25": {"query": "x"}}}, 400, "searches"),
    ("post", "search/batch", {"searches": [{"bm25": {"query": "x"}}] * 65}, 400, "searches"),
    ("post", "search/batch", {"searches": [{"bm25": {"query": "x"}}], "mode": 1}, 400, "mode"),
]


def test_http_routes_and_bad_inputs(tmp_path):
    with GatewayThread(tmp_path, "edge") as gw, httpx.Client(base_url=gw.http_url, timeout=30) as c:
        assert c.post("/v1/collections", json=DEFINITION).status_code == 201
        assert c.post("/v1/collections/items/objects", json={"objects": objects(25)}).json()["ok"] == 25
        assert c.get("/v1/limits").json() == {"import_batch_size": 1000, "max_page_size": 1000,
                                              "search_batch_size": 64, "max_request_bytes": 64 * 1024 * 1024}
        ids, cursor = [], None
        while True:
            r = c.get("/v1/collections/items/objects", params={"limit": 10, **({"cursor": cursor} if cursor
                                                                                 else {})})
            assert r.status_code == 200, r.text
            ids += [o["id"] for o in r.json()["objects"]]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        assert sorted(ids) == [f"item-{i:04d}" for i in range(25)]
        r = c.post("/v1/collections/items/objects/scroll", json={"filter": {"colour": "red"}, "limit": 100,
                                                                  "properties": ["n"]})
        assert sorted(o["properties"]["n"] for o in r.json()["objects"]) == list(range(0, 25, 3))
        assert r.json()["next_cursor"] is None
        assert c.post("/v1/collections/items/count").json() == {"count": 25}  # no body: every object
        r = c.post("/v1/collections/items/count", json={"filter": {"colour": "red"}})
        assert r.json() == {"count": 9}
        r = c.post("/v1/collections/items/search/batch", json={"searches": [
            {"bm25": {"query": "number 3"}, "limit": 1}, {"bm25": {"query": "x"}, "limit": 0}]})
        assert r.status_code == 200
        first, second = r.json()["results"]
        assert first["hits"][0]["id"] == "item-0003" and second["field"] == "searches.1.limit"
        assert c.post("/v1/collections/items/objects/delete",
                      json={"filter": {"colour": "red"}}).json() == {"deleted": 9}
        assert c.post("/v1/collections/items/objects/delete",
                      json={"ids": ["item-0001", "item-0002"]}).json() == {"deleted": 2}
        for method, path, body, status, field in BAD_HTTP:
            r = c.request(method.upper(), f"/v1/collections/items/{path}", json=body)
            assert r.status_code == status, (path, body, r.text)
            assert r.json()["field"] == field, (path, body, r.json())
            assert "Traceback" not in r.text
        for path in ("objects/scroll", "count", "objects/delete", "search/batch"):
            r = c.post(f"/v1/collections/ghost/{path}", json={"all": True} if "delete" in path else
                       {"searches": [{"bm25": {"query": "x"}}]} if "batch" in path else {})
            assert r.status_code == 404, (path, r.text)
        assert c.get("/v1/collections/ghost/objects").status_code == 404
        assert c.post("/v1/collections/items/count").json() == {"count": 14}  # bad requests changed nothing
        spec = c.get("/openapi.json").json()["paths"]
        for path in ("/v1/collections/{name}/objects/scroll", "/v1/collections/{name}/objects",
                     "/v1/collections/{name}/count", "/v1/collections/{name}/objects/delete",
                     "/v1/collections/{name}/search/batch", "/v1/limits"):
            assert path in spec


# ---------------------------------------------------------------------------------------------- gRPC
def struct(**values) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def test_grpc_mirrors_http(tmp_path):
    with GatewayThread(tmp_path, "qdrant", api_keys=("k",)) as gw:
        meta = (("x-api-key", "k"),)
        with grpc.insecure_channel(gw.grpc_target) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            stub.CreateCollection(pb.CollectionDefinition(name="items", vectorizers={"main": pb.Vectorizer(
                model="fake", text_fields=["title"], image_fields=["photo"])}), metadata=meta)
            ins = [pb.ObjectIn(id=o["id"], properties=struct(**o["properties"])) for o in objects(12)]
            assert stub.ImportObjects(pb.ImportObjectsRequest(collection="items", objects=ins),
                                      metadata=meta).ok == 12
            limits = stub.GetLimits(pb.GetLimitsRequest(), metadata=meta)
            got = (limits.import_batch_size, limits.max_page_size, limits.search_batch_size)
            assert got == (1000, 1000, 64)
            ids, cursor = [], None
            while True:
                req = pb.ScrollObjectsRequest(collection="items", limit=5, filter=struct(n={"gte": 2}),
                                              properties=pb.PropertyList(names=["n"]), with_vectors=True)
                if cursor is not None:
                    req.cursor = cursor
                page = stub.ScrollObjects(req, metadata=meta)
                ids += [o.id for o in page.objects]
                assert all(set(o.properties) == {"n"} and len(o.vectors["main"].values) == 24
                           for o in page.objects)
                if not page.HasField("next_cursor"):
                    break
                cursor = page.next_cursor
            assert sorted(ids) == [f"item-{i:04d}" for i in range(2, 12)]
            assert stub.CountObjects(pb.CountObjectsRequest(collection="items"), metadata=meta).count == 12
            assert stub.CountObjects(pb.CountObjectsRequest(collection="items", filter=struct(colour="red"),
                                                            exact=True), metadata=meta).count == 4
            out = stub.SearchBatch(pb.SearchBatchRequest(collection="items", searches=[
                pb.SearchRequest(near_text=pb.NearText(query="blue thing"), limit=2),
                pb.SearchRequest(hybrid=pb.HybridQuery(query="x", alpha=3)),
                pb.SearchRequest(bm25=pb.Bm25Query(query="number 4"), limit=1),
            ]), metadata=meta)
            kinds = [r.WhichOneof("outcome") for r in out.results]
            assert kinds == ["response", "error", "response"]
            assert out.results[1].error.field == "searches.1.hybrid.alpha"
            assert out.results[2].response.hits[0].id == "item-0004"
            single = stub.Search(pb.SearchRequest(collection="items", limit=2,
                                                  near_text=pb.NearText(query="blue thing")), metadata=meta)
            assert [h.id for h in out.results[0].response.hits] == [h.id for h in single.hits]
            assert stub.DeleteObjects(pb.DeleteObjectsRequest(collection="items", ids=["item-0000", "zz"]),
                                      metadata=meta).deleted == 1
            red = pb.DeleteObjectsRequest(collection="items", filter=struct(colour="red"))
            assert stub.DeleteObjects(red, metadata=meta).deleted == 3

            bad = [
                (stub.ScrollObjects, pb.ScrollObjectsRequest(collection="items", limit=0), "limit"),
                (stub.ScrollObjects, pb.ScrollObjectsRequest(collection="items", limit=5000), "limit"),
                (stub.ScrollObjects, pb.ScrollObjectsRequest(collection="items", cursor="xyz"), "cursor"),
                (stub.ScrollObjects,
                 pb.ScrollObjectsRequest(collection="items", filter=struct(n={"gt": "a"})), "filter.n.gt"),
                (stub.CountObjects, pb.CountObjectsRequest(collection="items", filter=struct(n={"zz": 1})),
                 "filter.n.zz"),
                (stub.DeleteObjects, pb.DeleteObjectsRequest(collection="items"), "filter"),
                (stub.DeleteObjects, pb.DeleteObjectsRequest(collection="items", filter=struct()), "all"),
                (stub.DeleteObjects, pb.DeleteObjectsRequest(collection="items", filter=struct(n={"gte": 0})),
                 "all"),
                (stub.DeleteObjects, pb.DeleteObjectsRequest(collection="items", ids=["a"],
                                                             filter=struct(n=1)), "ids"),
                (stub.DeleteObjects, pb.DeleteObjectsRequest(collection="items", ids=[""]), "ids"),
                (stub.SearchBatch, pb.SearchBatchRequest(collection="items"), "searches"),
                (stub.SearchBatch, pb.SearchBatchRequest(collection="items", searches=[
                    pb.SearchRequest(bm25=pb.Bm25Query(query="x"))] * 65), "searches"),
            ]
            for method, request, field in bad:
                with pytest.raises(grpc.RpcError) as info:
                    method(request, metadata=meta)
                details = (request, info.value.details())
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, details
                assert ("field", field) in tuple(info.value.trailing_metadata()), details
            with pytest.raises(grpc.RpcError) as info:
                stub.CountObjects(pb.CountObjectsRequest(collection="ghost"), metadata=meta)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as info:
                stub.CountObjects(pb.CountObjectsRequest(collection="items"))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert stub.CountObjects(pb.CountObjectsRequest(collection="items"), metadata=meta).count == 8
