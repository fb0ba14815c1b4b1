"""polyvec-client against a real gateway (both storage adapters, over HTTP and over gRPC): collections,
streaming import, iterate, count, delete, search, batch search, retries, typed errors, and the async twin."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from PIL import Image
from polyvec_client import (
    AsyncClient,
    BadRequestError,
    Client,
    ConflictError,
    ImportInterrupted,
    NotFoundError,
    PolyvecError,
    RateLimitedError,
    RetryPolicy,
    SearchError,
    SearchResult,
    TransportError,
    UnavailableError,
    object_uuid,
    query,
)

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def png(colour: str, size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, COLOURS[colour]).save(buf, format="PNG")
    return buf.getvalue()


def fresh(client: Client, **extra) -> str:
    name = f"c{uuid.uuid4().hex[:10]}"
    client.collections.create(name, vectorizers={"main": {"model": "fake", "text_fields": ["title"],
                                                          "image_fields": ["photo"]}}, **extra)
    return name


def records(n: int, start: int = 0):
    for i in range(start, start + n):
        yield {"id": f"obj-{i:05d}", "properties": {"title": f"{['red', 'green', 'blue'][i % 3]} item {i}",
                                                   "n": i, "colour": ["red", "green", "blue"][i % 3]}}


def count_imports(client: Client) -> list[int]:
    """Remember the size of every import request the client's transport (HTTP or gRPC) sends."""
    sizes: list[int] = []
    send = client._transport.send

    def counting(op):
        if op.name == "import":
            sizes.append(len(json.loads(op.content)["objects"] if op.content else op.body["objects"]))
        return send(op)

    client._transport.send = counting
    return sizes


def test_collections_and_typed_errors(url):
    with Client(url) as client:
        name = fresh(client)
        info = client.collections.get(name)
        assert info.name == name and info.vectorizers["main"].dimensions == 24 and info.count == 0
        assert name in [c.name for c in client.collections.list()]
        assert client.collections.exists(name) and not client.collections.exists("nope-nope")
        with pytest.raises(ConflictError) as err:
            fresh_def = {"name": name, "vectorizers": {"main": {"dimensions": 3}}}
            client.collections.create(fresh_def)
        assert err.value.status == 409 and err.value.field == "name"
        with pytest.raises(BadRequestError) as err:
            client.collections.create("bad", vectorizers={"v": {"model": "nope", "text_fields": ["t"]}})
        assert err.value.status == 400 and err.value.field == "vectorizers.v.model"
        with pytest.raises(NotFoundError) as err:
            client.collection("ghost").count()
        assert err.value.status == 404
        col = client.collection(name)
        with pytest.raises(BadRequestError) as err:
            col.search.hybrid("x", alpha=3)
        assert err.value.field == "hybrid.alpha"
        with pytest.raises(BadRequestError) as err:
            col.insert({"title": "x", "photo": "%%%"}, id="bad")
        assert err.value.field == "properties.photo"
        assert client.limits().import_batch_size == 1000
        assert client.collections.delete(name)
        with pytest.raises(NotFoundError):
            client.collections.get(name)


