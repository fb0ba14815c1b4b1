"""inference-images/healthcheck.py, the images' HEALTHCHECK, against real servers on loopback."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.deploy_support import IMAGES

SCRIPT = IMAGES / "healthcheck.py"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=30, env=full_env, check=False)


@pytest.fixture
def health_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_grpc_serving_is_healthy(health_server):
    servicer, port = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    result = _run("grpc", f"127.0.0.1:{port}")
    assert result.returncode == 0, result.stderr
    assert "SERVING" in result.stdout


def test_grpc_port_comes_from_the_environment(health_server):
    servicer, port = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert _run("grpc", env={"GRPC_PORT": str(port)}).returncode == 0


def test_grpc_not_serving_is_unhealthy(health_server):
    servicer, port = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    result = _run("grpc", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert "NOT_SERVING" in result.stderr


def test_grpc_nothing_listening_is_unhealthy():
    result = _run("grpc", f"127.0.0.1:{_free_port()}")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (http.server API)
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status, expected", [(200, 0), (503, 1)])
def test_http_mode(status, expected):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Handler,), {"status": status}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert _run("http", f"http://127.0.0.1:{port}/healthz").returncode == expected
        assert _run("http", env={"HTTP_PORT": str(port)}).returncode == expected  # default URL
    finally:
        server.shutdown()
        server.server_close()


def test_http_nothing_listening_is_unhealthy():
    assert _run("http", f"http://127.0.0.1:{_free_port()}/healthz").returncode == 1


def test_bad_usage():
    assert _run().returncode == 2
    assert _run("tcp").returncode == 2
