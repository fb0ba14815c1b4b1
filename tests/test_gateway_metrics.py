"""The gateway's /metrics: both API fronts, the calls to each model, the storage calls and imports.

Everything runs for real in one event loop: the gateway service on QdrantStore(:memory:), its HTTP
app, its gRPC server on a loopback port and the real inference server (tests.gateway_support).
"""

from __future__ import annotations

import asyncio
import base64

import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.grpc_api import start_grpc_server
from gateway.http_api import create_app
from protos import gateway_pb2 as pb
from protos import gateway_pb2_grpc
from services.inference.service import InvalidInput, NotReady
from tests.gateway_support import gateway_with_inference, make_store, png_bytes

DEF = {"name": "docs", "vectorizers": {"clip": {"model": "clip", "text_fields": ["title"],
                                                "image_fields": ["photo"]}}}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(series name, sorted labels) -> value, from a /metrics body."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_cover_fronts_models_storage_and_imports(tmp_path):
    async def scenario() -> dict:
        async with gateway_with_inference(make_store("qdrant", tmp_path),
                                          settings={"inference_retry_budget_s": 30}) as (svc, inference):
            server, port = await start_grpc_server(svc, "127.0.0.1", 0)
            transport = httpx.ASGITransport(app=create_app(svc), raise_app_exceptions=False)
            try:
                async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http, \
                        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = gateway_pb2_grpc.GatewayStub(channel)
                    assert (await http.post("/v1/collections", json=DEF)).status_code == 201
                    assert (await http.get("/docs")).status_code == 200
                    assert (await http.get("/no/such/path")).status_code == 404
                    # one good object and one whose image the model cannot decode
                    inference.fail_next(NotReady("warming up"))  # retried once, then served
                    r = await http.post("/v1/collections/docs/objects", json={"objects": [
                        {"id": "a", "properties": {"title": "a red fox",
                                                   "photo": base64.b64encode(png_bytes("red")).decode()}},
                        {"id": "b", "properties": {"title": "broken",
                                                   "photo": base64.b64encode(b"nope").decode()}},
                    ]})
                    assert (r.json()["ok"], r.json()["errors"]) == (1, 1), r.text
                    # a search over gRPC, one for a collection that does not exist
                    await stub.Search(pb.SearchRequest(collection="docs", near_text=pb.NearText(query="fox")))
                    try:
                        await stub.Search(pb.SearchRequest(collection="nope",
                                                           near_text=pb.NearText(query="x")))
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.NOT_FOUND
                    # the model holds: one RPC is in flight, then none
                    inference.encoder.gate.clear()
                    search = asyncio.create_task(http.post("/v1/collections/docs/search",
                                                           json={"near_text": {"query": "held"}}))
                    while inference.service is None or inference.service.in_flight < 1:
                        await asyncio.sleep(0.01)
                    during = samples((await http.get("/metrics")).text)
                    inference.encoder.gate.set()
                    assert (await search).status_code == 200
                    inference.fail_next(InvalidInput("texts[0]", "refused"))
                    r = await http.post("/v1/collections/docs/search", json={"near_text": {"query": "bad"}})
                    assert r.status_code == 400, r.text
                    after = samples((await http.get("/metrics")).text)
            finally:
                await server.stop(0)
            return {"during": during, "after": after}

    got = asyncio.run(asyncio.wait_for(scenario(), 120))
    m = got["after"]
    # HTTP: route templates, /docs under its own name, unknown paths as "unmatched"
    assert value(m, "polyvec_gateway_requests_total", method="POST", route="/v1/collections",
                 status="201") == 1
    assert value(m, "polyvec_gateway_requests_total", method="POST",
                 route="/v1/collections/{name}/objects", status="200") == 1
    assert value(m, "polyvec_gateway_requests_total", method="GET", route="/docs", status="200") == 1
    assert value(m, "polyvec_gateway_requests_total", method="GET", route="unmatched", status="404") == 1
    assert not any(labels and ("route", "/no/such/path") in labels for _, labels in m)
    # gRPC: by method and status code
    assert value(m, "polyvec_gateway_grpc_requests_total", method="Search", code="OK") == 1
    assert value(m, "polyvec_gateway_grpc_requests_total", method="Search", code="NOT_FOUND") == 1
    assert value(m, "polyvec_gateway_grpc_request_seconds_count", method="Search") == 2
    # inference calls, by the model's MODELS name
    # Meta: the collection's probe, and a re-read of the limits after the service answered UNAVAILABLE
    assert value(m, "polyvec_gateway_inference_call_seconds_count", model="clip", method="Meta",
                 outcome="ok") == 2
    assert value(m, "polyvec_gateway_inference_call_seconds_count", model="clip", method="Vectorize",
                 outcome="ok") >= 3
    assert value(m, "polyvec_gateway_inference_retries_total", model="clip", method="Vectorize",
                 code="UNAVAILABLE") == 1
    assert value(m, "polyvec_gateway_inference_failures_total", model="clip", method="Vectorize",
                 reason="rejected") >= 2  # the undecodable image, the refused query
    assert value(got["during"], "polyvec_gateway_inference_in_flight", model="clip") == 1
    assert value(m, "polyvec_gateway_inference_in_flight", model="clip") == 0
    # storage calls by operation
    assert value(m, "polyvec_gateway_store_seconds_count", store="qdrant", operation="upsert",
                 outcome="ok") == 1
    assert value(m, "polyvec_gateway_store_seconds_count", store="qdrant", operation="search_dense",
                 outcome="ok") >= 2
    # imports
    assert value(m, "polyvec_gateway_import_objects_total", result="ok") == 1
    assert value(m, "polyvec_gateway_import_objects_total", result="failed") == 1