def test_insert_many_streams_in_gateway_sized_chunks(url):
    with Client(url) as client:
        import_sizes = count_imports(client)
        col = client.collection(fresh(client))
        consumed = 0
        max_ahead = 0
        done_seen: list[tuple[int, int]] = []

        def source():
            nonlocal consumed
            for i, rec in enumerate(records(2300)):
                if i == 7:
                    rec["properties"]["photo"] = base64.b64encode(b"not an image").decode()
                if i == 1500:
                    rec["properties"]["_polyvec_x"] = 1  # reserved name: refused by the gateway
                if i == 2000:
                    rec = {"id": "local", "properties": {"when": object()}}  # cannot be JSON
                consumed += 1
                yield rec

        def progress(done: int, failed: int) -> None:
            nonlocal max_ahead
            max_ahead = max(max_ahead, consumed - done)
            done_seen.append((done, failed))

        report = col.insert_many(source(), batch_size=200, concurrency=3, progress=progress)
        assert report.ok == 2297 and report.sent == 2299 and not report.interrupted
        assert sorted(f.index for f in report.failed) == [7, 1500, 2000]
        by_index = {f.index: f for f in report.failed}
        assert by_index[7].id == "obj-00007" and by_index[7].field == "properties.photo"
        assert by_index[1500].field == "properties._polyvec_x"
        assert by_index[2000].id == "local" and "JSON" in by_index[2000].error
        assert col.count() == 2297
        assert import_sizes and max(import_sizes) <= 200
        # streaming: never more than (concurrency + 1) chunks read ahead of what was acknowledged
        assert max_ahead <= 4 * 200
        assert done_seen[-1] == (2300, 3)
        # batch_size above the gateway's IMPORT_BATCH_SIZE is clamped to it
        import_sizes.clear()
        report = col.insert_many(records(1500, start=5000), batch_size=5000, progress=False)
        assert report.ok == 1500 and max(import_sizes) == 1000


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_insert_many_follows_a_smaller_gateway_limit(tmp_path, scheme):
    from tests.gateway_thread import GatewayThread

    with GatewayThread(tmp_path, "edge", import_batch_size=40, max_request_bytes=60_000) as gw, \
            Client(gw.http_url if scheme == "http" else f"grpc://{gw.grpc_target}") as client:
        import_sizes = count_imports(client)
        assert client.limits().import_batch_size == 40
        col = client.collection(fresh(client))
        big = base64.b64encode(png("red", (64, 64))).decode()
        items = [{"id": f"i{i}", "properties": {"title": f"t {i}", "pad": "x" * 2000}} for i in range(150)]
        items.append({"id": "huge", "properties": {"title": "too big", "pad": "y" * 70_000}})
        items.append({"id": "img", "properties": {"photo": big}})
        report = col.insert_many(items, progress=False)
        assert report.ok == 151
        assert [(f.id, "MAX_REQUEST_BYTES" in f.error) for f in report.failed] == [("huge", True)]
        assert max(import_sizes) <= 40
        assert col.count() == 151


def test_iterate_count_delete_get_put(url):
    with Client(url) as client:
        col = client.collection(fresh(client))
        col.insert_many(records(130), progress=False)
        ids = [o.id for o in col.iterate(batch_size=17)]
        assert sorted(ids) == [f"obj-{i:05d}" for i in range(130)] and len(set(ids)) == 130
        reds = list(col.iterate({"colour": "red"}, batch_size=9, properties=["n"], with_vectors=True))
        assert sorted(o.properties["n"] for o in reds) == list(range(0, 130, 3))
        assert all(set(o.properties) == {"n"} and len(o.vectors["main"]) == 24 for o in reds)
        objects, cursor = col.page(limit=100)
        assert len(objects) == 100 and cursor
        assert col.count() == 130 and col.count({"n": {"lt": 10}}) == 10
        obj = col.get("obj-00003", with_vectors=True)
        assert obj.properties["n"] == 3 and obj.uuid == object_uuid("obj-00003")
        assert col.put("obj-00003", {"title": "red item 3", "n": 33})["vectorized"] == []
        assert col.get("obj-00003").properties["n"] == 33
        assert col.delete("obj-00003")
        with pytest.raises(NotFoundError):
            col.get("obj-00003")
        assert col.delete_many(ids=["obj-00004", "obj-00005", "nope"]) == 2
        assert col.delete_many({"colour": "green"}) == 42
        with pytest.raises(BadRequestError) as err:
            col.delete_many({"n": {"gte": 0}})
        assert err.value.field == "all"
        assert col.delete_many(all=True) == 85
        assert col.count() == 0 and list(col.iterate()) == []
        new_id = col.insert({"title": "no id given"})
        assert uuid.UUID(new_id) and col.count() == 1


