"""``polyvec gateway``: HTTP (uvicorn) and gRPC fronts in one event loop over one GatewayService.

Storage: a Qdrant server/cluster when QDRANT_URL is set, else the embedded store (qdrant-edge) under
DATA_DIR. Every flag mirrors an environment variable (``--http-port`` = HTTP_PORT, ...); flags win.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from gateway.config import GatewaySettings, SettingsError
from gateway.storage.base import Store
from gateway.storage.data_dir_lock import DataDirInUse
from services import tracing
from services.env_settings import add_config_flag, add_setting_flags, read_settings_file
from services.logging_setup import redact, setup_logging
from services.net import run_event_loop

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("polyvec.gateway")

#: Set by SIGINT/SIGTERM (see install_stop_handlers); uvicorn handles the signals itself while it runs
#: and re-raises them to these handlers when it returns.
STOP = threading.Event()


def install_stop_handlers() -> None:
    """SIGINT/SIGTERM set :data:`STOP` (no exception), so shutdown always runs the cleanup code."""

    def handler(signum, frame) -> None:
        STOP.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)

_HELP = {
    "qdrant_url": "Qdrant server/cluster URL (http[s]://host:6333); unset: embedded store under DATA_DIR",
    "qdrant_api_key": "Qdrant API key",
    "qdrant_https": "force TLS to Qdrant on/off (default: from the URL scheme)",
    "qdrant_tls_ca": "CA bundle (PEM) to verify Qdrant's TLS certificate",
    "data_dir": "embedded store directory (default: $XDG_DATA_HOME/polyvec or ~/.local/share/polyvec)",
    "host": "address to listen on (default 0.0.0.0)",
    "http_port": "HTTP port (default 8000; 'off' disables HTTP)",
    "grpc_port": "gRPC port (default 50050; 'off' disables gRPC)",
    "models": "model names -> inference gRPC addresses: name=host:port,name2=host:port",
    "inference_url_hosts": "comma-separated host, host:port or *.domain[:port] patterns a collection's "
                           "inference_url may name (default none: only MODELS)",
    "api_keys": "comma-separated API keys; when set every /v1 call needs one",
    "inference_timeout_s": "deadline of one inference call attempt in seconds (default 30)",
    "inference_concurrency": "calls in flight per inference service (default 4)",
    "inference_max_waiting": "requests that may wait for one inference service besides those with a call "
                             "in flight; past it: 429 / RESOURCE_EXHAUSTED at once (default 64)",
    "inference_query_max_wait_s": "seconds a search query may wait for one of INFERENCE_CONCURRENCY call "
                                  "slots; past it: 429 / RESOURCE_EXHAUSTED (default 10; 0: no deadline)",
    "inference_retry_budget_s": "seconds an import call refused with RESOURCE_EXHAUSTED/UNAVAILABLE is "
                                "retried, with jittered backoff (default 30)",
    "inference_query_retry_budget_s": "the same for search queries (default 2)",
    "inference_batch_size": "most items per Vectorize call; the service's limits may cut it (default 64)",
    "import_batch_size": "most objects per import request, and ids per delete (default 1000)",
    "max_page_size": "most objects per scroll page (default 1000)",
    "search_batch_size": "most searches per batch search request (default 64)",
    "max_request_bytes": "largest request body in bytes, counted as it streams in (default 64 MiB)",
    "max_json_depth": "deepest nesting of a request body's JSON (or gRPC Struct) (default 64)",
    "filter_max_depth": "deepest nesting of a search filter, counting objects and lists (default 32)",
    "eval_max_searches": "most searches one evaluation request (the search page's Evaluate tab) may run "
                         "(default 10000)",
    "image_urls": "fetch http(s) image URLs in image fields and near_image (0/1, default 1)",
    "image_url_hosts": "comma-separated hosts image URLs may point at (*.example.com for subdomains)",
    "image_url_allow_private": "allow image URLs on loopback/private networks (0/1, default 0)",
    "image_url_max_bytes": "largest fetched image in bytes (default 20 MiB)",
    "image_url_timeout_s": "deadline of one image fetch in seconds (default 10)",
    "image_url_trust_env": "fetch image URLs through the proxy of HTTP(S)_PROXY/NO_PROXY (0/1, default 0: "
                           "the environment's proxy settings are ignored)",
    "image_url_concurrency": "most image URL fetches at once per gateway; the rest wait their turn "
                             "(default 8)",
    "definition_cache_s": "seconds a collection definition is reused (default 2; 0 reads it every time)",
    "drain_timeout_s": "on SIGTERM/SIGINT, how long requests in flight may take to finish once new ones are "
                       "refused (default 30)",
    "log_level": "DEBUG, INFO (default), WARNING, ERROR",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polyvec gateway",
        description="Run the polyvec gateway (HTTP + gRPC) on Qdrant: a server/cluster when QDRANT_URL is "
                    "set, else the embedded store under DATA_DIR. Every option can also be set by the "
                    "environment variable shown, or in a --config file: options win over the environment, "
                    "which wins over the file.")
    add_config_flag(parser)
    add_setting_flags(parser, GatewaySettings, _HELP)
    return parser


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> GatewaySettings:
    """Flags > environment > --config file > defaults."""
    file_values = read_settings_file(args.config, GatewaySettings) if args.config else None
    flags = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    return GatewaySettings.from_env(environ, file_values=file_values, **flags)


def secrets_of(settings: GatewaySettings) -> list[str]:
    """The configured values no log line or error may show: the API keys, Qdrant's key and the
    password of QDRANT_URL (a URL's ``user:password@`` is masked by its shape anyway)."""
    from urllib.parse import urlsplit

    values = [*settings.api_keys, settings.qdrant_api_key or ""]
    if settings.qdrant_url:
        values.append(urlsplit(settings.qdrant_url).password or "")
    return [v for v in values if v]


def build_store(settings: GatewaySettings) -> Store:
    """QdrantStore for QDRANT_URL, else EdgeStore under DATA_DIR."""
    if settings.qdrant_url:
        from gateway.storage.qdrant_store import QdrantStore

        return QdrantStore(url=settings.qdrant_url, api_key=settings.qdrant_api_key,
                           https=settings.qdrant_https, verify=settings.qdrant_tls_ca or True)
    from pathlib import Path

    from gateway.storage.edge_store import EdgeStore

    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    return EdgeStore(settings.data_dir)


def describe(settings: GatewaySettings, http_port: int | None, grpc_port: int | None, *,
             models: bool = True) -> str:
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    lines = []
    if http_port is not None:
        lines.append(f"  HTTP   http://{host}:{http_port}   (API docs: http://{host}:{http_port}/docs)")
        lines.append(f"  page   http://{host}:{http_port}/ui   (search and evaluate in a browser)")
    if grpc_port is not None:
        lines.append(f"  gRPC   {host}:{grpc_port}   (polyvec.gateway.v1.Gateway)")
    lines.append("  store  " + (f"Qdrant at {settings.qdrant_url}" if settings.qdrant_url
                                else f"embedded, {settings.data_dir}"))
    for name, address in settings.models.items() if models else ():
        lines.append(f"  model  {name} -> {address}")
    return "\n".join(lines)


def http_server(app: Any, settings: GatewaySettings) -> uvicorn.Server:
    """The uvicorn server for the HTTP front (keep-alive connections without the Nagle stall)."""
    import uvicorn

    from services.net import http_protocol

    assert settings.http_port is not None
    # log_config=None: uvicorn's records go through the root handler (one format, redacted)
    config = uvicorn.Config(app, host=settings.host, port=settings.http_port, http=http_protocol(),
                            log_config=None, log_level=settings.log_level.lower(), access_log=False,
                            lifespan="off", timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s))
    return uvicorn.Server(config)


