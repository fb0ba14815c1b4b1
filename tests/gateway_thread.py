"""A whole gateway on real parts, for tests that talk to it as a client would.

:func:`gateway_with_models` runs a GatewayService over a store with MODELS -> real in-process inference
servers (:class:`tests.gateway_support.InferenceUnderTest`, several models if asked);
:class:`GatewayThread` serves it through the gateway's real HTTP and gRPC fronts on loopback ports from a
thread with its own event loop, for synchronous tests (the polyvec-client tests, the CLI tests).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from gateway.config import GatewaySettings
from gateway.service import GatewayService
from gateway.storage.base import Store
from tests.gateway_support import InferenceUnderTest, make_store

DEFAULT_MODELS: dict[str, dict[str, Any]] = {"fake": {"dims": 24}}


@asynccontextmanager
async def gateway_with_models(
    store: Store, models: dict[str, dict[str, Any]] | None = None, **settings: Any
) -> AsyncIterator[tuple[GatewayService, dict[str, InferenceUnderTest]]]:
    """GatewayService over ``store`` with MODELS name -> InferenceUnderTest(**kwargs) for each of ``models``
    (default: "fake", 24-d, text + image). Yields ``(service, {name: inference})``; closes the store."""
    async with AsyncExitStack() as stack:
        stack.push_async_callback(lambda: asyncio.to_thread(store.close))
        running = {name: await stack.enter_async_context(InferenceUnderTest(**kwargs))
                   for name, kwargs in (models or DEFAULT_MODELS).items()}
        svc = GatewayService(store, GatewaySettings.from_env(
            {}, models={n: m.address for n, m in running.items()}, **settings))
        stack.push_async_callback(svc.close)
        yield svc, running


class GatewayThread:
    """``with GatewayThread(tmp_path, "edge") as gw:`` -> gw.http_url, gw.grpc_target, gw.models.

    Everything runs in one thread with its own event loop; leaving the block stops it and closes the store.
    """

    def __init__(self, path: Path, store: str = "edge", *, models: dict[str, dict[str, Any]] | None = None,
                 api_keys: tuple[str, ...] = (), **settings: Any) -> None:
        self.path = Path(path)
        self.store_kind = store
        self.model_kwargs = models
        self.api_keys = api_keys
        self.settings = settings
        self.http_url = ""
        self.grpc_target = ""
        self.models: dict[str, InferenceUnderTest] = {}
        self.service: GatewayService | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="gateway-thread", daemon=True)

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        if not self._ready.wait(120):
            raise RuntimeError("the gateway thread did not start within 120 s")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        import uvicorn

        from gateway.grpc_api import start_grpc_server
        from gateway.http_api import create_app

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        store = make_store(self.store_kind, self.path)
        async with gateway_with_models(store, self.model_kwargs, api_keys=self.api_keys,
                                       **self.settings) as (svc, models):
            self.service, self.models = svc, models
            grpc_server, grpc_port = await start_grpc_server(svc, "127.0.0.1", 0, api_keys=self.api_keys)
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            app = create_app(svc, api_keys=self.api_keys, max_request_bytes=svc.settings.max_request_bytes)
            config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
            server = uvicorn.Server(config)
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            try:
                while not server.started:
                    if serving.done():
                        serving.result()
                        raise RuntimeError("uvicorn stopped before it started")
                    await asyncio.sleep(0.02)
                self.http_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
                self.grpc_target = f"127.0.0.1:{grpc_port}"
                self._ready.set()
                await self._stop.wait()
            finally:
                server.should_exit = True
                await serving
                await grpc_server.stop(None)
                sock.close()