def test_search_kinds_and_batch(gateway, url):
    with Client(url) as client:
        col = client.collection(fresh(client))
        items = list(records(30))
        items[4]["properties"]["photo"] = base64.b64encode(png("red")).decode()
        items[5]["properties"]["photo"] = base64.b64encode(png("blue")).decode()
        assert col.insert_many(items, progress=False).ok == 30
        hits = col.search.near_text("green item 7", limit=3).hits
        assert hits[0].id == "obj-00007" and hits[0].properties["n"] == 7
        image = Image.new("RGB", (20, 20), COLOURS["red"])
        path = gateway.path / "query.png"
        image.save(path)
        for given in (str(path), path, png("red"), image):
            assert col.search.near_image(given, limit=1).hits[0].id == "obj-00004"
        vec = col.get("obj-00009", with_vectors=True).vectors["main"]
        assert col.search.near_vector(vec, limit=1).hits[0].id == "obj-00009"
        assert col.search.bm25("item 11", limit=1, properties=["n"]).hits[0].properties == {"n": 11}
        res = col.search.hybrid("blue item 8", alpha=0.3, fusion="relative_score", limit=2,
                                filter={"colour": "blue"})
        assert res.hits[0].id == "obj-00008" and all(h.properties["colour"] == "blue" for h in res.hits)
        weighted = col.search.hybrid("blue item 8", weights={"main": 0.3, "bm25": 0.7},
                                     fusion="relative_score", limit=2, filter={"colour": "blue"})
        assert [(h.id, h.score) for h in weighted.hits] == [(h.id, h.score) for h in res.hits]
        with pytest.raises(BadRequestError) as err:  # this collection has no sparse vectorizer
            col.search.neural_sparse("blue", sparse_vector="splade")
        assert err.value.field == "neural_sparse.vector"
        with pytest.raises(BadRequestError) as err:
            col.search.hybrid("x", alpha=0.5, weights={"main": 1, "bm25": 1})
        assert err.value.field == "hybrid"
        searches = [query.near_text("green item 7", limit=1), query.hybrid("x", alpha=9),
                    query.bm25("item 11", limit=1)] * 30  # 90 searches: sent as 2 requests of 64 at most
        results = col.search.batch(searches)
        assert len(results) == 90
        for k, r in enumerate(results):
            if k % 3 == 1:
                assert isinstance(r, SearchError) and r.field == f"searches.{k}.hybrid.alpha", r
                assert r.error.startswith(f"searches.{k}.hybrid.alpha")
            else:
                assert isinstance(r, SearchResult) and r.hits[0].id == ("obj-00007", "obj-00011")[k % 3 // 2]


class FlakyGateway(BaseHTTPRequestHandler):
    """A loopback HTTP server answering 429 with Retry-After twice, then a real-looking 200."""

    calls: list[float] = []

    def do_GET(self) -> None:  # noqa: N802
        FlakyGateway.calls.append(time.monotonic())
        if len(FlakyGateway.calls) <= 2:
            body = b'{"error": "overloaded"}'
            self.send_response(429)
            self.send_header("Retry-After", "0.4")
        else:
            body = b'{"import_batch_size": 7, "max_page_size": 9, "search_batch_size": 3}'
            self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_retries_honour_retry_after_and_give_up_in_budget():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyGateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        FlakyGateway.calls = []
        with Client(f"http://127.0.0.1:{server.server_port}") as client:
            limits = client.limits()
        assert (limits.import_batch_size, limits.max_page_size) == (7, 9)
        gaps = [b - a for a, b in itertools.pairwise(FlakyGateway.calls)]
        assert len(gaps) == 2 and all(g >= 0.4 for g in gaps), gaps
        FlakyGateway.calls = []
        with Client(f"http://127.0.0.1:{server.server_port}",
                    retry=RetryPolicy(attempts=2)) as client, pytest.raises(Exception) as err:
            client.limits()
        assert err.value.status == 429 and err.value.retry_after == pytest.approx(0.4)
    finally:
        server.shutdown()


class FlakyGrpcGateway:
    """A loopback gRPC server answering GetLimits RESOURCE_EXHAUSTED with a retry-after trailer twice (the
    gateway's backpressure), then real limits."""

    def __init__(self) -> None:
        from polyvec_client._pb import gateway_pb2 as pb

        self.calls: list[float] = []

        def get_limits(request, context):
            self.calls.append(time.monotonic())
            if len(self.calls) <= 2:
                context.set_trailing_metadata((("retry-after", "0.4"),))
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded")
            return pb.Limits(import_batch_size=7, max_page_size=9, search_batch_size=3, max_request_bytes=99)

        handler = grpc.unary_unary_rpc_method_handler(get_limits,
                                                      request_deserializer=pb.GetLimitsRequest.FromString,
                                                      response_serializer=pb.Limits.SerializeToString)
        self.server = grpc.server(ThreadPoolExecutor(2))
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "polyvec.gateway.v1.Gateway", {"GetLimits": handler}),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()


