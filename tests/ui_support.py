"""A live gateway for browser tests, and the headless Chromium that drives it.

:class:`LiveGateway` runs, in a background thread with its own event loop, the real inference server
over the deterministic test encoder (tests/gateway_support.py), a real GatewayService on QdrantStore
(``:memory:``) and the real FastAPI app under uvicorn on free loopback ports: one HTTP server without API
keys and one with ``API_KEYS`` set, both over the same service. Tests talk to it over HTTP as a browser
would.

:func:`chromium_path` finds Debian's ``chromium``; browser tests skip without it (never in CI, where
.ci/run installs it and ``CI`` is set).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from services.up import free_port

ROOT = Path(__file__).resolve().parent.parent
#: screenshots and traces of the browser tests (gitignored)
ARTIFACTS = ROOT / "test-artifacts" / "ui"
#: the flags every browser test starts Chromium with (plus a fresh --user-data-dir from Playwright)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
INSTALL_HINT = ("no Chromium here: install Debian's (sudo apt-get install -y chromium) or set "
                "POLYVEC_CHROMIUM=/path/to/chrome; browser tests run with Playwright for Python "
                "(pip install playwright, never `playwright install`)")


def chromium_path() -> str:
    """The browser to drive; skips the test without one (fails instead when CI is set)."""
    for candidate in (os.environ.get("POLYVEC_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests: {INSTALL_HINT}")
    pytest.skip(INSTALL_HINT)


class LiveGateway:
    """``with LiveGateway() as gw:`` -> ``gw.url`` (no API keys) and ``gw.keyed_url`` (API_KEYS=KEY)."""

    API_KEY = "ui-test-key"

    def __init__(self, *, dims: int = 32) -> None:
        self.dims = dims
        self.url = ""
        self.keyed_url = ""
        self.inference: Any = None
        self.service: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready: Future = Future()

    def __enter__(self) -> LiveGateway:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="live-gateway",
                                        daemon=True)
        self._thread.start()
        self._ready.result(timeout=120)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=60)

    async def _main(self) -> None:
        import uvicorn

        from gateway.http_api import create_app
        from gateway.storage.qdrant_store import QdrantStore
        from tests.gateway_support import gateway_with_inference

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        servers: list[uvicorn.Server] = []
        tasks: list[asyncio.Task] = []
        try:
            async with gateway_with_inference(QdrantStore(location=":memory:"), dims=self.dims) as (svc, inf):
                self.service, self.inference = svc, inf
                for keys in ((), (self.API_KEY,)):
                    port = free_port()
                    config = uvicorn.Config(create_app(svc, api_keys=keys), host="127.0.0.1", port=port,
                                            log_level="warning", access_log=False, lifespan="off")
                    server = uvicorn.Server(config)
                    servers.append(server)
                    tasks.append(asyncio.create_task(server.serve()))
                    while not server.started:
                        if tasks[-1].done():
                            tasks[-1].result()
                        await asyncio.sleep(0.02)
                    if keys:
                        self.keyed_url = f"http://127.0.0.1:{port}"
                    else:
                        self.url = f"http://127.0.0.1:{port}"
                self._ready.set_result(True)
                await self._stop.wait()
                for server in servers:
                    server.should_exit = True
                await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise
