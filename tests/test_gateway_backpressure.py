"""Backpressure and overload between the gateway and the real inference server (in-process, loopback).

* an import larger than the service's queue is cut to fit it and succeeds (issue 7, defect 7);
* RESOURCE_EXHAUSTED is retried inside INFERENCE_RETRY_BUDGET_S, and comes out as 429 once spent;
* the gateway sheds requests past INFERENCE_MAX_WAITING with 429 + Retry-After / RESOURCE_EXHAUSTED +
  retry-after (defect 8), and serves again once the crowd is gone; a search that waited
  INFERENCE_QUERY_MAX_WAIT_S for the model is shed the same way, and a retried call keeps its turn;
* an item too large for any request to the service fails at once, naming the object's field.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import time

import grpc
import httpx
import pytest
from PIL import Image

from gateway.errors import BadRequest, Overloaded
from gateway.grpc_api import start_grpc_server
from gateway.http_api import create_app
from protos import gateway_pb2, gateway_pb2_grpc
from services.inference.service import Overloaded as InferenceOverloaded
from tests.gateway_support import gateway_with_inference, make_store, png_bytes

NOTES = {"name": "notes", "vectorizers": {"main": {"model": "clip", "text_fields": ["text"]}}}


def run(coro, timeout: float = 180):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def notes(n: int, prefix: str = "n") -> dict:
    return {"objects": [{"id": f"{prefix}{i}", "properties": {"text": f"note number {i} about topic {i % 7}"}}
                        for i in range(n)]}


@pytest.mark.parametrize("max_queue", [16, 64])
def test_a_lone_import_larger_than_the_inference_queue_succeeds(max_queue, tmp_path):
    """The issue's case: MAX_QUEUE=16 or 64, one 300-object import. The gateway used to send 64-item calls
    four at a time, the queue refused them, and the import failed with 503 after ~0.35 s."""

    async def scenario():
        store = make_store("qdrant", tmp_path)
        async with gateway_with_inference(store, max_queue=max_queue, max_batch_size=8,
                                          forward_delay=0.002) as (svc, inference):
            await svc.create_collection(NOTES)
            out = await svc.import_objects("notes", notes(300))
            assert (out["ok"], out["errors"]) == (300, 0)
            assert await asyncio.to_thread(store.count, "notes") == 300
            service = inference.service
            assert service.refused == 0  # sized to fit: the queue never had to say no
            assert service.max_items_in_flight <= max_queue
            assert max(service.call_sizes) <= max_queue // svc.settings.inference_concurrency
            hits = await svc.search("notes", {"near_text": {"query": "note number 123 about topic 4"},
                                              "limit": 1})
            assert hits["hits"][0]["id"] == "n123"

    run(scenario())


def test_a_busy_inference_service_is_waited_for_not_reported_down(tmp_path):
    async def scenario():
        store = make_store("edge", tmp_path)
        async with gateway_with_inference(store) as (svc, inference):
            await svc.create_collection(NOTES)
            inference.fail_next(InferenceOverloaded("queue full: another client"), 5)  # not a fixed 3
            out = await svc.import_objects("notes", notes(40))
            assert out["ok"] == 40
            client = svc.pool.get(inference.address)
            assert client.retries == 5
            assert await asyncio.to_thread(store.count, "notes") == 40

    run(scenario())


def test_a_refusal_that_outlasts_the_budget_is_429_naming_the_service(tmp_path):
    async def scenario():
        store = make_store("qdrant", tmp_path)
        settings = {"inference_retry_budget_s": 0.3, "inference_query_retry_budget_s": 0.2}
        async with gateway_with_inference(store, settings=settings) as (svc, inference):
            await svc.create_collection(NOTES)
            await svc.import_objects("notes", notes(3))
            inference.fail_next(InferenceOverloaded("queue full: 2048 items waiting"), 10_000)
            with pytest.raises(Overloaded) as info:
                await svc.import_objects("notes", notes(5, prefix="late"))
            assert "clip" in info.value.service and inference.address in info.value.message
            assert info.value.http_status == 429 and info.value.retry_after_s >= 1
            assert await asyncio.to_thread(store.count, "notes") == 3  # nothing half-written
            with pytest.raises(Overloaded):
                await svc.search("notes", {"near_text": {"query": "note"}})
            # over HTTP: 429 with Retry-After, the JSON error names the service
            app = create_app(svc)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
                r = await http.post("/v1/collections/notes/search", json={"hybrid": {"query": "note"}})
                assert r.status_code == 429, r.text
                assert int(r.headers["retry-after"]) >= 1
                assert "clip" in r.json()["service"] and r.json()["retry_after_s"] >= 1
                inference.service._faults.clear()
                r = await http.post("/v1/collections/notes/search", json={"hybrid": {"query": "note"}})
                assert r.status_code == 200  # recovered

    run(scenario())


def test_the_gateway_sheds_past_its_waiting_bound_over_http_and_grpc(tmp_path):
    async def scenario():
        store = make_store("qdrant", tmp_path)
        settings = {"inference_concurrency": 1, "inference_max_waiting": 3}
        async with gateway_with_inference(store, settings=settings) as (svc, inference):
            await svc.create_collection(NOTES)
            await svc.import_objects("notes", notes(5))
            client = svc.pool.get(inference.address)
            server, port = await start_grpc_server(svc, "127.0.0.1", 0)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            stub = gateway_pb2_grpc.GatewayStub(channel)
            transport = httpx.ASGITransport(app=create_app(svc), raise_app_exceptions=False)
            try:
                async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
                    inference.encoder.gate.clear()  # the model stalls: searches pile up in the gateway
                    search = {"near_text": {"query": "note number 2"}, "limit": 1}
                    held = [asyncio.create_task(http.post("/v1/collections/notes/search", json=search))
                            for _ in range(4)]  # 1 in flight + 3 waiting
                    await until(lambda: client.admission.active == 4)
                    r = await http.post("/v1/collections/notes/search", json=search)
                    assert r.status_code == 429, r.text
                    assert int(r.headers["retry-after"]) >= 1
                    assert "INFERENCE_MAX_WAITING" in r.json()["error"] and "clip" in r.json()["service"]
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.Search(gateway_pb2.SearchRequest(
                            collection="notes", near_text=gateway_pb2.NearText(query="note")), timeout=30)
                    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert int(dict(info.value.trailing_metadata())["retry-after"]) >= 1
                    # searches that need no inference are not affected
                    r = await http.post("/v1/collections/notes/search", json={"bm25": {"query": "note"}})
                    assert r.status_code == 200
                    inference.encoder.gate.set()
                    for response in await asyncio.gather(*held):
                        assert response.status_code == 200 and response.json()["hits"][0]["id"] == "n2"
                    r = await http.post("/v1/collections/notes/search", json=search)
                    assert r.status_code == 200  # served again once the crowd is gone
            finally:
                inference.encoder.gate.set()
                await channel.close()
                await server.stop(grace=None)

    run(scenario())


def test_a_search_that_waits_past_its_deadline_is_shed_while_the_call_ahead_still_runs(tmp_path):
    """INFERENCE_QUERY_MAX_WAIT_S: an admitted search waits at most that long for the model, then 429
    (RESOURCE_EXHAUSTED over gRPC), whatever the call ahead of it does; the one in flight is served."""

    async def scenario():
        store = make_store("qdrant", tmp_path)
        settings = {"inference_concurrency": 1, "inference_max_waiting": 3, "inference_query_max_wait_s": 0.2}
        async with gateway_with_inference(store, settings=settings) as (svc, inference):
            await svc.create_collection(NOTES)
            await svc.import_objects("notes", notes(5))
            client = svc.pool.get(inference.address)
            server, port = await start_grpc_server(svc, "127.0.0.1", 0)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            transport = httpx.ASGITransport(app=create_app(svc), raise_app_exceptions=False)
            try:
                async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
                    inference.encoder.gate.clear()  # the model stalls with one search in it
                    search = {"near_text": {"query": "note number 2"}, "limit": 1}
                    ahead = asyncio.create_task(http.post("/v1/collections/notes/search", json=search))
                    await until(lambda: client.slots.calls_in_flight == 1)
                    r = await http.post("/v1/collections/notes/search", json=search)
                    assert r.status_code == 429, r.text
                    assert int(r.headers["retry-after"]) >= 1 and r.json()["retry_after_s"] >= 1
                    assert "INFERENCE_QUERY_MAX_WAIT_S" in r.json()["error"] and "clip" in r.json()["service"]
                    assert not ahead.done() and not inference.encoder.gate.is_set()  # shed, not served late
                    assert client.slots.waiting == 0 and client.admission.active == 1  # it left the queue
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await gateway_pb2_grpc.GatewayStub(channel).Search(gateway_pb2.SearchRequest(
                            collection="notes", near_text=gateway_pb2.NearText(query="note")), timeout=30)
                    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert int(dict(info.value.trailing_metadata())["retry-after"]) >= 1
                    inference.encoder.gate.set()
                    served = await ahead
                    assert served.status_code == 200 and served.json()["hits"][0]["id"] == "n2"
                    r = await http.post("/v1/collections/notes/search", json=search)
                    assert r.status_code == 200  # nothing left over
            finally:
                inference.encoder.gate.set()
                await channel.close()
                await server.stop(grace=None)

    run(scenario())


def test_a_query_retried_after_resource_exhausted_keeps_its_place_in_the_queue(tmp_path):
    """The retry of a refused call rejoins the slot queue at its head, not behind later arrivals."""

    async def scenario():
        store = make_store("qdrant", tmp_path)
        async with gateway_with_inference(store) as (svc, inference):
            await svc.create_collection(NOTES)
            await svc.import_objects("notes", notes(3))
            client = svc.pool.get(inference.address)
            joins: list[bool] = []
            hold = client.slots.hold

            def watched_hold(n, *, urgent=False, first=False, deadline_s=None):
                joins.append(first)
                return hold(n, urgent=urgent, first=first, deadline_s=deadline_s)

            client.slots.hold = watched_hold  # type: ignore[method-assign]
            inference.fail_next(InferenceOverloaded("queue full: another client"), 2)
            out = await svc.search("notes", {"near_text": {"query": "note number 1"}, "limit": 1})
            assert out["hits"][0]["id"] == "n1"
            assert joins == [False, True, True]  # the first attempt queues at the back, each retry first

    run(scenario())


def test_an_item_too_large_for_the_service_fails_at_once_naming_its_field(tmp_path):
    noisy = io.BytesIO()
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(noisy, format="PNG")  # ~12 KB
    big = base64.b64encode(noisy.getvalue()).decode()

    async def scenario():
        store = make_store("qdrant", tmp_path)
        async with gateway_with_inference(store, max_request_bytes=4000) as (svc, inference):
            await svc.create_collection({"name": "pics", "vectorizers": {"clip": {
                "model": "clip", "text_fields": ["title"], "image_fields": ["photo"]}}})
            out = await svc.import_objects("pics", {"objects": [
                {"id": "small", "properties": {"title": "a red square",
                                               "photo": base64.b64encode(png_bytes("red")).decode()}},
                {"id": "big", "properties": {"title": "noise", "photo": big}},
            ]})
            status = {r["id"]: r for r in out["results"]}
            assert status["small"]["status"] == "ok"
            assert status["big"]["status"] == "error"
            assert status["big"]["field"] == "objects.1.properties.photo"
            assert "MAX_REQUEST_BYTES" in status["big"]["error"] and "4000" in status["big"]["error"]
            assert inference.service.images_seen == 1  # the big image was never sent
            with pytest.raises(BadRequest) as info:
                await svc.search("pics", {"near_image": {"image": big}})
            assert info.value.field == "near_image.image" and "MAX_REQUEST_BYTES" in info.value.message
            for searches in ([{"near_image": {"image": big}}],
                             [{"near_image": {"image": big}}, {"near_text": {"query": "red"}}]):
                out = await svc.search_batch("pics", {"searches": searches})
                first = out["results"][0]
                assert first["field"] == "searches.0.near_image.image"
                assert "MAX_REQUEST_BYTES" in first["error"] and "4000" in first["error"]
                assert "images[" not in first["error"]
                assert all("hits" in r for r in out["results"][1:])
            assert inference.service.images_seen == 1  # nor in a batch search

    run(scenario())


def test_an_import_survives_a_restart_of_the_inference_service(tmp_path):
    async def scenario():
        store = make_store("edge", tmp_path)
        async with gateway_with_inference(store) as (svc, inference):
            await svc.create_collection(NOTES)
            client = svc.pool.get(inference.address)
            await svc.import_objects("notes", notes(10))
            await inference.stop()
            task = asyncio.create_task(svc.import_objects("notes", notes(100, prefix="r")))
            await until(lambda: client.retries >= 3)
            assert not task.done()
            await inference.start()  # the replica is back on its port within the budget
            out = await task
            assert out["ok"] == 100
            assert await asyncio.to_thread(store.count, "notes") == 110

    run(scenario())


def test_a_search_query_goes_before_waiting_import_calls(tmp_path):
    async def scenario():
        store = make_store("qdrant", tmp_path)
        settings = {"inference_concurrency": 1, "inference_batch_size": 2}
        async with gateway_with_inference(store, settings=settings) as (svc, inference):
            await svc.create_collection(NOTES)
            await svc.import_objects("notes", notes(3))
            client = svc.pool.get(inference.address)
            service = inference.service
            service.call_sizes.clear()
            inference.encoder.gate.clear()
            importing = asyncio.create_task(svc.import_objects("notes", notes(10, prefix="big")))
            await until(lambda: service.call_sizes == [2] and client.slots.waiting == 4)
            searching = asyncio.create_task(svc.search("notes", {"near_text": {"query": "note number 1"}}))
            await until(lambda: client.slots.waiting == 5)
            inference.encoder.gate.set()
            await asyncio.gather(importing, searching)
            assert service.call_sizes == [2, 1, 2, 2, 2, 2]  # the query (1 item) next after the held call

    run(scenario())