def test_grpc_backpressure_is_retried_like_http_429():
    flaky = FlakyGrpcGateway()
    try:
        with Client(f"grpc://127.0.0.1:{flaky.port}") as client:
            limits = client.limits()
        assert (limits.import_batch_size, limits.max_page_size, limits.max_request_bytes) == (7, 9, 99)
        gaps = [b - a for a, b in itertools.pairwise(flaky.calls)]
        assert len(gaps) == 2 and all(g >= 0.4 for g in gaps), gaps
        flaky.calls = []
        with Client(f"grpc://127.0.0.1:{flaky.port}", retry=RetryPolicy(attempts=2)) as client, \
                pytest.raises(RateLimitedError) as err:
            client.limits()
        assert err.value.status == 429 and err.value.retry_after == pytest.approx(0.4)
        assert len(flaky.calls) == 2
    finally:
        flaky.server.stop(None)


def test_unreachable_grpc_gateway_is_a_transport_error():
    with Client("grpc://127.0.0.1:9", retry=RetryPolicy(attempts=2, backoff_s=0.01), timeout=5) as client, \
            pytest.raises(TransportError) as err:
        client.limits()
    assert err.value.status is None and not err.value.may_have_run
    started = time.monotonic()
    with Client("grpc://127.0.0.1:9") as client, pytest.raises(PolyvecError) as err:
        client.request("GET", "/v1/limits")  # a raw HTTP request has no gRPC method: said, not retried
    assert "no gRPC method" in err.value.message and time.monotonic() - started < 1


def test_grpc_and_http_give_the_same_results(gateway):
    with Client(gateway.http_url) as http, Client(f"grpc://{gateway.grpc_target}") as rpc:
        name = fresh(http)
        assert http.collections.get(name).raw == rpc.collections.get(name).raw
        items = list(records(40))
        items[3]["vectors"] = None
        assert rpc.collection(name).insert_many(items, progress=False, batch_size=15).ok == 40
        a, b = http.collection(name), rpc.collection(name)
        assert [o.to_import() for o in a.iterate(batch_size=7, with_vectors=True)] == \
            [o.to_import() for o in b.iterate(batch_size=7, with_vectors=True)]
        assert a.get("obj-00002", with_vectors=True) == b.get("obj-00002", with_vectors=True)
        assert a.count({"n": {"lt": 17}}) == b.count({"n": {"lt": 17}}) == 17
        searches = [query.near_text("green item 7", limit=4),
                    query.bm25("item 11", limit=3, properties=["n"]),
                    query.hybrid("blue item 8", alpha=0.3, limit=5, filter={"colour": "blue"}),
                    query.near_vector(a.get("obj-00009", with_vectors=True).vectors["main"], limit=2),
                    query.hybrid("x", alpha=9)]
        for body in searches[:4]:
            left, right = a.search.raw(body), b.search.raw(body)
            assert [(h["id"], h["score"], h["properties"]) for h in left["hits"]] == \
                [(h["id"], h["score"], h["properties"]) for h in right["hits"]]
        left, right = a.search.batch(searches), b.search.batch(searches)
        assert [r.hits if isinstance(r, SearchResult) else r for r in left] == \
            [r.hits if isinstance(r, SearchResult) else r for r in right]
        refused = []  # an image URL goes to the gateway over both (its URL policy refuses loopback)
        for col in (a, b):
            with pytest.raises(BadRequestError) as err:
                col.search.near_image("http://127.0.0.1:9/red.png")
            refused.append((err.value.status, err.value.field, err.value.message))
        assert refused[0] == refused[1] and refused[0][1] == "near_image.image", refused
        put_a, put_b = a.put("obj-00001", {"title": "x", "n": 1}), b.put("obj-00004", {"title": "x", "n": 4})
        assert put_a | {"id": "obj-00004", "uuid": object_uuid("obj-00004")} == put_b
        assert put_b["vectorized"] == ["main"]
        assert a.delete_many(ids=["obj-00001", "obj-00002"]) == 2 and b.delete_many(ids=["obj-00003"]) == 1
        assert rpc.collections.delete(name) and not http.collections.exists(name)


