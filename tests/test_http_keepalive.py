"""No Nagle / delayed-ACK stall on keep-alive HTTP connections (inference service and gateway).

With Nagle's algorithm on, the second of two small writes waits for the peer's ACK of
the first, and the peer delays that ACK by up to 40 ms once a connection looks
interactive: every keep-alive request after the first few then takes >= 40 ms. A fresh
connection is not delayed (the kernel ACKs at once at the start of a connection), so
the check is a ratio measured on this machine in one go, not an absolute time: the
fastest of several requests on one keep-alive connection against the fastest of as
many requests each on a fresh connection, interleaved so both see the same load.
Without a stall a keep-alive request is no slower than a fresh one (it skips the
handshake); with one it is >= 40 ms against a few ms.

The client is a plain socket with Nagle on (Python's default), sending the request in
one write, or the head and the body in two writes as many HTTP clients do.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from gateway.config import GatewaySettings
from gateway.main import http_server
from services.inference.config import InferenceSettings
from services.inference.main import start_servers
from tests.fake_encoders import FakeEncoder

PAIRS = 10
#: a keep-alive request may take at most this many times the fastest fresh-connection one
MAX_RATIO = 2.0


def http_request(method: str, path: str, body: dict | None) -> tuple[bytes, bytes]:
    payload = json.dumps(body).encode() if body is not None else b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    return head, payload


def read_response(sock: socket.socket) -> int:
    """Read one response (Content-Length framed); return its status code."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    length = next(int(v) for k, _, v in (ln.partition(b":") for ln in lines[1:])
                  if k.strip().lower() == b"content-length")
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-body")
        rest += chunk
    assert len(rest) == length, "the server sent more than one response"
    return int(lines[0].split()[1])


def timed(sock: socket.socket, parts: tuple[bytes, bytes], split: bool) -> tuple[float, int]:
    start = time.perf_counter()
    if split:
        sock.sendall(parts[0])
        sock.sendall(parts[1])
    else:
        sock.sendall(parts[0] + parts[1])
    status = read_response(sock)
    return time.perf_counter() - start, status


def keepalive_vs_fresh(port: int, parts: tuple[bytes, bytes], *, split: bool) -> tuple[float, float]:
    """(fastest keep-alive request, fastest fresh-connection request) in seconds, interleaved."""
    keep: list[float] = []
    fresh: list[float] = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        for _ in range(3):  # past the connection's first exchanges, which the kernel ACKs at once
            timed(conn, parts, split)
        for _ in range(PAIRS):
            start = time.perf_counter()
            with socket.create_connection(("127.0.0.1", port), timeout=30) as one:
                _, status = timed(one, parts, split)
            fresh.append(time.perf_counter() - start)
            elapsed, status2 = timed(conn, parts, split)
            keep.append(elapsed)
            assert status == status2 and status < 500
    return min(keep), min(fresh)


def check_no_stall(port: int, parts: tuple[bytes, bytes], split: bool) -> None:
    keep, fresh = keepalive_vs_fresh(port, parts, split=split)
    ratio = keep / fresh
    assert ratio < MAX_RATIO, (
        f"keep-alive requests stall: the fastest of {PAIRS} took {keep * 1000:.1f} ms against "
        f"{fresh * 1000:.1f} ms on fresh connections ({ratio:.1f}x; Nagle + delayed ACK, see services/net.py)"
    )


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "head-then-body"])
def test_inference_http_keepalive_has_no_stall(split):
    parts = http_request("POST", "/vectorize", {"texts": ["a red shoe", "blue wool socks"]})

    async def main() -> None:
        settings = InferenceSettings(model="fake", host="127.0.0.1", grpc_port=0, http_port=0,
                                     batch_wait_ms=2).validate()
        running = await start_servers(FakeEncoder(), settings)
        try:
            await asyncio.to_thread(check_no_stall, running.http_port, parts, split)
        finally:
            await running.stop(grace=1)

    asyncio.run(asyncio.wait_for(main(), 120))


def serve_in_thread(make_server: Callable[[], Any]) -> tuple[Any, threading.Thread]:
    """Run a uvicorn server in its own thread's event loop; return once it listens."""
    holder: dict = {}
    ready = threading.Event()

    def run() -> None:
        async def main() -> None:
            server = make_server()
            holder["server"] = server
            task = asyncio.create_task(server.serve())
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            ready.set()
            await task

        try:
            asyncio.run(main())
        finally:
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(60)
    return holder["server"], thread


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "head-then-body"])
def test_gateway_http_keepalive_has_no_stall(split):
    from gateway.http_api import create_app
    from gateway.service import GatewayService
    from gateway.storage.qdrant_store import QdrantStore

    store = QdrantStore(location=":memory:")
    settings = GatewaySettings.from_env({}, host="127.0.0.1", http_port="0", grpc_port="off",
                                        log_level="WARNING")
    service = GatewayService(store, settings)
    server, thread = serve_in_thread(lambda: http_server(create_app(service), settings))
    try:
        assert server.started, "the gateway's HTTP server did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        # a collection definition with a bad name: the body is read, then a JSON 400 (nothing stored)
        parts = http_request("POST", "/v1/collections", {"name": "not a valid name", "vectorizers": {}})
        check_no_stall(port, parts, split)
    finally:
        server.should_exit = True
        thread.join(30)
        store.close()