async def serve(settings: GatewaySettings, store: Store | None = None, *,
                on_started: Callable[[int | None, int | None], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM. ``on_started(http_port, grpc_port)`` is called once both listen."""
    from gateway.grpc_api import start_grpc_server
    from gateway.http_api import create_app
    from gateway.service import GatewayService

    store = store if store is not None else build_store(settings)
    service = GatewayService(store, settings)
    grpc_server = None
    grpc_port: int | None = None
    server: uvicorn.Server | None = None
    closing = False

    def stopping() -> bool:
        return closing or STOP.is_set() or (server is not None and server.should_exit)

    drain: asyncio.Task | None = None
    try:
        if settings.grpc_port is not None:
            grpc_server, grpc_port = await start_grpc_server(
                service, settings.host, settings.grpc_port, api_keys=settings.api_keys,
                max_message_bytes=settings.max_request_bytes)
            drain = asyncio.create_task(_drain_grpc_on_stop(grpc_server, stopping, settings.drain_timeout_s))
        if settings.http_port is not None:
            app = create_app(service, api_keys=settings.api_keys,
                             max_request_bytes=settings.max_request_bytes,
                             max_json_depth=settings.max_json_depth)
            # On SIGTERM/SIGINT uvicorn closes its listening socket at once, closes idle keep-alive
            # connections and waits up to DRAIN_TIMEOUT_S for the requests in flight.
            server = http_server(app, settings)

            async def announce() -> None:
                while not server.started and not server.should_exit:
                    await asyncio.sleep(0.05)
                if server.started and on_started is not None:
                    port = settings.http_port
                    for s in server.servers:
                        for sock in s.sockets:
                            port = sock.getsockname()[1]
                    on_started(port, grpc_port)

            if STOP.is_set():
                return
            watcher = asyncio.create_task(announce())
            try:
                await server.serve()
            finally:
                watcher.cancel()
            if not server.started and not STOP.is_set():
                raise OSError(f"the HTTP server could not start on {settings.host}:{settings.http_port}")
        else:
            if on_started is not None:
                on_started(None, grpc_port)
            while not STOP.is_set():
                await asyncio.sleep(0.2)
    finally:
        closing = True  # also when an error ended the HTTP server: drain gRPC now
        if drain is not None:
            try:
                await drain
            except asyncio.CancelledError:
                if grpc_server is not None:
                    await grpc_server.stop(grace=None)
                raise
        elif grpc_server is not None:
            await grpc_server.stop(grace=settings.drain_timeout_s)
        await service.close()
        await asyncio.to_thread(store.close)


async def _drain_grpc_on_stop(grpc_server, stopping: Callable[[], bool], grace_s: float) -> None:
    """Once ``stopping()``: refuse new RPCs and give those in flight ``grace_s`` seconds to finish.

    Runs beside uvicorn's own drain, so both fronts stop taking requests at the same moment.
    """
    while not stopping():
        await asyncio.sleep(0.05)
    log.info("stopping: new requests are refused; waiting up to %g s for those in flight", grace_s)
    await grpc_server.stop(grace=grace_s)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"polyvec gateway: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, secrets=secrets_of(settings))
    try:
        store = build_store(settings)
    except DataDirInUse as exc:
        print(f"polyvec gateway: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(redact(f"polyvec gateway: cannot open the store: {type(exc).__name__}: {exc}"), file=sys.stderr)
        return 1

    def started(http_port: int | None, grpc_port: int | None) -> None:
        print("polyvec gateway is serving:\n" + redact(describe(settings, http_port, grpc_port)), flush=True)

    install_stop_handlers()
    tracing.setup("polyvec-gateway")
    try:
        run_event_loop(serve(settings, store, on_started=started))
    except KeyboardInterrupt:
        pass
    except (OSError, SystemExit) as exc:
        print(redact(f"polyvec gateway: {exc}"), file=sys.stderr)
        return 1
    finally:
        tracing.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
