"""A real ``polyvec gateway`` process on loopback ports, over the real inference server, for tests.

:class:`InferenceThread` runs ``services.inference`` (gRPC front, batcher, image decoding: the real
code) over :class:`tests.fake_encoders.FakeEncoder` in an event loop of its own thread.
:class:`GatewayProcess` starts ``python -m gateway.main`` (the embedded store under a temporary
DATA_DIR unless QDRANT_URL is given) with the settings a test passes as environment variables, learns
its ports from its "serving" banner, and keeps everything it prints in a log file the test can read
(``log()``, ``log_since()``) to check that nothing was logged with a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from services.inference.config import InferenceSettings
from services.inference.main import RunningServer, start_servers
from tests.fake_encoders import FakeEncoder

ROOT = Path(__file__).resolve().parent.parent
_HTTP = re.compile(r"HTTP\s+http://[^:]+:(\d+)")
_GRPC = re.compile(r"gRPC\s+\S+:(\d+)")


class InferenceThread:
    """``with InferenceThread() as inf:`` -> ``inf.address`` (host:port) of a real inference server."""

    def __init__(self, dims: int = 24, **settings: str) -> None:
        self.encoder = FakeEncoder(dims=dims)
        self.settings = settings
        self.address = ""
        self._loop = asyncio.new_event_loop()
        self._running: RunningServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="inference-under-test",
                                        daemon=True)

    def __enter__(self) -> InferenceThread:
        self._thread.start()

        async def start() -> RunningServer:
            env = {"HTTP_PORT": "off", **self.settings}
            settings = InferenceSettings.from_env(env, model="fake", grpc_port=0, host="127.0.0.1")
            return await start_servers(self.encoder, settings, batching=True, host="127.0.0.1")

        self._running = asyncio.run_coroutine_threadsafe(start(), self._loop).result(60)
        self.address = self._running.grpc_target
        return self

    def __exit__(self, *exc) -> None:
        if self._running is not None:
            asyncio.run_coroutine_threadsafe(self._running.stop(grace=0), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class GatewayProcess:
    """``with GatewayProcess(tmp_path, MODELS="clip=...") as gw:`` -> gw.http, gw.grpc_target, gw.log()."""

    def __init__(self, workdir: Path, *, startup_timeout_s: float = 90.0, **env: str) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = {"HOST": "127.0.0.1", "HTTP_PORT": "0", "GRPC_PORT": "0",
                    "DATA_DIR": str(self.workdir / "data"), **env}
        self.log_path = self.workdir / "gateway.log"
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.http = ""
        self.grpc_target = ""
        self._read_upto = 0

    def start(self) -> GatewayProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
        env.update(self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway.main"], cwd=ROOT, env=env,
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            text = self.log()
            http, grpc_port = _HTTP.search(text), _GRPC.search(text)
            if "is serving" in text and (http or self.env.get("HTTP_PORT") == "off") and \
                    (grpc_port or self.env.get("GRPC_PORT") == "off"):
                self.http = f"http://127.0.0.1:{http.group(1)}" if http else ""
                self.grpc_target = f"127.0.0.1:{grpc_port.group(1)}" if grpc_port else ""
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the gateway did not start within {self.startup_timeout_s:g}s:\n{self.log()}")

    def wait_exit(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_since(self) -> str:
        """What the gateway printed since the last call."""
        text = self.log()
        new, self._read_upto = text[self._read_upto:], len(text)
        return new

    def peak_rss_kib(self) -> int:
        """The process's peak resident set size (VmHWM) in KiB."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.asynccontextmanager
async def service_over_inference(tmp_path: Path, *, store: str = "edge", dims: int = 24, **settings: Any):
    """``(GatewayService, encoder)`` in this event loop: the real inference server (FakeEncoder) on a
    loopback port as MODELS ``clip``, and a real store (EdgeStore under tmp_path, or QdrantStore
    :memory:)."""
    from gateway.config import GatewaySettings
    from gateway.service import GatewayService

    encoder = FakeEncoder(dims=dims)
    inference = InferenceSettings.from_env({"HTTP_PORT": "off"}, model="fake", grpc_port=0, host="127.0.0.1")
    running = await start_servers(encoder, inference, batching=True, host="127.0.0.1")
    if store == "edge":
        from gateway.storage.edge_store import EdgeStore

        backend = EdgeStore(tmp_path / "edge")
    else:
        from gateway.storage.qdrant_store import QdrantStore

        backend = QdrantStore(location=":memory:")
    overrides = {"models": {"clip": running.grpc_target}, "inference_timeout_s": 10, **settings}
    svc = GatewayService(backend, GatewaySettings.from_env({}, **overrides))
    try:
        yield svc, running
    finally:
        await svc.close()
        backend.close()
        await running.stop(grace=0)
