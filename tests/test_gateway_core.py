"""gateway/service/core.py on the embedded store, with no inference service: the refusals of
:class:`GatewayService` (field and exact message), its counts, how it maps storage errors, and what is
written or not written when a request fails part-way.

The collections here hold user-supplied vectors and BM25 only, so no model is needed; the paths that call
inference are covered by tests/test_gateway_service.py and friends (the real inference server). A mutation
run over core.py (docs/mutation-report.md) found these behaviours unpinned: the in-process tests checked
the error class and the field of most refusals, rarely the message, and never the storage error mapping.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewaySettings
from gateway.definitions import BM25_VECTOR, VectorizerConfig, parse_definition
from gateway.errors import BadRequest, Conflict, Forbidden, GatewayError, NotFound, Overloaded, Unavailable
from gateway.inference_client import InferenceBusy, InferenceMeta, InferenceUnavailable
from gateway.service import GatewayService
from gateway.service.collections import SparseInfo, StoredCollection, VectorInfo
from gateway.service.core import _object_out, _service_error, meta_problem
from gateway.service.vectors import object_uuid
from gateway.storage.base import (
    CollectionNotFound,
    FieldMatch,
    Filter,
    Mmr,
    PointRecord,
    StoreError,
    StoreUnavailable,
)
from tests.gateway_support import gateway_with_inference, make_store, png_bytes

OWN = {
    "name": "own",
    "vectorizers": {"v": {"dimensions": 2}},
    "bm25": {"fields": ["title"]},
    "fields": {
        "price": "float",
        "brand": "keyword",
        "tags": "keyword[]",
        "title": {"type": "text"},
        "notes": {"type": "text", "language": "german"},
    },
}


def item(key: str, vector: list[float] | None = None, **props: Any) -> dict[str, Any]:
    return {"id": key, "properties": props, "vectors": {"v": vector if vector is not None else [1.0, 0.0]}}


ITEMS = [
    item("a", [1.0, 0.0], title="red shoe", price=10.0, brand="x", tags=["t1"]),
    item("b", [0.9, 0.1], title="blue shoe", price=20.0, brand="y", tags=["t1", "t2"]),
    item("c", [0.0, 1.0], title="green bag", price=30.0, brand="x", tags=[]),
]


SHM = Path("/dev/shm")


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """Where the embedded store writes: a memory-backed tmpfs when there is one (its create and close
    fsync; on a loaded disk that is ten times the rest of a test, and a mutation run pays it per mutant)."""
    if not (SHM.is_dir() and os.access(SHM, os.W_OK)) or shutil.disk_usage(SHM).free < 2**30:
        # (a container's default /dev/shm is 64 MB: a shard's preallocated WAL alone is 32 MB)
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=SHM, prefix="polyvec-core-") as where:
        yield Path(where)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


NOT_AN_IMAGE = "images[0]: not a supported image (expected JPEG, PNG, WebP, GIF or BMP data)"
REJECTED_IMAGE = "inference service {} rejected it: " + NOT_AN_IMAGE


def run(coro):
    return asyncio.run(coro)


def service(data_dir, **settings: Any) -> GatewayService:
    return GatewayService(make_store("edge", data_dir), GatewaySettings.from_env({}, **settings))


async def closing(svc: GatewayService) -> None:
    await svc.close()
    svc.store.close()


def scenario(data_dir, body, *, seed: bool = True, **settings: Any) -> None:
    """Run ``body(svc)`` on a fresh service; with ``seed`` the collection ``own`` holds ITEMS."""

    async def go() -> None:
        svc = service(data_dir, **settings)
        try:
            if seed:
                await svc.create_collection(OWN)
                out = await svc.import_objects("own", {"objects": ITEMS})
                assert out["errors"] == 0, out
            await body(svc)
        finally:
            await closing(svc)

    run(go())


async def refused(
    call, field: str | None, message: str | None, kind: type[GatewayError] = BadRequest
) -> GatewayError:
    with pytest.raises(kind) as info:
        await call
    assert named(info.value) == field, info.value.to_dict()
    detail = getattr(info.value, "detail", info.value.message)
    assert message is None or detail == message, info.value.to_dict()
    return info.value


def named(err: GatewayError) -> str | None:
    """The field a refusal names, or the service an Unavailable / Overloaded names."""
    return getattr(err, "service", None) or err.field


async def stored_ids(svc: GatewayService, name: str = "own") -> list[str]:
    page = await svc.scroll_objects(name, {"limit": 100})
    return sorted(o["id"] for o in page["objects"])


BUSY = InferenceBusy("a:1", "queue full (64 waiting)", retry_after_s=2, shed=False)
SHED = InferenceBusy("a:1", "3 requests waiting", retry_after_s=1, shed=True)
DOWN = InferenceUnavailable("a:1", "connection refused")


# -- pure helpers ------------------------------------------------------------------------------------------


def meta(**kw: Any) -> InferenceMeta:
    base: dict[str, Any] = {"name": "m", "type": "t", "dimensions": 4, "modalities": ["text"]}
    return InferenceMeta(**{**base, **kw})


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({}, None),
        ({"modalities": ["text", "image"]}, None),
        ({"modalities": ["image"]}, None),
        ({"dimensions": 1}, None),
        ({"name": ""}, "its Meta names no model"),
        ({"dimensions": 0}, "its Meta gives no dimensions"),
        ({"modalities": []}, "its Meta gives no known modalities"),
        ({"modalities": ["text", "audio"]}, "its Meta gives no known modalities"),
    ],
)
def test_meta_problem(given, problem):
    assert meta_problem(meta(**given)) == problem


GIVEN_URL = VectorizerConfig(inference_url="peer:1", text_fields=["title"])
NAMED_MODEL = VectorizerConfig(model="clip", text_fields=["title"])


@pytest.mark.parametrize(
    ("exc", "vec", "kind", "message"),
    [
        (BUSY, None, Overloaded, "svc is overloaded (queue full (64 waiting)); retry in 2 s"),
        (BUSY, NAMED_MODEL, Overloaded, "svc is overloaded (queue full (64 waiting)); retry in 2 s"),
        # an address a caller chose: its own words are not passed on
        (BUSY, GIVEN_URL, Overloaded, "svc is overloaded (its queue is full); retry in 2 s"),
        # the gateway's own bound (shed): its words are the gateway's
        (SHED, GIVEN_URL, Overloaded, "svc is overloaded (3 requests waiting); retry in 1 s"),
        (DOWN, None, Unavailable, "svc is unavailable (connection refused)"),
        (DOWN, NAMED_MODEL, Unavailable, "svc is unavailable (connection refused)"),
        (DOWN, GIVEN_URL, Unavailable, "svc is unavailable (no answer)"),
    ],
)
def test_service_errors_429_for_busy_503_for_unavailable(exc, vec, kind, message):
    err = _service_error("svc", exc, vec)
    assert type(err) is kind and err.message == message and err.service == "svc"
    if isinstance(err, Overloaded):
        assert err.retry_after_s == exc.retry_after_s


def test_object_out_chooses_properties_and_vectors():
    rec = PointRecord(id="u1", dense={"v": [1.0, 2.0]}, payload={"_polyvec_id": "a", "x": 1, "y": 2})
    assert _object_out(rec, None, False) == {"id": "a", "uuid": "u1", "properties": {"x": 1, "y": 2}}
    out = _object_out(rec, ["y"], True)
    assert out["properties"] == {"y": 2} and out["vectors"] == {"v": [1.0, 2.0]}
    assert out["sparse_vectors"] == {}
    # a point written without the user's id (by another program): its UUID stands in
    bare = PointRecord(id="u2", dense={}, payload={"x": 1})
    assert _object_out(bare, None, False) == {"id": "u2", "uuid": "u2", "properties": {"x": 1}}


def test_limits_are_the_settings(data_dir):
    svc = service(data_dir, import_batch_size=7, max_page_size=8, search_batch_size=9, max_request_bytes=1234)
    try:
        assert svc.limits() == {
            "import_batch_size": 7,
            "max_page_size": 8,
            "search_batch_size": 9,
            "max_request_bytes": 1234,
        }
    finally:
        run(closing(svc))


# -- storage errors ----------------------------------------------------------------------------------------


def replace(svc: GatewayService, method: str, fn: Any) -> None:
    """Put ``fn`` in place of a store method (to inject a storage failure, or watch the calls)."""
    setattr(svc.store, method, fn)


def raising(exc: BaseException):
    def boom(*args: Any, **kwargs: Any) -> None:
        raise exc

    return boom


@pytest.mark.parametrize(
    ("exc", "kind", "field", "message"),
    [
        (StoreError("collection 'x' already exists"), Conflict, "name", "collection 'x' already exists"),
        (
            StoreError("filter.price: is not a number"),
            BadRequest,
            "filter.price",
            "filter.price: is not a number",
        ),
        (StoreError("order_by_field: bad"), BadRequest, "order_by_field", "order_by_field: bad"),
        (StoreError("no index for this: see docs"), BadRequest, None, "no index for this: see docs"),
        (StoreError("plain text"), BadRequest, None, "plain text"),
        (StoreUnavailable("connection reset"), Unavailable, "qdrant", "connection reset"),
        (CollectionNotFound("gone"), NotFound, None, "collection 'gone' not found"),
        (NotFound("kept as it is"), NotFound, None, "kept as it is"),
        (
            RuntimeError("disk on fire"),
            Unavailable,
            "storage",
            "the storage backend failed: RuntimeError: disk on fire",
        ),
    ],
)
def test_db_maps_storage_errors(data_dir, exc, kind, field, message):
    async def body(svc: GatewayService) -> None:
        with pytest.raises(kind) as info:
            await svc._db(raising(exc))
        assert type(info.value) is kind
        assert named(info.value) == field and info.value.message == message
        labels = {"store": "edge", "operation": "boom", "outcome": "error"}
        assert svc.metrics.registry.get_sample_value("polyvec_gateway_store_seconds_count", labels) == 1

    scenario(data_dir, body, seed=False)


def test_db_returns_the_result_and_counts_ok(data_dir):
    async def body(svc: GatewayService) -> None:
        def add(a: int, b: int = 0) -> int:
            return a + b

        assert await svc._db(add, 2, b=3) == 5
        labels = {"store": "edge", "operation": "add", "outcome": "ok"}
        assert svc.metrics.registry.get_sample_value("polyvec_gateway_store_seconds_count", labels) == 1
        labels["outcome"] = "error"
        assert not svc.metrics.registry.get_sample_value("polyvec_gateway_store_seconds_count", labels)

    scenario(data_dir, body, seed=False)


def test_a_collection_gone_from_the_store_is_forgotten(data_dir):
    async def body(svc: GatewayService) -> None:
        await svc.get_collection("own")
        assert "own" in svc._definitions
        await refused(
            svc._db(raising(CollectionNotFound("own"))), None, "collection 'own' not found", NotFound
        )
        assert "own" not in svc._definitions

    scenario(data_dir, body, definition_cache_s=60)


# -- model addresses ---------------------------------------------------------------------------------------


def test_unknown_models_and_inference_urls(data_dir):
    async def body(svc: GatewayService) -> None:
        assert svc._address("clip", None, "vectorizers.v", "vector 'v'") == (
            "h:1",
            "inference service for model 'clip' at h:1",
        )
        with pytest.raises(BadRequest) as info:
            svc._address("nope", None, "vectorizers.v", "vector 'v'", creating=True)
        assert info.value.field == "vectorizers.v.model"
        assert info.value.detail == "unknown model 'nope'; known models: clip, minilm"
        with pytest.raises(BadRequest) as info:
            svc._address("nope", None, "sparse_vectorizers.s", "x", creating=True, model_key="query_model")
        assert info.value.field == "sparse_vectorizers.s.query_model"
        with pytest.raises(Unavailable) as info:
            svc._address(None, None, "vectorizers.v", "vector 'v'")
        assert info.value.service == "model None"
        assert info.value.message == "model None is not configured here (MODELS knows: clip, minilm)"
        with pytest.raises(BadRequest) as info:
            svc._address(None, "evil:80", "vectorizers.v", "vector 'v'", creating=True)
        assert info.value.field == "vectorizers.v.inference_url"
        assert info.value.detail == (
            "'evil:80' is not allowed: this gateway only uses the models of MODELS "
            "(INFERENCE_URL_HOSTS is empty); name a model instead"
        )
        with pytest.raises(Forbidden) as info:
            svc._address(None, "evil:80", "vectorizers.v", "vector 'v'", url_key="query_inference_url")
        assert info.value.message == (
            "vector 'v' names query_inference_url 'evil:80', which is no longer "
            "allowed: this gateway only uses the models of MODELS "
            "(INFERENCE_URL_HOSTS is empty)"
        )

    scenario(data_dir, body, seed=False, models={"clip": "h:1", "minilm": "h:2"})


def test_inference_urls_against_the_allow_list(data_dir):
    async def body(svc: GatewayService) -> None:
        assert svc._address(None, "good:50051", "w", "x") == ("good:50051", "inference service good:50051")
        with pytest.raises(BadRequest) as info:
            svc._address(None, "evil:80", "w", "x", creating=True)
        assert (
            info.value.detail
            == "'evil:80' is not allowed: INFERENCE_URL_HOSTS does not list it; name a model instead"
        )
        with pytest.raises(Unavailable) as info:
            svc._address("clip", None, "w", "x")
        assert info.value.message == (
            "model 'clip' is not configured here (MODELS knows: none (set MODELS=name=host:port,...))"
        )

    scenario(data_dir, body, seed=False, inference_url_hosts=("good",))


# -- collections -------------------------------------------------------------------------------------------


def test_create_refuses_a_taken_name_and_reports_indexes(data_dir):
    async def body(svc: GatewayService) -> None:
        created = await svc.create_collection(OWN)
        assert {k: v["state"] for k, v in created["indexes"].items()} == dict.fromkeys(OWN["fields"], "ready")
        plain = await svc.create_collection({"name": "plain", "vectorizers": {"v": {"dimensions": 2}}})
        assert "indexes" not in plain
        await refused(svc.create_collection(OWN), "name", "name: collection 'own' already exists", Conflict)
        # a store collection without a definition (another program's) is taken too
        await asyncio.to_thread(svc.store.delete_definition, "plain")
        await refused(
            svc.create_collection({"name": "plain", "vectorizers": {"v": {"dimensions": 2}}}),
            "name",
            "name: collection 'plain' already exists",
            Conflict,
        )
        for bad in ("", None, 3):
            await refused(svc.get_collection(bad), "name", "collection name must be a non-empty string")
            await refused(svc.delete_collection(bad), "name", "collection name must be a non-empty string")

    scenario(data_dir, body, seed=False)


@pytest.mark.parametrize("failing", ["create_payload_index", "save_definition"])
def test_a_create_that_fails_part_way_leaves_nothing(data_dir, failing):
    async def body(svc: GatewayService) -> None:
        replace(svc, failing, raising(StoreError(f"{failing}: refused")))
        await refused(svc.create_collection(OWN), failing, "refused")
        assert not await asyncio.to_thread(svc.store.collection_exists, "own")
        assert await asyncio.to_thread(svc.store.load_definition, "own") is None
        await refused(svc.get_collection("own"), None, "collection 'own' not found", NotFound)

    scenario(data_dir, body, seed=False)


def test_get_update_and_delete_collection(data_dir):
    async def body(svc: GatewayService) -> None:
        got = await svc.get_collection("own")
        assert got["count"] == 3 and got["indexes"]["brand"]["state"] == "ready"
        assert [c["name"] for c in await svc.list_collections()] == ["own"]
        await refused(
            svc.update_collection("own", {"fields": {"brand": "integer"}}),
            "fields.brand",
            "already declared as keyword; a declared type cannot change",
        )
        await refused(
            svc.update_collection("own", {"fields": {"title": {"type": "text", "language": "german"}}}),
            "fields.title",
            "already declared as text; a declared type cannot change",
        )
        await refused(
            svc.update_collection("own", {"fields": {"notes": "keyword"}}),
            "fields.notes",
            "already declared as text (german); a declared type cannot change",
        )
        await refused(
            svc.update_collection("own", {"fields": {"n": 3}}),
            "fields.n",
            'give a type name or {"type": ..., "language": ...}',
        )
        out = await svc.update_collection("own", {"fields": {"brand": "keyword", "n": "integer"}})
        assert out["count"] == 3 and out["fields"]["n"] == {"type": "integer"}
        assert set(out["indexes"]) == {*OWN["fields"], "n"}
        await refused(
            svc.update_collection("nope", {"fields": {"n": "integer"}}),
            None,
            "collection 'nope' not found",
            NotFound,
        )
        assert await svc.delete_collection("own") == {"name": "own", "deleted": True}
        assert not await asyncio.to_thread(svc.store.collection_exists, "own")
        assert await asyncio.to_thread(svc.store.load_definition, "own") is None
        await refused(svc.delete_collection("own"), None, "collection 'own' not found", NotFound)
        assert await svc.list_collections() == []

    scenario(data_dir, body)


# -- objects -----------------------------------------------------------------------------------------------


def test_import_counts_and_writes_only_the_good_objects(data_dir):
    async def body(svc: GatewayService) -> None:
        out = await svc.import_objects(
            "own",
            {
                "objects": [
                    item("a", [0.6, 0.8], title="again"),  # replaces the stored a: still "ok"
                    item("d", [1.0, 2.0, 3.0]),  # wrong dimensions
                    item("e", [0.1, 0.2], price="cheap"),  # a declared float
                    item("f", [0.3, 0.4]),
                    item("f", [0.4, 0.3], title="later"),  # the same id later in the request wins
                ]
            },
        )
        statuses = [r["status"] for r in out["results"]]
        assert statuses == ["ok", "error", "error", "replaced", "ok"], out
        assert (out["ok"], out["errors"], out["replaced"]) == (2, 2, 1)
        assert out["results"][1]["field"] == "objects.1.vectors.v"
        assert out["results"][2]["field"] == "objects.2.properties.price"
        assert await stored_ids(svc) == ["a", "b", "c", "f"]
        got = await svc.get_object("own", "f")
        assert got == {"id": "f", "uuid": object_uuid("f"), "properties": {"title": "later"}}
        got = await svc.get_object("own", "a", with_vectors=True)
        assert got["vectors"] == {"v": pytest.approx([0.6, 0.8])} and got["sparse_vectors"] == {}
        sample = svc.metrics.registry.get_sample_value
        assert sample("polyvec_gateway_import_objects_total", {"result": "ok"}) == 3 + 2
        assert sample("polyvec_gateway_import_objects_total", {"result": "failed"}) == 2

    scenario(data_dir, body)


def test_an_import_where_every_object_fails_writes_nothing(data_dir):
    async def body(svc: GatewayService) -> None:
        calls: list[int] = []
        upsert = svc.store.upsert
        replace(svc, "upsert", lambda name, points: (calls.append(len(points)), upsert(name, points))[1])
        out = await svc.import_objects("own", {"objects": [item("x", [1.0]), item("y", [1.0])]})
        assert (out["ok"], out["errors"], out["replaced"]) == (0, 2, 0) and calls == []
        out = await svc.import_objects("own", {"objects": [item("x"), item("y", [1.0])]})
        assert (out["ok"], out["errors"]) == (1, 1) and calls == [1]

    scenario(data_dir, body)


def test_import_and_delete_batch_limits(data_dir):
    async def body(svc: GatewayService) -> None:
        await svc.create_collection(OWN)
        await refused(
            svc.import_objects("own", {"objects": [item(str(i)) for i in range(3)]}),
            "objects",
            "at most 2 objects per request (IMPORT_BATCH_SIZE), got 3",
        )
        out = await svc.import_objects("own", {"objects": [item("d"), item("e")]})
        assert out["ok"] == 2
        await refused(
            svc.delete_objects("own", {"ids": ["d", "e", "f"]}),
            "ids",
            "at most 2 ids per request (IMPORT_BATCH_SIZE), got 3",
        )
        assert (await svc.delete_objects("own", {"ids": ["d", "e"]})) == {"deleted": 2}
        await refused(
            svc.import_objects("nope", {"objects": [item("d")]}),
            None,
            "collection 'nope' not found",
            NotFound,
        )

    scenario(data_dir, body, seed=False, import_batch_size=2)


def test_get_put_and_delete_one_object(data_dir):
    async def body(svc: GatewayService) -> None:
        await refused(
            svc.get_object("own", "zz"), None, "object 'zz' not found in collection 'own'", NotFound
        )
        await refused(
            svc.delete_object("own", "zz"), None, "object 'zz' not found in collection 'own'", NotFound
        )
        # a point another program wrote, without the user's id: its UUID stands in
        foreign = "6f1f7c4e-8d2a-4c3b-9a55-0d1e2f3a4b5c"
        point = PointRecord(id=foreign, dense={"v": [-1.0, 0.0]}, payload={"x": 1})
        await asyncio.to_thread(svc.store.upsert, "own", [point])
        assert await svc.get_object("own", foreign) == {
            "id": foreign,
            "uuid": foreign,
            "properties": {"x": 1},
        }
        got = await svc.search("own", {"near_vector": {"vector": [-1.0, 0.0]}, "limit": 1})
        assert got["hits"][0]["id"] == foreign and got["took_ms"] >= 0
        assert await svc.delete_object("own", foreign) == {"id": foreign, "deleted": True}
        put = await svc.put_object("own", "z", {"properties": {"title": "new"}, "vectors": {"v": [0.0, 1.0]}})
        assert put["status"] == "ok" and put["created"] is True and put["vectorized"] == []
        put = await svc.put_object(
            "own", "z", {"properties": {"title": "newer"}, "vectors": {"v": [1.0, 1.0]}}
        )
        assert put["created"] is False and put["id"] == "z"
        await refused(
            svc.put_object("own", "z", {"properties": {"price": "free"}, "vectors": {"v": [1, 0]}}),
            "properties.price",
            "must be a number (float field), got a string",
        )
        await refused(
            svc.put_object("own", "z", {"properties": {}, "vectors": {"v": [1, 0, 0]}}),
            "vectors.v",
            "has 3 dimensions, the collection expects 2",
        )
        assert (await svc.get_object("own", "z"))["properties"] == {"title": "newer"}
        assert await svc.delete_object("own", "z") == {"id": "z", "deleted": True}
        assert await stored_ids(svc) == ["a", "b", "c"]

    scenario(data_dir, body)


def test_scroll_and_count(data_dir):
    async def body(svc: GatewayService) -> None:
        await refused(
            svc.scroll_objects("own", {"limit": 4}),
            "limit",
            "at most 3 objects per page (MAX_PAGE_SIZE), got 4",
        )
        page = await svc.scroll_objects("own", {"limit": 2, "properties": ["brand"]})
        assert len(page["objects"]) == 2 and page["next_cursor"]
        assert all(set(o["properties"]) <= {"brand"} and o["properties"] for o in page["objects"])
        assert all("vectors" not in o for o in page["objects"])
        rest = await svc.scroll_objects(
            "own", {"limit": 3, "cursor": page["next_cursor"], "with_vectors": True}
        )
        assert len(rest["objects"]) == 1 and rest["next_cursor"] is None
        assert rest["objects"][0]["vectors"]["v"]
        ids = sorted(o["id"] for o in page["objects"] + rest["objects"])
        assert ids == ["a", "b", "c"]
        assert all(set(o["properties"]) == {"title", "price", "brand", "tags"} for o in rest["objects"])
        # the filter applies; a page of one property still shows the user's ids
        calls = spy(svc, "scroll")
        only_x = await svc.scroll_objects(
            "own", {"filter": {"brand": "x"}, "properties": ["price"], "limit": 3}
        )
        assert sorted((o["id"], o["properties"]["price"]) for o in only_x["objects"]) == [
            ("a", 10.0),
            ("c", 30.0),
        ]
        assert only_x["next_cursor"] is None and calls[0]["limit"] == 3 and calls[0]["cursor"] is None
        assert calls[0]["with_vectors"] is False and calls[0]["with_payload"] == ["price", "_polyvec_id"]
        await refused(
            svc.scroll_objects("own", {"cursor": "garbage", "limit": 1}),
            "cursor",
            "is not a cursor this API returned (pass next_cursor back unchanged)",
        )
        await refused(
            svc.scroll_objects("own", {"filter": {"price": {"gte": "x"}}, "limit": 1}),
            "filter.price.gte",
            None,
        )
        await refused(svc.scroll_objects("nope", {"limit": 1}), None, "collection 'nope' not found", NotFound)
        assert await svc.count_objects("own") == {"count": 3}
        assert await svc.count_objects("own", {"filter": {"brand": "x"}}) == {"count": 2}
        counted: list[tuple[Any, ...]] = []
        count = svc.store.count
        replace(svc, "count", lambda *args: (counted.append(args[1:]), count(*args))[1])
        assert await svc.count_objects("own", {"filter": {"brand": "x"}, "exact": False}) == {"count": 2}
        assert await svc.count_objects("own", {"exact": True}) == {"count": 3}
        assert counted == [(Filter(must=[FieldMatch("brand", "x")]), False), (None, True)]
        await refused(svc.count_objects("nope"), None, "collection 'nope' not found", NotFound)

    scenario(data_dir, body, max_page_size=3)


def test_delete_objects_refusals_and_exact_counts(data_dir):
    async def body(svc: GatewayService) -> None:
        await refused(
            svc.delete_objects("own", {"ids": ["a"], "filter": {"brand": "x"}}),
            "ids",
            "give ids or filter, not both",
        )
        await refused(
            svc.delete_objects("own", {}),
            "filter",
            'give a filter or ids (or "all": true to delete every object)',
        )
        await refused(
            svc.delete_objects("own", {"filter": {}}),
            "all",
            'an empty filter matches every object: send "all": true to delete them all',
        )
        await refused(
            svc.delete_objects("own", {"filter": {"price": {"gte": 0}}}),
            "all",
            'the filter matches every object in the collection (3): send "all": true to delete them all',
        )
        assert await stored_ids(svc) == ["a", "b", "c"]
        assert await svc.delete_objects("own", {"ids": ["a", "a", "zz"]}) == {"deleted": 1}
        assert await svc.delete_objects("own", {"ids": ["zz"]}) == {"deleted": 0}
        assert await svc.delete_objects("own", {"filter": {"brand": "x"}}) == {"deleted": 1}
        assert await stored_ids(svc) == ["b"]
        assert await svc.delete_objects("own", {"filter": {"brand": "y"}, "all": True}) == {"deleted": 1}
        assert await svc.delete_objects("own", {"all": True}) == {"deleted": 0}
        # an empty collection: a filter cannot match "every object" of none
        assert await svc.delete_objects("own", {"filter": {"brand": "y"}}) == {"deleted": 0}

    scenario(data_dir, body)


def test_delete_everything_with_all(data_dir):
    async def body(svc: GatewayService) -> None:
        assert await svc.delete_objects("own", {"all": True}) == {"deleted": 3}
        assert await stored_ids(svc) == []

    scenario(data_dir, body)


# -- search ------------------------------------------------------------------------------------------------

WORDS = {"name": "words", "vectorizers": {}, "bm25": {"fields": ["title"]}}
TWO = {"name": "two", "vectorizers": {"v": {"dimensions": 2}, "w": {"dimensions": 2}}, "bm25": {"fields": []}}


def hit_ids(result: dict[str, Any]) -> list[str]:
    return [h["id"] for h in result["hits"]]


def spy(svc: GatewayService, method: str) -> list[dict[str, Any]]:
    """Record the keyword arguments of each call of a store method (the call still runs)."""
    calls: list[dict[str, Any]] = []
    real = getattr(svc.store, method)

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real(*args, **kwargs)

    recording.__name__ = method
    replace(svc, method, recording)
    return calls


VEC = {"near_vector": {"vector": [1.0, 0.0]}}
NO_MODEL = "vector 'v' holds user-supplied vectors and has no model; use near_vector"
SEARCH_REFUSALS = [
    (
        "order_by on a query",
        "own",
        {**VEC, "order_by": {"field": "price"}},
        "order_by",
        "orders searches without a query; near_vector hits come best first",
    ),
    (
        "diversity on bm25",
        "own",
        {"bm25": {"query": "shoe"}, "diversity": {"mmr": {}}},
        "diversity",
        "applies to near_text, near_image, near_vector searches, not bm25",
    ),
    (
        "too few mmr candidates",
        "own",
        {**VEC, "limit": 5, "offset": 2, "diversity": {"mmr": {"candidates": 6}}},
        "diversity.mmr.candidates",
        "must be at least limit + offset (7)",
    ),
    (
        "order by an undeclared field",
        "own",
        {"order_by": {"field": "nope"}},
        "order_by.field",
        "'nope' is not a declared field; declare it as integer, float or datetime (PATCH fields) to order "
        "by it",
    ),
    (
        "order by a keyword",
        "own",
        {"order_by": {"field": "brand"}},
        "order_by.field",
        "'brand' is a keyword field; only integer, float and datetime fields can be ordered by",
    ),
    (
        "bm25 beside an unknown vector",
        "own",
        {"bm25": {"query": "shoe"}, "vector": "nope"},
        "vector",
        "unknown vector 'nope'; this collection has ['v']",
    ),
    (
        "bm25 without bm25 fields",
        "two",
        {"bm25": {"query": "shoe"}},
        "bm25",
        "collection 'two' has no bm25 fields",
    ),
    (
        "neural_sparse naming a dense vector",
        "own",
        {"neural_sparse": {"query": "shoe"}, "vector": "v"},
        "vector",
        "names a dense vector; neural_sparse.vector names the sparse one",
    ),
    (
        "neural_sparse without sparse vectorizers",
        "own",
        {"neural_sparse": {"query": "shoe"}},
        "neural_sparse.vector",
        "collection 'own' has no sparse_vectorizers",
    ),
    (
        "neural_sparse naming an unknown sparse vector",
        "own",
        {"neural_sparse": {"query": "shoe", "vector": "s"}},
        "neural_sparse.vector",
        "unknown sparse vector 's'; this collection has []",
    ),
    (
        "hybrid weights naming an unknown list",
        "own",
        {"hybrid": {"query": "shoe", "weights": {"bm25": 1, "zz": 1}}},
        "hybrid.weights.zz",
        "is not a list of this collection; name a dense vectorizer, bm25 or a sparse "
        "vectorizer: ['bm25', 'v']",
    ),
    (
        "hybrid weights naming an unknown list, no bm25",
        "two",
        {"hybrid": {"query": "shoe", "weights": {"v": 1, "zz": 1}}},
        "hybrid.weights.zz",
        "is not a list of this collection; name a dense vectorizer, bm25 or a sparse vectorizer: ['v', 'w']",
    ),
    (
        "hybrid weights with bm25 but no bm25 fields",
        "two",
        {"hybrid": {"query": "shoe", "weights": {"bm25": 1, "v": 1}}},
        "hybrid.weights.bm25",
        "collection 'two' has no bm25 fields",
    ),
    (
        "hybrid weights with two dense vectors",
        "two",
        {"hybrid": {"query": "shoe", "weights": {"v": 1, "w": 1}}},
        "hybrid.weights",
        "fuses at most one dense vector, not ['v', 'w']",
    ),
    (
        "hybrid weights and another vector",
        "two",
        {"hybrid": {"query": "shoe", "weights": {"v": 1, "bm25": 1}}, "vector": "w"},
        "hybrid.weights.bm25",
        "collection 'two' has no bm25 fields",
    ),
    (
        "hybrid weights and another vector, bm25 there",
        "own2",
        {"hybrid": {"query": "shoe", "weights": {"v": 1, "bm25": 1}}, "vector": "w"},
        "vector",
        "is 'w' but hybrid.weights names 'v'",
    ),
    (
        "hybrid weights on a vector without a model",
        "own",
        {"hybrid": {"query": "shoe", "weights": {"v": 1, "bm25": 1}}},
        "hybrid.query",
        NO_MODEL,
    ),
    ("hybrid on a vector without a model", "own", {"hybrid": {"query": "shoe"}}, "hybrid.query", NO_MODEL),
    (
        "hybrid without bm25 fields",
        "two",
        {"hybrid": {"query": "shoe"}},
        "hybrid",
        "collection 'two' has no bm25 fields",
    ),
    (
        "near_text on a vector without a model",
        "own",
        {"near_text": {"query": "shoe"}},
        "near_text.query",
        NO_MODEL,
    ),
    (
        "near_image that is no base64",
        "own",
        {"near_image": {"image": "%%%"}},
        "near_image.image",
        "invalid base64: the character '%' at data position 0",
    ),
    (
        "a near_vector of the wrong length",
        "own",
        {"near_vector": {"vector": [1.0, 0.0, 0.0]}},
        "near_vector.vector",
        "has 3 dimensions, the collection expects 2",
    ),
    (
        "a search on a collection with no dense vectors",
        "words",
        VEC,
        "vector",
        "this collection has no dense vectors (only bm25)",
    ),
    (
        "an unknown vector",
        "own",
        {**VEC, "vector": "nope"},
        "vector",
        "unknown vector 'nope'; this collection has ['v']",
    ),
]


def test_search_refusals(data_dir):
    """Each case of SEARCH_REFUSALS, on one service (an embedded store per case would cost seconds)."""

    async def test(svc: GatewayService) -> None:
        await svc.create_collection(WORDS)
        await svc.create_collection(TWO)
        await svc.create_collection(
            {**OWN, "name": "own2", "vectorizers": {"v": {"dimensions": 2}, "w": {"dimensions": 2}}}
        )
        for case, collection, body, field, message in SEARCH_REFUSALS:
            with pytest.raises(BadRequest) as info:
                await svc.search(collection, body)
            assert (info.value.field, info.value.detail) == (field, message), case

    scenario(data_dir, test)


def test_search_kinds_hits_and_properties(data_dir):
    async def body(svc: GatewayService) -> None:
        got = await svc.search("own", {**VEC, "properties": ["brand"], "limit": 2})
        assert hit_ids(got) == ["a", "b"] and got["hits"][0]["score"] == pytest.approx(1.0)
        assert [h["properties"] for h in got["hits"]] == [{"brand": "x"}, {"brand": "y"}]
        got = await svc.search("own", {**VEC, "limit": 1, "offset": 1})
        assert hit_ids(got) == ["b"] and got["hits"][0]["properties"]["title"] == "blue shoe"
        got = await svc.search("own", {"bm25": {"query": "shoe"}, "vector": "v"})
        assert sorted(hit_ids(got)) == ["a", "b"]
        got = await svc.search(
            "own", {"filter": {"brand": "x"}, "order_by": {"field": "price", "direction": "desc"}}
        )
        assert hit_ids(got) == ["c", "a"]
        await refused(svc.search("nope", VEC), None, "collection 'nope' not found", NotFound)

    scenario(data_dir, body)


def test_mmr_reaches_the_store(data_dir):
    async def body(svc: GatewayService) -> None:
        calls = spy(svc, "search_dense")
        await svc.search("own", {**VEC, "limit": 2})
        await svc.search("own", {**VEC, "limit": 2, "diversity": {"mmr": {"lambda": 0.25}}})
        await svc.search("own", {**VEC, "limit": 150, "diversity": {"mmr": {}}})
        await svc.search("own", {**VEC, "limit": 5, "offset": 2, "diversity": {"mmr": {"candidates": 7}}})
        assert [c["mmr"] for c in calls] == [None, Mmr(0.25, 100), Mmr(0.5, 150), Mmr(0.5, 7)]

    scenario(data_dir, body)


def test_an_index_not_ready_yet_is_named(data_dir):
    async def body(svc: GatewayService) -> None:
        replace(svc, "browse", raising(StoreError("the payload index is missing")))
        await refused(
            svc.search("own", {"order_by": {"field": "price"}}),
            "order_by.field",
            "the index of 'price' is not ready yet (GET the collection to see its state)",
        )
        await refused(svc.search("own", {"filter": {"brand": "x"}}), None, "the payload index is missing")
        replace(svc, "browse", raising(StoreError("something else")))
        await refused(svc.search("own", {"order_by": {"field": "price"}}), None, "something else")
        replace(svc, "facet", raising(StoreError("no INDEX here")))
        await refused(
            svc.facets("own", {"field": "brand"}),
            "field",
            "the index of 'brand' is not ready yet (GET the collection to see its state)",
        )
        replace(svc, "facet", raising(StoreError("something else")))
        await refused(svc.facets("own", {"field": "brand"}), None, "something else")

    scenario(data_dir, body)


def test_facets(data_dir):
    async def body(svc: GatewayService) -> None:
        out = await svc.facets("own", {"field": "brand"})
        assert (
            out["values"] == [{"value": "x", "count": 2}, {"value": "y", "count": 1}] and out["took_ms"] >= 0
        )
        out = await svc.facets("own", {"field": "tags", "filter": {"brand": "y"}, "limit": 1})
        assert len(out["values"]) == 1 and out["values"][0]["count"] == 1
        await refused(
            svc.facets("own", {"field": "nope"}),
            "field",
            "'nope' is not a declared field; declare it as keyword, integer, bool or uuid (PATCH "
            "fields) to count its values",
        )
        await refused(
            svc.facets("own", {"field": "price"}),
            "field",
            "'price' is a float field; facets count keyword, integer, bool and uuid fields",
        )
        # the filter: named under "filter", checked against the declared types, and its depth bounded
        await refused(
            svc.facets("own", {"field": "brand", "filter": {"price": {"gte": "x"}}}), "filter.price.gte", None
        )
        await refused(
            svc.facets("own", {"field": "brand", "filter": {"price": "cheap"}}), "filter.price", None
        )
        deep = {"and": [{"and": [{"brand": "x"}]}]}
        await refused(
            svc.facets("own", {"field": "brand", "filter": deep}),
            "filter.and.0",
            "filters nest at most 2 levels deep (FILTER_MAX_DEPTH)",
        )
        calls = spy(svc, "facet")
        await svc.facets("own", {"field": "brand"})
        await svc.facets("own", {"field": "brand", "exact": True})
        assert [c["exact"] for c in calls] == [False, True]

    scenario(data_dir, body, filter_max_depth=2)


def test_patch_is_saved_keeps_what_was_there_and_builds_only_the_given_indexes(data_dir):
    """A collection written straight to the store (a sparse vectorizer, no payload index, two recorded
    index failures): PATCH declares ``brand`` again and a new ``n``."""
    definition = parse_definition(
        {
            "name": "kept",
            "vectorizers": {"v": {"dimensions": 2}},
            "sparse_vectorizers": {
                "s": {"model": "splade", "text_fields": ["title"]},
                "s2": {"model": "splade", "text_fields": ["title"]},
            },
            "fields": {"brand": "keyword", "price": "float"},
        }
    )
    stored = StoredCollection(
        definition=definition,
        vectors={"v": VectorInfo(dimensions=2)},
        sparse={
            "s": SparseInfo(vocab_size=30522, model_name="splade-x", function_name="SPARSE_ENCODING"),
            "s2": SparseInfo(vocab_size=30522, model_name="splade-x", function_name="SPARSE_ENCODING"),
        },
        created_at=123.5,
        index_errors={"brand": "boom", "price": "bad"},
    )

    async def body(svc: GatewayService) -> None:
        await asyncio.to_thread(svc.store.create_collection, stored.schema())
        await asyncio.to_thread(svc.store.save_definition, "kept", stored.to_record())
        before = await svc.get_collection("kept")  # cached for 60 s
        assert before["indexes"]["brand"] == {"type": "keyword", "state": "failed", "error": "boom"}
        out = await svc.update_collection("kept", {"fields": {"brand": "keyword", "n": "integer"}})
        # brand's failure is forgotten (declared again: built again), price's is kept
        assert out["indexes"] == {
            "brand": {"type": "keyword", "state": "building"},
            "price": {"type": "float", "state": "failed", "error": "bad"},
            "n": {"type": "integer", "state": "building"},
        }
        await svc.indexes.wait("kept")
        got = await svc.get_collection("kept")
        assert got["fields"] == {
            "brand": {"type": "keyword"},
            "price": {"type": "float"},
            "n": {"type": "integer"},
        }
        assert got["created_at"] == 123.5
        assert got["sparse_vectorizers"]["s"]["model_name"] == "splade-x"
        assert got["sparse_vectorizers"]["s"]["vocab_size"] == 30522
        # only the fields given were built; price keeps its recorded failure
        assert got["indexes"] == {
            "brand": {"type": "keyword", "state": "ready", "points": 0},
            "price": {"type": "float", "state": "failed", "error": "bad"},
            "n": {"type": "integer", "state": "ready", "points": 0},
        }
        # its sparse vectorizers: the first is the default; their model is not in this gateway's MODELS
        await refused(
            svc.search("kept", {"neural_sparse": {"query": "cat"}}),
            "model 'splade'",
            "model 'splade' is not configured here (MODELS knows: none (set MODELS=name=host:port,...))",
            Unavailable,
        )
        await refused(
            svc.search("kept", {"neural_sparse": {"query": "cat", "vector": "zz"}}),
            "neural_sparse.vector",
            "unknown sparse vector 'zz'; this collection has ['s', 's2']",
        )
        await refused(
            svc.search("kept", {"hybrid": {"query": "cat", "weights": {"s": 1, "s2": 1}}}),
            "hybrid.weights",
            "fuses at most one sparse vector, not ['s', 's2']",
        )

    scenario(data_dir, body, seed=False, definition_cache_s=60)


def test_a_patch_starts_from_the_stored_definition_not_a_cached_copy(data_dir):
    async def body(svc: GatewayService) -> None:
        await svc.get_collection("own")  # cached for 60 s
        record = await asyncio.to_thread(svc.store.load_definition, "own")
        assert record is not None
        elsewhere = {**record, "definition": {**record["definition"]}}
        elsewhere["definition"]["fields"] = {**record["definition"]["fields"], "x": {"type": "keyword"}}
        await asyncio.to_thread(svc.store.save_definition, "own", elsewhere)  # another gateway's PATCH
        out = await svc.update_collection("own", {"fields": {"y": "integer"}})
        assert {"x", "y"} <= set(out["fields"])

    scenario(data_dir, body, definition_cache_s=60)


def test_delete_a_collection_found_only_in_part(data_dir):
    async def body(svc: GatewayService) -> None:
        await svc.create_collection({"name": "nodef", "vectorizers": {"v": {"dimensions": 2}}})
        await asyncio.to_thread(svc.store.delete_definition, "nodef")
        assert await svc.delete_collection("nodef") == {"name": "nodef", "deleted": True}
        assert not await asyncio.to_thread(svc.store.collection_exists, "nodef")
        await svc.create_collection({"name": "onlydef", "vectorizers": {"v": {"dimensions": 2}}})
        await asyncio.to_thread(svc.store.delete_collection, "onlydef")
        assert await svc.delete_collection("onlydef") == {"name": "onlydef", "deleted": True}
        assert await asyncio.to_thread(svc.store.load_definition, "onlydef") is None

    scenario(data_dir, body, seed=False)


# -- with the real inference server (in-process, the deterministic test encoder) ---------------------------

PHOTOS = {
    "name": "photos",
    "vectorizers": {"clip": {"model": "clip", "text_fields": ["title"], "image_fields": ["photo"]}},
    "bm25": {"fields": ["title", "note"]},
}
FAST = {"inference_timeout_s": 2, "inference_retry_budget_s": 0.2, "inference_query_retry_budget_s": 0.2}


def with_inference(data_dir, body, *, settings: dict[str, Any] | None = None, **inference: Any) -> None:
    async def go() -> None:
        store = make_store("edge", data_dir)
        async with gateway_with_inference(store, settings={**FAST, **(settings or {})}, **inference) as pair:
            await body(*pair)

    run(go())


def test_put_reuses_the_vectors_of_unchanged_fields_and_writes_nothing_on_failure(data_dir):
    async def body(svc: GatewayService, inference: Any) -> None:
        await svc.create_collection(PHOTOS)
        await svc.import_objects("photos", {"objects": [{"id": "a", "properties": {"title": "red apple"}}]})
        before = await svc.get_object("photos", "a", with_vectors=True)
        calls = inference.service.vectorize_calls
        out = await svc.put_object("photos", "a", {"properties": {"title": "red apple", "note": "ripe"}})
        assert out == {"id": "a", "uuid": before["uuid"], "status": "ok", "created": False, "vectorized": []}
        assert inference.service.vectorize_calls == calls
        after = await svc.get_object("photos", "a", with_vectors=True)
        assert after["vectors"]["clip"] == pytest.approx(before["vectors"]["clip"])
        assert after["properties"] == {"title": "red apple", "note": "ripe"}
        # an image that the model cannot decode: refused naming the field, the stored object kept
        await refused(
            svc.put_object("photos", "a", {"properties": {"title": "x", "photo": b64(b"not a png")}}),
            "properties.photo",
            REJECTED_IMAGE.format(inference.address),
        )
        assert (await svc.get_object("photos", "a"))["properties"] == {"title": "red apple", "note": "ripe"}
        await refused(
            svc.put_object("photos", "a", {"properties": {"title": "x", "photo": "%%%"}}),
            "properties.photo",
            "invalid base64: the character '%' at data position 0",
        )
        out = await svc.import_objects(
            "photos",
            {
                "objects": [
                    {"id": "x", "properties": {"photo": "%%%"}},
                    {"id": "y", "properties": {"photo": b64(b"not a png")}},
                    {"id": "z", "properties": {"photo": "http://127.0.0.1:1/a.png"}},
                ]
            },
        )
        assert [(r["status"], r["field"]) for r in out["results"]] == [
            ("error", "objects.0.properties.photo"),
            ("error", "objects.1.properties.photo"),
            ("error", "objects.2.properties.photo"),
        ]
        assert await stored_ids(svc, "photos") == ["a"]
        # with the service down: a change of an unvectorized field still works (nothing to compute) ...
        await inference.stop()
        out = await svc.put_object("photos", "a", {"properties": {"title": "red apple", "note": "sweet"}})
        assert out["vectorized"] == []
        # ... a change of a vectorized one is a 503 naming the service, and nothing is written
        err = await refused(
            svc.put_object("photos", "a", {"properties": {"title": "green pear"}}),
            "inference service for model 'clip' at " + inference.address,
            None,
            Unavailable,
        )
        assert err.message.startswith(
            f"inference service for model 'clip' at {inference.address} is unavailable ("
        )
        got = await svc.get_object("photos", "a", with_vectors=True)
        assert got["properties"] == {"title": "red apple", "note": "sweet"}
        assert got["vectors"]["clip"] == pytest.approx(before["vectors"]["clip"])

    with_inference(data_dir, body, dims=8)


def test_create_probes_the_model_and_searches_embed_through_it(data_dir):
    async def body(svc: GatewayService, inference: Any) -> None:
        label = f"inference service for model 'clip' at {inference.address}"
        v = {"model": "clip", "text_fields": ["title"]}
        await refused(
            svc.create_collection({"name": "c", "vectorizers": {"v": {**v, "dimensions": 4}}}),
            "vectorizers.v.dimensions",
            f"is 4 but {label} serves 'fake-clip' with 8 dimensions",
        )
        await refused(
            svc.create_collection({"name": "c", "vectorizers": {"v": {**v, "image_fields": ["photo"]}}}),
            "vectorizers.v.image_fields",
            f"{label} ('fake-clip') does not embed images",
        )
        created = await svc.create_collection(
            {"name": "c", "vectorizers": {"v": v}, "bm25": {"fields": ["title"]}}
        )
        shown = created["vectorizers"]["v"]
        assert (shown["dimensions"], shown["modalities"], shown["model_name"]) == (8, ["text"], "fake-clip")
        await svc.import_objects(
            "c",
            {
                "objects": [
                    {"id": "a", "properties": {"title": "red apple"}},
                    {"id": "b", "properties": {"title": "blue sky"}},
                ]
            },
        )
        got = await svc.search("c", {"near_text": {"query": "blue sky"}, "limit": 1})
        assert hit_ids(got) == ["b"] and got["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)
        await refused(
            svc.search("c", {"near_image": {"image": b64(png_bytes("red"))}}),
            "near_image.image",
            "the model of vector 'v' does not embed images",
        )
        calls = spy(svc, "search_hybrid")
        dense_calls = spy(svc, "search_dense")
        await svc.search("c", {"hybrid": {"query": "red apple"}})
        await svc.search("c", {"hybrid": {"query": "red apple", "alpha": 0.2}})
        assert [c["alpha"] for c in calls] == [0.5, 0.2]
        assert [(c["limit"], c["fusion"]) for c in calls] == [(10, "rrf"), (10, "rrf")]
        assert not dense_calls  # a hybrid search is not followed by a dense one
        # weighted hybrid: each list with the query through its own encoder, and its weight
        fused: list[tuple[Any, ...]] = []
        search_fused = svc.store.search_fused

        def watch(name: str, parts: list[Any], **kwargs: Any) -> Any:
            fused.append((parts, kwargs["fusion"]))
            return search_fused(name, parts, **kwargs)

        replace(svc, "search_fused", watch)
        got = await svc.search(
            "c",
            {
                "hybrid": {"query": "red apple", "weights": {"v": 3, "bm25": 1}},
                "filter": {"title": "blue sky"},
            },
        )
        assert hit_ids(got) == ["b"]
        fused.clear()
        got = await svc.search("c", {"hybrid": {"query": "red apple", "weights": {"v": 3, "bm25": 1}}})
        assert hit_ids(got)[0] == "a"
        [(parts, fusion)] = fused
        stored_c = await svc._load("c")
        assert stored_c.bm25_encoder is not None
        assert [(p.vector_name, p.weight) for p in parts] == [("v", 3.0), (BM25_VECTOR, 1.0)]
        assert parts[0].vector == pytest.approx(inference.text_vector("red apple").tolist(), abs=1e-6)
        assert parts[1].vector == stored_c.bm25_encoder.query("red apple") and fusion == "rrf"
        # a batch: each distinct text embedded once, in one call
        before = inference.service.vectorize_calls
        out = await svc.search_batch(
            "c",
            {
                "searches": [
                    {"near_text": {"query": "red apple"}, "limit": 1},
                    {"near_text": {"query": "blue sky"}, "limit": 1},
                    {"near_text": {"query": "red apple"}, "limit": 1},
                ]
            },
        )
        assert [hit_ids(r) for r in out["results"]] == [["a"], ["b"], ["a"]]
        assert inference.service.vectorize_calls == before + 1
        await svc.create_collection({"name": "mixed", "vectorizers": {"o": {"dimensions": 2}, "v": v}})
        # the service down: 503s naming it; nothing created or written
        await inference.stop()
        await refused(
            svc.import_objects(
                "mixed", {"objects": [{"id": "m", "properties": {"title": "x"}, "vectors": {"o": [1, 0]}}]}
            ),
            label,
            None,
            Unavailable,
        )
        for call in (
            svc.search("c", {"near_text": {"query": "x"}}),
            svc.search_batch("c", {"searches": [{"near_text": {"query": "x"}}]}),
            svc.import_objects("c", {"objects": [{"id": "z", "properties": {"title": "z"}}]}),
            svc.create_collection({"name": "d", "vectorizers": {"v": v}}),
        ):
            err = await refused(call, label, None, Unavailable)
            assert err.message.startswith(f"{label} is unavailable ("), err.message
        assert await stored_ids(svc, "c") == ["a", "b"]
        assert [c["name"] for c in await svc.list_collections()] == ["c", "mixed"]
        assert not await asyncio.to_thread(svc.store.collection_exists, "d")
        # searches that need no model still answer
        assert hit_ids(await svc.search("c", {"bm25": {"query": "apple"}})) == ["a"]

    with_inference(data_dir, body, dims=8, modalities=("text",))


def test_a_rejected_query_fails_alone(data_dir):
    async def body(svc: GatewayService, inference: Any) -> None:
        await svc.create_collection(PHOTOS)
        await svc.import_objects(
            "photos",
            {
                "objects": [
                    {"id": "a", "properties": {"title": "red apple"}},
                    {"id": "b", "properties": {"photo": b64(png_bytes("blue"))}},
                ]
            },
        )
        rejected = NOT_AN_IMAGE
        await refused(
            svc.search("photos", {"near_image": {"image": b64(b"not a png")}}), "near_image.image", rejected
        )
        got = await svc.search("photos", {"near_image": {"image": b64(png_bytes("blue"))}, "limit": 1})
        assert hit_ids(got) == ["b"]
        # in a batch: the rejected image fails its own search only (alone in its call, or found by halving)
        for searches in (
            [{"near_image": {"image": b64(b"not a png")}}],
            [
                {"near_text": {"query": "red apple"}, "limit": 1},
                {"near_image": {"image": b64(b"not a png")}},
                {"near_image": {"image": b64(png_bytes("blue"))}, "limit": 1},
            ],
        ):
            out = await svc.search_batch("photos", {"searches": searches})
            results = out["results"]
            bad = 0 if len(searches) == 1 else 1
            # (found by halving, the message keeps the service's prefix: see docs/mutation-report.md)
            message = rejected if bad == 0 else REJECTED_IMAGE.format(inference.address)
            assert results[bad] == {
                "error": f"searches.{bad}.near_image.image: {message}",
                "field": f"searches.{bad}.near_image.image",
            }
            if len(searches) > 1:
                assert hit_ids(results[0]) == ["a"] and hit_ids(results[2]) == ["b"]
        await refused(
            svc.search("photos", {"near_image": {"image": "http://127.0.0.1:1/a.png"}}),
            "near_image.image",
            "the URL names the non-public address 127.0.0.1; image URLs on private networks are refused "
            "(IMAGE_URL_ALLOW_PRIVATE=1 allows them)",
        )
        # an image URL in a batch is fetched under the gateway's URL policy (a loopback address: refused)
        out = await svc.search_batch(
            "photos", {"searches": [{"near_image": {"image": "http://127.0.0.1:1/a.png"}}]}
        )
        assert out["results"][0]["field"] == "searches.0.near_image.image"
        assert out["results"][0]["error"] == (
            "searches.0.near_image.image: the URL names the non-public address 127.0.0.1; image URLs on "
            "private networks are refused (IMAGE_URL_ALLOW_PRIVATE=1 allows them)"
        )

    with_inference(data_dir, body, dims=8)


# -- batch search ------------------------------------------------------------------------------------------


def test_search_batch_results_in_order_each_failing_alone(data_dir):
    async def body(svc: GatewayService) -> None:
        out = await svc.search_batch("own", {"searches": [VEC, VEC]})
        assert [hit_ids(r)[0] for r in out["results"]] == ["a", "a"]
        await refused(
            svc.search_batch("own", {"searches": [VEC, VEC, VEC]}),
            "searches",
            "at most 2 searches per batch (SEARCH_BATCH_SIZE), got 3",
        )
        await refused(
            svc.search_batch("nope", {"searches": [VEC]}), None, "collection 'nope' not found", NotFound
        )

    scenario(data_dir, body, search_batch_size=2)


def test_search_batch_mixes_store_batch_searches_searches_run_alone_and_failures(data_dir):
    async def body(svc: GatewayService) -> None:
        out = await svc.search_batch(
            "own",
            {
                "searches": [
                    {**VEC, "limit": 1, "properties": ["brand"]},
                    {"filter": {"brand": "x"}, "order_by": {"field": "price", "direction": "desc"}},
                    {"near_vector": {"vector": [1.0, 0.0, 0.0]}},
                    {"order_by": {"field": "nope"}},
                    {"bm25": {"query": "shoe"}, "limit": 2},
                    {"near_vector": "not an object"},
                    {"filter": {"brand": "y"}},
                ]
            },
        )
        results = out["results"]
        assert len(results) == 7 and out["took_ms"] >= 0
        assert results[0]["hits"] == [{"id": "a", "score": pytest.approx(1.0), "properties": {"brand": "x"}}]
        assert hit_ids(results[1]) == ["c", "a"]  # run alone: browse in field order
        assert results[2] == {
            "error": "searches.2.near_vector.vector: has 3 dimensions, the collection expects 2",
            "field": "searches.2.near_vector.vector",
        }
        assert results[3] == {
            "error": "searches.3.order_by.field: 'nope' is not a declared field; declare it as integer, "
            "float or datetime (PATCH fields) to order by it",
            "field": "searches.3.order_by.field",
        }
        assert sorted(hit_ids(results[4])) == ["a", "b"]
        assert results[5]["field"] == "searches.5.near_vector"
        assert hit_ids(results[6]) == ["b"]
        assert all(r["took_ms"] == out["took_ms"] for r in (results[0], results[4]))

    scenario(data_dir, body)


def test_a_search_the_store_refuses_fails_alone_in_a_batch(data_dir):
    async def body(svc: GatewayService) -> None:
        real = svc.store.search_batch
        batches: list[int] = []

        def picky(name: str, specs: list[Any]) -> Any:
            batches.append(len(specs))
            if any(spec.limit == 7 for spec in specs):
                raise StoreError("limit: seven is unlucky")
            return real(name, specs)

        picky.__name__ = "search_batch"
        replace(svc, "search_batch", picky)
        out = await svc.search_batch(
            "own", {"searches": [{**VEC, "limit": 1}, {**VEC, "limit": 7}, {**VEC, "limit": 2}]}
        )
        assert hit_ids(out["results"][0]) == ["a"] and hit_ids(out["results"][2]) == ["a", "b"]
        assert out["results"][1] == {
            "error": "searches.1.limit: seven is unlucky",
            "field": "searches.1.limit",
        }
        assert batches == [3, 1, 1, 1]  # the batch, then each search on its own
        # a batch of one the store refuses: the request fails, as a single search would
        await refused(
            svc.search_batch("own", {"searches": [{**VEC, "limit": 7}]}), "limit", "seven is unlucky"
        )
        # a search run alone that the store refuses without naming a field: named by its place in the batch
        replace(svc, "browse", raising(StoreError("not today")))
        out = await svc.search_batch("own", {"searches": [{"filter": {"brand": "x"}}]})
        assert out["results"] == [{"error": "searches.0: not today", "field": "searches.0"}]

    scenario(data_dir, body)


# -- sparse vectorizers whose model this gateway cannot reach ----------------------------------------------

NOT_IN_MODELS = "(MODELS knows: none (set MODELS=name=host:port,...))"
URLS_OFF = "this gateway only uses the models of MODELS (INFERENCE_URL_HOSTS is empty)"


def sparse_collection(name: str, sparse: dict[str, Any]) -> StoredCollection:
    return StoredCollection(
        definition=parse_definition({"name": name, "vectorizers": {}, "sparse_vectorizers": sparse}),
        vectors={},
        sparse={k: SparseInfo(vocab_size=100) for k in sparse},
    )


async def put_in_store(svc: GatewayService, stored: StoredCollection) -> None:
    await asyncio.to_thread(svc.store.create_collection, stored.schema())
    await asyncio.to_thread(svc.store.save_definition, stored.definition.name, stored.to_record())


def test_sparse_models_are_resolved_per_use(data_dir):
    """Documents go through a sparse vectorizer's model, queries through its query_model when it has one;
    an address is checked against INFERENCE_URL_HOSTS on every use."""

    async def body(svc: GatewayService) -> None:
        await put_in_store(
            svc,
            sparse_collection("sp", {"s": {"model": "splade", "query_model": "q", "text_fields": ["title"]}}),
        )
        await put_in_store(
            svc,
            sparse_collection(
                "urls",
                {
                    "u": {"inference_url": "evil:1", "text_fields": ["title"]},
                    "w": {"model": "splade", "query_inference_url": "evil:2", "text_fields": ["title"]},
                },
            ),
        )
        await refused(
            svc.search("sp", {"neural_sparse": {"query": "cat"}}),
            "model 'q'",
            f"model 'q' is not configured here {NOT_IN_MODELS}",
            Unavailable,
        )
        await refused(
            svc.import_objects("sp", {"objects": [{"id": "a", "properties": {"title": "cat"}}]}),
            "model 'splade'",
            f"model 'splade' is not configured here {NOT_IN_MODELS}",
            Unavailable,
        )
        assert await stored_ids(svc, "sp") == []
        await refused(
            svc.search("urls", {"neural_sparse": {"query": "cat", "vector": "u"}}),
            None,
            f"sparse vector 'u' names inference_url 'evil:1', which is no longer allowed: {URLS_OFF}",
            Forbidden,
        )
        await refused(
            svc.search("urls", {"neural_sparse": {"query": "cat", "vector": "w"}}),
            None,
            f"sparse vector 'w' names query_inference_url 'evil:2', which is no longer allowed: {URLS_OFF}",
            Forbidden,
        )
        # at creation: refused naming the field, nothing created
        await refused(
            svc.create_collection(
                {
                    "name": "c1",
                    "vectorizers": {},
                    "sparse_vectorizers": {"s": {"model": "nope", "text_fields": ["title"]}},
                }
            ),
            "sparse_vectorizers.s.model",
            "unknown model 'nope'; known models: none (set MODELS=name=host:port,...)",
        )
        await refused(
            svc.create_collection(
                {
                    "name": "c2",
                    "vectorizers": {},
                    "sparse_vectorizers": {"s": {"inference_url": "evil:1", "text_fields": ["title"]}},
                }
            ),
            "sparse_vectorizers.s.inference_url",
            f"'evil:1' is not allowed: {URLS_OFF}; name a model instead",
        )
        # a dense vectorizer's address too, also in a batch
        dense_url = StoredCollection(
            definition=parse_definition(
                {"name": "durl", "vectorizers": {"d": {"inference_url": "evil:3", "text_fields": ["title"]}}}
            ),
            vectors={"d": VectorInfo(dimensions=2, modalities=["text"])},
        )
        await put_in_store(svc, dense_url)
        await refused(
            svc.search_batch("durl", {"searches": [{"near_text": {"query": "cat"}}]}),
            None,
            f"vector 'd' names inference_url 'evil:3', which is no longer allowed: {URLS_OFF}",
            Forbidden,
        )
        assert sorted(c["name"] for c in await svc.list_collections()) == ["durl", "sp", "urls"]

    scenario(data_dir, body, seed=False)


def test_query_embedding_uses_the_query_budget_and_checks_what_the_model_returns(data_dir):
    async def body(svc: GatewayService, inference: Any) -> None:
        await svc.create_collection(PHOTOS)
        client = svc.pool.get(inference.address)
        real = client.vectorize
        seen: list[dict[str, Any]] = []

        async def watched(*args: Any, **kwargs: Any) -> Any:
            seen.append({k: kwargs.get(k) for k in ("budget_s", "urgent")})
            return await real(*args, **kwargs)

        client.vectorize = watched  # type: ignore[method-assign]
        await svc.search_batch("photos", {"searches": [{"near_text": {"query": "red"}}]})
        await svc.search("photos", {"near_text": {"query": "red"}})
        await svc.search("photos", {"near_image": {"image": b64(png_bytes("red"))}})
        assert seen == [{"budget_s": 0.3, "urgent": True}] * 3
        seen.clear()
        await svc.import_objects("photos", {"objects": [{"id": "i", "properties": {"title": "red"}}]})
        assert seen == [{"budget_s": 5, "urgent": None}]  # an import: the import budget, not urgent
        seen.clear()
        bad = b64(b"not a png")
        await svc.search_batch(
            "photos", {"searches": [{"near_text": {"query": "red"}}, {"near_image": {"image": bad}}]}
        )
        # the call, then each modality's items on their own to find the rejected one: all on the query budget
        assert seen and all(s["budget_s"] == 0.3 for s in seen), seen
        # a collection that expects 5 dimensions from a model that gives 8: the service is at fault (503)
        five = StoredCollection(
            definition=parse_definition(
                {"name": "five", "vectorizers": {"v": {"model": "clip", "text_fields": ["t"]}}}
            ),
            vectors={"v": VectorInfo(dimensions=5, modalities=["text"])},
        )
        await put_in_store(svc, five)
        label = f"inference service {inference.address}"
        await refused(
            svc.search_batch("five", {"searches": [{"near_text": {"query": "red"}}]}),
            label,
            f"{label} returned a vector that has 8 dimensions, the collection expects 5",
            Unavailable,
        )
        await refused(
            svc.search("five", {"near_text": {"query": "red"}}),
            label,
            f"{label} returned a bad vector: vector: has 8 dimensions, the collection expects 5",
            Unavailable,
        )

    with_inference(
        data_dir,
        body,
        dims=8,
        settings={"inference_retry_budget_s": 5, "inference_query_retry_budget_s": 0.3},
    )


def test_an_inference_url_that_does_not_speak_grpc_is_named_so(data_dir):
    from tests.test_gateway_input_rules import Listener

    listener = Listener()

    async def body(svc: GatewayService) -> None:
        where = "vectorizers.v.inference_url"
        await refused(
            svc.create_collection(
                {"name": "c", "vectorizers": {"v": {"inference_url": listener.address, "text_fields": ["t"]}}}
            ),
            where,
            f"{listener.address} is not a polyvec inference service (it does not speak gRPC)",
        )
        assert await svc.list_collections() == []

    try:
        scenario(
            data_dir, body, seed=False, inference_url_hosts=("127.0.0.1",), inference_query_retry_budget_s=0.5
        )
    finally:
        listener.sock.close()


def test_search_filters_payload_and_paging_reach_the_store(data_dir):
    async def body(svc: GatewayService) -> None:
        dense = spy(svc, "search_dense")
        got = await svc.search("own", {**VEC, "properties": ["brand"], "filter": {"brand": "x"}, "limit": 1})
        assert hit_ids(got) == ["a"] and got["hits"][0]["properties"] == {"brand": "x"}
        assert dense[0]["with_payload"] == ["brand", "_polyvec_id"] and dense[0]["limit"] == 1
        got = await svc.search("own", {"bm25": {"query": "shoe"}, "filter": {"brand": "y"}})
        assert hit_ids(got) == ["b"]
        got = await svc.search("own", {"bm25": {"query": "shoe"}, "limit": 1, "offset": 1})
        assert len(got["hits"]) == 1
        # the filter: named under "filter", checked against the declared types, its depth bounded
        await refused(svc.search("own", {**VEC, "filter": {"price": {"gte": "x"}}}), "filter.price.gte", None)
        await refused(svc.search("own", {**VEC, "filter": {"price": "cheap"}}), "filter.price", None)
        await refused(
            svc.search("own", {**VEC, "filter": {"and": [{"and": [{"brand": "x"}]}]}}),
            "filter.and.0",
            "filters nest at most 2 levels deep (FILTER_MAX_DEPTH)",
        )

    scenario(data_dir, body, filter_max_depth=2)


def test_a_callers_inference_url_that_does_not_answer_is_a_503_without_its_words(data_dir):
    async def body(svc: GatewayService) -> None:
        gone = StoredCollection(
            definition=parse_definition(
                {"name": "gone", "vectorizers": {"v": {"inference_url": "127.0.0.1:1", "text_fields": ["t"]}}}
            ),
            vectors={"v": VectorInfo(dimensions=2, modalities=["text"])},
        )
        await put_in_store(svc, gone)
        label = "inference service 127.0.0.1:1"
        for call in (
            svc.search("gone", {"near_text": {"query": "x"}}),
            svc.search_batch("gone", {"searches": [{"near_text": {"query": "x"}}]}),
        ):
            await refused(call, label, f"{label} is unavailable (no answer)", Unavailable)

    scenario(
        data_dir,
        body,
        seed=False,
        inference_url_hosts=("127.0.0.1",),
        inference_timeout_s=1,
        inference_query_retry_budget_s=0.2,
    )
