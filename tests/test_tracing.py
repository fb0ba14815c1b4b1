"""OpenTelemetry: one search is one trace across the gateway process and the inference service.

The gateway runs as its own process with OTEL_EXPORTER_OTLP_ENDPOINT pointing at a real OTLP/gRPC
collector on loopback (the opentelemetry-proto TraceService, in this process). The inference service
is the real server in this process, tracing into the SDK's in-memory span exporter. One HTTP search
and one gRPC search must each give exactly one trace: the gateway's front span at the root, the
inference client span under it, the inference server span under that (its context came in the gRPC
metadata), the batcher's queue-wait / batch / forward spans under the server span, and the Qdrant
calls under the root. Without the variable the gateway exports nothing.
"""

from __future__ import annotations

import signal
import threading
from concurrent import futures

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from protos import gateway_pb2, gateway_pb2_grpc
from services import tracing
from tests.test_gateway_shutdown import Gateway, InferenceThread, wait_for


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver: keeps every span it is sent, with its service name."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 (gRPC method name)
        with self.lock:
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append({
                            "service": attrs.get("service.name"), "name": span.name,
                            "trace": span.trace_id.hex(), "id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex() or None})
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def collector():
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"http://127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture
def memory_exporter():
    exporter = InMemorySpanExporter()
    assert tracing.setup("polyvec-inference", exporter=exporter)
    yield exporter
    tracing.shutdown()


def _inference_spans(exporter: InMemorySpanExporter) -> list[dict]:
    return [{"service": "polyvec-inference", "name": s.name, "trace": f"{s.context.trace_id:032x}",
             "id": f"{s.context.span_id:016x}", "parent": f"{s.parent.span_id:016x}" if s.parent else None}
            for s in exporter.get_finished_spans()]


def _one_trace(spans: list[dict], root_name: str) -> dict[str, dict]:
    """The spans of the trace whose root is ``root_name``; checks it is one tree with that one root."""
    roots = [s for s in spans if s["name"] == root_name and s["parent"] is None]
    assert len(roots) == 1, [s["name"] for s in spans]
    trace_id = roots[0]["trace"]
    members = {s["id"]: s for s in spans if s["trace"] == trace_id}
    for span in members.values():
        assert span["parent"] is None or span["parent"] in members, f"{span['name']} has a parent outside"
        assert span["parent"] is not None or span is roots[0], f"a second root: {span['name']}"
    return members


def _children(members: dict[str, dict], parent: dict, name: str) -> list[dict]:
    return [s for s in members.values() if s["parent"] == parent["id"] and s["name"] == name]


def _descendants(members: dict[str, dict], ancestor: dict, name: str) -> list[dict]:
    def under(span: dict) -> bool:
        while span["parent"] is not None:
            span = members[span["parent"]]
            if span is ancestor:
                return True
        return False

    return [s for s in members.values() if s["name"] == name and under(s)]


def _check_search_trace(members: dict[str, dict], root_name: str) -> None:
    root = next(s for s in members.values() if s["name"] == root_name)
    assert root["service"] == "polyvec-gateway"
    # (FastAPI may put spans of its own between the HTTP front's span and ours)
    client = _descendants(members, root, "polyvec.inference.v1.Inference/Vectorize")
    client = [s for s in client if s["service"] == "polyvec-gateway"]
    assert len(client) == 1
    server = _children(members, client[0], "polyvec.inference.v1.Inference/Vectorize")
    assert len(server) == 1 and server[0]["service"] == "polyvec-inference"  # crossed the process boundary
    for stage in ("inference.queue_wait", "inference.batch", "inference.forward"):
        assert len(_children(members, server[0], stage)) == 1, stage
    for operation in ("qdrant.load_definition", "qdrant.search_dense"):
        found = _descendants(members, root, operation)
        assert len(found) == 1 and found[0]["service"] == "polyvec-gateway", operation


def test_one_search_is_one_trace_across_gateway_and_inference(tmp_path, collector, memory_exporter):
    received, endpoint = collector
    with InferenceThread(dims=8, name="traced") as inference:
        gateway = Gateway(tmp_path, inference.address, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                          OTEL_EXPORTER_OTLP_INSECURE="true", OTEL_BSP_SCHEDULE_DELAY="50",
                          DEFINITION_CACHE_S="0")
        try:
            created = httpx.post(f"{gateway.base}/v1/collections", timeout=30, json={
                "name": "notes", "vectorizers": {"main": {"model": "clip", "text_fields": ["text"]}}})
            assert created.status_code == 201, created.text
            wait_for(lambda: any(s["name"] == "POST /v1/collections" for s in received.spans),
                     "the first export")
            memory_exporter.clear()
            with received.lock:
                received.spans.clear()
            r = httpx.post(f"{gateway.base}/v1/collections/notes/search", timeout=30,
                           json={"near_text": {"query": "a red shoe"}})
            assert r.status_code == 200, r.text
            with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
                gateway_pb2_grpc.GatewayStub(channel).Search(gateway_pb2.SearchRequest(
                    collection="notes", near_text=gateway_pb2.NearText(query="blue")), timeout=30)
            gateway.proc.send_signal(signal.SIGTERM)  # shutting down flushes the gateway's exporter
            assert gateway.proc.wait(60) == 0, "".join(gateway.output)
        finally:
            gateway.kill()
    spans = received.spans + _inference_spans(memory_exporter)
    http_root, grpc_root = "POST /v1/collections/{name}/search", "polyvec.gateway.v1.Gateway/Search"
    http_trace = _one_trace(spans, http_root)
    grpc_trace = _one_trace(spans, grpc_root)
    _check_search_trace(http_trace, http_root)
    _check_search_trace(grpc_trace, grpc_root)
    assert set(http_trace).isdisjoint(grpc_trace)
    # nothing else was traced in between (probes and /metrics are not)
    assert {s["trace"] for s in spans} == {next(iter(http_trace.values()))["trace"],
                                           next(iter(grpc_trace.values()))["trace"]}


def test_tracing_is_off_without_an_endpoint(tmp_path, collector):
    received, _ = collector
    assert not tracing.enabled({})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    with InferenceThread(dims=8) as inference:
        gateway = Gateway(tmp_path, inference.address, OTEL_BSP_SCHEDULE_DELAY="50")
        try:
            created = httpx.post(f"{gateway.base}/v1/collections", timeout=30, json={
                "name": "n", "vectorizers": {"main": {"model": "clip", "text_fields": ["text"]}}})
            assert created.status_code == 201
            gateway.proc.send_signal(signal.SIGTERM)
            assert gateway.proc.wait(60) == 0
        finally:
            gateway.kill()
    assert received.spans == []
    assert "tracing on" not in "".join(gateway.output)