def test_503_from_the_gateway_is_retried(gateway, url):
    from services.inference.service import NotReady

    with Client(url, retry=RetryPolicy(backoff_s=0.05)) as client:
        col = client.collection(fresh(client))
        model = gateway.models["fake"]
        model.fail_next(NotReady("warming up"), times=2)  # 503 twice: this gateway does not retry itself
        calls = model.vectorize_calls
        assert col.insert_many(records(5), progress=False).ok == 5
        assert model.vectorize_calls - calls >= 3
        model.fail_next(NotReady("down"), times=100)
        with Client(url, retry=RetryPolicy(attempts=3, backoff_s=0.01)) as impatient:
            with pytest.raises(UnavailableError) as err:
                impatient.collection(col.name).search.near_text("x")
        assert err.value.status == 503 and "fake" in err.value.service
        model.service._faults.clear()


def test_skip_existing_and_interrupt(url):
    with Client(url) as client:
        col = client.collection(fresh(client))
        assert col.insert_many(records(50), progress=False).ok == 50
        report = col.insert_many(records(80), progress=False, skip_existing=True, batch_size=10)
        assert (report.ok, report.skipped) == (30, 50) and col.count() == 80

        def interrupted():
            yield from records(95, start=1000)
            raise KeyboardInterrupt

        with pytest.raises(ImportInterrupted) as err:
            col.insert_many(interrupted(), batch_size=10, concurrency=2, progress=False)
        report = err.value.report
        assert report.interrupted and report.ok == report.sent == 90 and report.unsent_from == 90
        assert col.count() == 80 + 90  # everything reported was acknowledged, nothing else written


def test_async_client_has_the_same_surface(url):
    async def scenario():
        async with AsyncClient(url) as client:
            name = f"a{uuid.uuid4().hex[:10]}"
            await client.collections.create(name, vectorizers={"main": {"model": "fake",
                                                                        "text_fields": ["title"]}})
            col = client.collection(name)

            async def source():
                for rec in records(260):
                    yield rec

            report = await col.insert_many(source(), batch_size=50, progress=False)
            assert report.ok == 260 and await col.count() == 260
            ids = [o.id async for o in col.iterate(batch_size=33)]
            assert sorted(ids) == [f"obj-{i:05d}" for i in range(260)]
            assert (await col.search.near_text("blue item 11", limit=1)).hits[0].id == "obj-00011"
            results = await col.search.batch([query.bm25("item 12", limit=1), query.near_text("")])
            assert results[0].hits[0].id == "obj-00012" and results[1].field == "searches.1.near_text.query"
            assert await col.delete_many({"colour": "red"}) == 87
            assert (await col.get("obj-00001")).properties["n"] == 1
            with pytest.raises(NotFoundError):
                await col.get("obj-00000")
            assert await client.collections.delete(name)

    asyncio.run(scenario())
