"""SIGTERM on a real `polyvec gateway` process: new requests are refused, those in flight finish.

The gateway runs as a child process on the embedded store; its model is the real inference server
(tests.gateway_support) in this process, whose forward pass is held on a gate. An HTTP import and a
gRPC search are in flight inside the gateway (waiting for the held model) when SIGTERM arrives: new
connections are refused on both ports at once, then the gate opens, both in-flight calls complete
with their results, and the process exits 0. With a short DRAIN_TIMEOUT_S and the gate kept shut, the
process still exits in bounded time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos import gateway_pb2, gateway_pb2_grpc
from services.up import free_port
from tests.gateway_support import InferenceUnderTest

ROOT = Path(__file__).resolve().parent.parent


class InferenceThread:
    """An :class:`InferenceUnderTest` served from its own event-loop thread (the gateway is a process)."""

    def __init__(self, **kwargs) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.inference = InferenceUnderTest(**kwargs)

    def __enter__(self) -> InferenceUnderTest:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.inference.start(), self.loop).result(60)
        return self.inference

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.inference.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Gateway:
    def __init__(self, tmp_path: Path, model_address: str, **env: str) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "API_KEYS"))}
        full_env.update(HOST="127.0.0.1", HTTP_PORT=str(self.http_port), GRPC_PORT=str(self.grpc_port),
                        DATA_DIR=str(tmp_path / "data"), MODELS=f"clip={model_address}",
                        INFERENCE_RETRY_BUDGET_S="0", INFERENCE_QUERY_RETRY_BUDGET_S="0", LOG_LEVEL="INFO",
                        **env)
        self.proc = subprocess.Popen([sys.executable, "-m", "services.cli", "gateway"], cwd=ROOT,
                                     env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.output: list[str] = []
        self._serving = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._serving.wait(90):
            self.kill()
            raise AssertionError("the gateway did not start:\n" + "".join(self.output))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if "polyvec gateway is serving" in line:
                self._serving.set()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def _refuses_http(base: str) -> bool:
    try:
        with httpx.Client() as client:  # a new connection
            client.get(f"{base}/healthz", timeout=2)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        # refused outright, or accepted into the backlog just before the listener closed and then reset:
        # either way the new request was not served
        return True
    return False


def _refuses_grpc(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNAVAILABLE
    return False


@pytest.fixture
def held_model():
    with InferenceThread(dims=8, name="held") as inference:
        try:
            yield inference
        finally:
            inference.encoder.gate.set()


@pytest.fixture
def start_gateway(tmp_path, held_model):
    """start_gateway(DRAIN_TIMEOUT_S) -> a running gateway with the collection "notes" on the held model."""
    started: list[Gateway] = []

    def start(drain_timeout_s: str) -> Gateway:
        gateway = Gateway(tmp_path, held_model.address, DRAIN_TIMEOUT_S=drain_timeout_s)
        started.append(gateway)
        created = httpx.post(f"{gateway.base}/v1/collections", timeout=30, json={
            "name": "notes", "vectorizers": {"main": {"model": "clip", "text_fields": ["text"]}}})
        assert created.status_code == 201, created.text
        return gateway

    yield start
    held_model.encoder.gate.set()
    for gateway in started:
        gateway.kill()


def test_sigterm_refuses_new_requests_and_finishes_those_in_flight(start_gateway, held_model):
    gateway, inference = start_gateway("60"), held_model
    inference.encoder.gate.clear()  # every forward pass now waits
    results: dict[str, object] = {}

    def http_import() -> None:
        try:
            results["http"] = httpx.post(f"{gateway.base}/v1/collections/notes/objects", timeout=120, json={
                "objects": [{"id": f"n{i}", "properties": {"text": f"note number {i}"}} for i in range(3)]})
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results["http"] = exc

    def grpc_search() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            try:
                results["grpc"] = gateway_pb2_grpc.GatewayStub(channel).Search(gateway_pb2.SearchRequest(
                    collection="notes", near_text=gateway_pb2.NearText(query="note")), timeout=120)
            except grpc.RpcError as exc:
                results["grpc"] = exc

    workers = [threading.Thread(target=http_import), threading.Thread(target=grpc_search)]
    for worker in workers:
        worker.start()
    # both calls are inside the gateway, waiting for the held model
    wait_for(lambda: inference.service is not None and inference.service.in_flight >= 2,
             "two calls in flight")

    gateway.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: _refuses_http(gateway.base), "HTTP to refuse new connections", 30)
    wait_for(lambda: _refuses_grpc(gateway.grpc_port), "gRPC to refuse new calls", 30)
    assert gateway.proc.poll() is None, "the gateway exited with requests in flight"
    assert not results, results

    inference.encoder.gate.set()
    for worker in workers:
        worker.join(60)
    response = results["http"]
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 200, response.text
    assert response.json()["ok"] == 3
    search = results["grpc"]
    assert isinstance(search, gateway_pb2.SearchResponse), search
    assert gateway.proc.wait(60) == 0, "".join(gateway.output)
    log = "".join(gateway.output)
    assert "Traceback" not in log, log


def test_drain_timeout_bounds_the_wait(start_gateway, held_model):
    gateway, inference = start_gateway("1"), held_model
    inference.encoder.gate.clear()
    thread = threading.Thread(target=lambda: _swallow(lambda: httpx.post(
        f"{gateway.base}/v1/collections/notes/objects", timeout=60,
        json={"objects": [{"id": "x", "properties": {"text": "stuck"}}]})), daemon=True)
    thread.start()
    wait_for(lambda: inference.service is not None and inference.service.in_flight >= 1, "a call in flight")
    started = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(30) == 0, "".join(gateway.output)
    assert time.monotonic() - started < 25  # DRAIN_TIMEOUT_S=1, not the 30 s the held model would take


def _swallow(call: Callable[[], object]) -> None:
    try:
        call()
    except Exception:  # noqa: BLE001 - the request is cut off on purpose
        pass
