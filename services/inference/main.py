"""``polyvec inference``: run one inference service (one model per process).

Startup order, so probes answer while the model loads:

1. read settings (env, flags override) and check the model spec and device -
   a bad value prints one line and exits 2;
2. bind gRPC (health NOT_SERVING) and HTTP (ready -> 503);
3. load the model in a thread, then flip health to SERVING (ready -> 204);
4. on SIGTERM/SIGINT: NOT_SERVING, stop accepting, let in-flight calls finish,
   drain the batcher, exit 0.

``--download-only`` fetches and loads the model into MODEL_CACHE_DIR and exits
0 (Docker builds bake the model into the image that way).

:func:`start_servers` runs the same servers in-process (tests, benchmarks).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import uvicorn

from services import tracing
from services.env_settings import add_config_flag, add_setting_flags, read_settings_file
from services.inference.config import InferenceSettings, SettingsError
from services.inference.cpu_threads import default_openmp_wait, openmp_policy
from services.inference.loaders.base import Encoder
from services.inference.service import InferenceService
from services.net import http_protocol, listen_tcp, run_event_loop

log = logging.getLogger("polyvec.inference")

PROG = "polyvec inference"
EXIT_STARTUP = 2

_HELP = {
    "model": "a built-in model name (see the README), or use --model-properties",
    "model_properties": "JSON model spec in the Marqo modelProperties shape (bring your own model)",
    "model_auth": "JSON credentials for the model artifact: {s3: {...}, hf: {token}}",
    "model_cache_dir": "where downloaded/extracted models are cached",
    "model_format": "TORCH_SCRIPT or ONNX: which artifact of an OpenSearch pretrained MODEL "
                    "(default: ONNX where published, TORCH_SCRIPT with --enable-cuda)",
    "sparse_prune_ratio": "sparse models: drop weights not above this share of a text's largest (0-1)",
    "sparse_max_terms": "sparse models: keep at most this many weights per text (0: all)",
    "enable_cuda": "run on a GPU (0/1)",
    "cuda_device": "GPU index when --enable-cuda",
    "precision": "fp32, fp16 (GPU only) or bf16",
    "runtime": "torch, or onnx: a sentence-transformers text model runs on onnxruntime (exported once "
               "into MODEL_CACHE_DIR, checked against torch; a model it cannot take stays on torch)",
    "host": "address to listen on",
    "grpc_port": "gRPC port (0: any free port)",
    "http_port": "HTTP port for the Weaviate-compatible API and /metrics ('off' disables it)",
    "max_batch_size": "most items in one forward pass",
    "max_batch_tokens": "most tokens in one text batch, counted with padding (texts x the longest); "
                        "default 1024 on a CPU, no limit on a GPU; 0: no limit",
    "batch_pass_tokens": "a forward pass's fixed cost in padded tokens: with a token limit the waiting "
                         "texts are split by length into the batches of least total cost (default 64)",
    "batch_wait_ms": "longest wait for a batch to fill, counted from its oldest item",
    "batch_early_cut": "send a partial batch before the wait is over when the arrival rate shows that "
                       "waiting will not pay (0/1, default 0)",
    "max_queue": "most items waiting; beyond it requests get RESOURCE_EXHAUSTED / 429",
    "max_items_per_request": "most texts+images in one request",
    "max_request_bytes": "largest request body / gRPC message",
    "max_image_pixels": "largest image (width*height) accepted",
    "prep_threads": "threads for image decoding and preprocessing",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve one embedding model over gRPC (polyvec.inference.v1) and a Weaviate-compatible "
        "HTTP API. Every option can also be set by the environment variable shown, or in a --config file: "
        "options win over the environment, which wins over the file.",
    )
    add_config_flag(parser)
    add_setting_flags(parser, InferenceSettings, _HELP,
                      {"enable_cuda": {"nargs": "?", "const": "1", "metavar": "0|1"},
                       "batch_early_cut": {"metavar": "0|1"}})
    parser.add_argument("--download-only", action="store_true",
                        help="fetch and load the model into MODEL_CACHE_DIR, then exit 0 (for image builds)")
    parser.add_argument("--no-batching", action="store_true",
                        help="turn cross-request batching off: every request is its own forward pass "
                        "(a benchmark baseline)")
    return parser


def settings_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> InferenceSettings:
    """Flags > environment > --config file > defaults: every given flag is laid over its variable."""
    merged = dict(os.environ if environ is None else environ)
    for f in fields(InferenceSettings):
        value = getattr(args, f.name, None)
        if value is not None:
            merged[f.metadata["env"]] = str(value)
    config = getattr(args, "config", None)
    file_values = read_settings_file(config, InferenceSettings) if config else None
    return InferenceSettings.from_env(merged, file_values=file_values)


def setup_logging(settings: InferenceSettings) -> None:
    """The servers' one logging setup (services.logging_setup), told which values are secrets: what
    MODEL_AUTH holds (and the credential variables the libraries read)."""
    from services.inference.auth import secret_values
    from services.logging_setup import setup_logging as setup

    try:
        setup(settings.log_level, secrets=secret_values(settings.model_auth))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


# --------------------------------------------------------------- model spec
@dataclass
class ModelPlan:
    """Everything needed to load the model, checked before any port is opened."""

    spec: Any
    auth: Any
    choice: Any
    cache_dir: str
    sparse: Any = None  # SparseSettings
    runtime: str = "torch"  # RUNTIME


def plan_model(settings: InferenceSettings) -> ModelPlan:
    """Resolve MODEL / MODEL_PROPERTIES, MODEL_AUTH and the device (raise on bad values)."""
    from services.inference.auth import parse_model_auth
    from services.inference.device import DeviceChoice, DeviceError, choose_device
    from services.inference.loaders.artifact_encoder import SparseSettings

    if settings.model_properties:
        from services.inference.model_spec import parse_model_properties

        spec = parse_model_properties(settings.model_properties)
    else:
        from services.inference.registry import builtin_spec

        spec = builtin_spec(settings.model or "", settings.model_format, enable_cuda=settings.enable_cuda)
    auth = parse_model_auth(settings.model_auth)
    precision = settings.precision or getattr(spec, "precision", None)
    try:
        choice = choose_device(settings.enable_cuda, settings.cuda_device, precision)
    except DeviceError:
        if not (settings.enable_cuda and _runs_on_onnxruntime(spec)):
            raise
        # onnxruntime finds its own GPU (or falls back to the CPU, saying so): torch's CUDA does not matter
        choice = DeviceChoice(device=f"cuda:{settings.cuda_device}", precision="fp32")
    sparse = SparseSettings(settings.sparse_prune_ratio, settings.sparse_max_terms)
    if (sparse.prune_ratio or sparse.max_terms) and not spec.sparse:
        raise SettingsError(f"SPARSE_PRUNE_RATIO / SPARSE_MAX_TERMS apply to sparse models; {spec.name!r} is "
                            "a dense model")
    return ModelPlan(spec=spec, auth=auth, choice=choice, cache_dir=settings.model_cache_dir, sparse=sparse,
                     runtime=settings.runtime)


def _runs_on_onnxruntime(spec: Any) -> bool:
    return getattr(spec, "model_format", None) == "ONNX"


def load_model(plan: ModelPlan) -> Encoder:
    from services.inference.loaders import load_encoder

    return load_encoder(plan.spec, plan.choice, auth=plan.auth, cache_dir=plan.cache_dir, sparse=plan.sparse,
                        runtime=plan.runtime)


def _startup_errors() -> tuple[type[BaseException], ...]:
    """Error types that are the user's configuration, reported in one line (no traceback)."""
    kinds: list[type[BaseException]] = [SettingsError, OSError, ValueError]
    for module, name in (
        ("services.inference.artifacts", "ArtifactError"),
        ("services.inference.model_spec", "ModelSpecError"),
        ("services.inference.device", "DeviceError"),
    ):
        try:
            kinds.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):  # pragma: no cover - module still being written
            pass
    return tuple(kinds)


def _fail(message: str) -> int:
    from services.logging_setup import redact

    print(f"{PROG}: error: {redact(message)}", file=sys.stderr, flush=True)
    return EXIT_STARTUP


# ------------------------------------------------------------------ servers
class _EmbeddedUvicorn(uvicorn.Server):
    """A uvicorn Server that leaves signal handling to us (we share its event loop)."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


@dataclass
class RunningServer:
    """Servers of one in-process inference service; ``await stop()`` shuts them down gracefully."""

    service: InferenceService
    grpc: Any
    grpc_port: int
    http_port: int | None = None
    host: str = "127.0.0.1"
    _http_server: Any = None
    _http_task: asyncio.Task | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def _connect_host(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else "::1" if self.host == "::" else self.host
        return f"[{host}]" if ":" in host else host

    @property
    def grpc_target(self) -> str:
        """Where a local client reaches the gRPC port, e.g. ``127.0.0.1:50051``."""
        return f"{self._connect_host}:{self.grpc_port}"

    @property
    def http_url(self) -> str | None:
        """Base URL of the HTTP port from this machine (None when HTTP is off)."""
        return None if self.http_port is None else f"http://{self._connect_host}:{self.http_port}"

    async def set_serving(self, serving: bool) -> None:
        await self.grpc.set_serving(serving)

    async def attach(self, encoder: Encoder, *, owned: bool = False) -> None:
        """Serve ``encoder`` now (the model finished loading): health SERVING, ready 204.

        ``owned``: stopping the servers also releases the model.
        """
        self.service.attach(encoder, owned=owned)
        await self.set_serving(True)

    async def stop(self, grace: float = 5.0) -> None:
        """NOT_SERVING, stop accepting, finish in-flight calls (up to ``grace`` s), drain, release."""
        if self._stopped:
            return
        self._stopped = True
        jobs = [self.grpc.stop(grace)]
        if self._http_server is not None:
            self._http_server.should_exit = True
            jobs.append(_wait_task(self._http_task, grace + 1.0))
        await asyncio.gather(*jobs, return_exceptions=True)
        await self.service.close(drain=True)


async def _wait_task(task: asyncio.Task | None, timeout: float) -> None:
    if task is None:
        return
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout)
    except TimeoutError:
        task.cancel()
    except BaseException:  # noqa: BLE001 - the server task's own failure is logged by uvicorn
        pass


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return listen_tcp(host, port, family=family, backlog=1024)
    except OSError as exc:
        raise OSError(f"cannot listen for HTTP on {host}:{port}: {exc.strerror or exc}") from None


async def start_servers(
    target: Encoder | InferenceService,
    settings: InferenceSettings,
    *,
    batching: bool = True,
    host: str | None = None,
) -> RunningServer:
    """Start gRPC (+ HTTP unless ``settings.http_port`` is None) in this event loop.

    ``target`` is a loaded Encoder (served at once) or an InferenceService, whose
    health stays NOT_SERVING until an encoder is attached (:meth:`RunningServer.attach`).
    Port 0 picks a free port; the bound ports are on the result.
    """
    from services.inference.grpc_server import GrpcFront
    from services.inference.http_server import create_app

    service = target if isinstance(target, InferenceService) else InferenceService(
        target, settings, batching=batching)
    host = host or settings.host
    front = GrpcFront(
        service, host=host, port=settings.grpc_port, max_receive_bytes=settings.max_request_bytes
    )
    grpc_port = await front.start()
    running = RunningServer(service=service, grpc=front, grpc_port=grpc_port, host=host)
    try:
        if settings.http_port is not None:
            sock = _listen(host, settings.http_port)
            config = uvicorn.Config(
                create_app(service), log_config=None, access_log=False, lifespan="off",
                log_level="warning", timeout_graceful_shutdown=5, http=http_protocol(),
            )
            server = _EmbeddedUvicorn(config)
            task = asyncio.create_task(server.serve(sockets=[sock]), name="polyvec-http")
            while not server.started:
                if task.done():
                    task.result()
                    raise OSError("the HTTP server stopped during startup")
                await asyncio.sleep(0.01)
            running._http_server, running._http_task = server, task
            running.http_port = sock.getsockname()[1]
        if service.ready:
            await running.set_serving(True)
    except BaseException:
        await running.stop(grace=0)
        raise
    return running


# --------------------------------------------------------------------- main
async def serve(settings: InferenceSettings, plan: ModelPlan, *, batching: bool = True) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    service = InferenceService(None, settings, batching=batching)
    try:
        running = await start_servers(service, settings, batching=batching)
    except OSError as exc:
        return _fail(str(exc))
    log.info("gRPC listening on %s:%d%s; loading model %r", settings.host, running.grpc_port,
             f", HTTP on port {running.http_port}" if running.http_port is not None else "", plan.spec.name)

    loaded: asyncio.Future = loop.create_future()

    def load() -> None:  # a daemon thread: a SIGTERM during a long download must not wait for it
        try:
            encoder = load_model(plan)
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop
            loop.call_soon_threadsafe(_settle, loaded, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, loaded, encoder, None)

    threading.Thread(target=load, name="polyvec-load", daemon=True).start()
    stop_wait = asyncio.create_task(stop.wait())
    await asyncio.wait({loaded, stop_wait}, return_when=asyncio.FIRST_COMPLETED)

    if not loaded.done():
        log.info("stopping before the model finished loading")
        await running.stop()
        return 0
    failure = loaded.exception()
    if failure is not None:
        await running.stop(grace=0)
        if isinstance(failure, _startup_errors()):
            return _fail(f"cannot load model {plan.spec.name!r}: {failure}")
        log.debug("model load failed", exc_info=failure)
        return _fail(f"cannot load model {plan.spec.name!r}: {type(failure).__name__}: {failure}")

    encoder: Encoder = loaded.result()
    await running.attach(encoder, owned=True)
    info = encoder.info
    log.info("serving %s (%s, %d dims, %s) on %s/%s, %s", info.name, info.type, info.dimensions,
             "+".join(info.modalities), info.device, info.precision, info.runtime)
    if info.device == "cpu":
        log.info("idle OpenMP workers: %s", openmp_policy())
    await stop_wait
    log.info("shutting down: finishing in-flight requests")
    await running.stop()
    log.info("stopped")
    return 0


def _settle(future: asyncio.Future, value: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


def main(argv: list[str] | None = None) -> int:
    default_openmp_wait()  # before anything loads torch
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    errors = _startup_errors()
    try:
        settings = settings_from_args(args)
        setup_logging(settings)
        plan = plan_model(settings)
    except errors as exc:
        return _fail(str(exc))

    if args.download_only:
        try:
            encoder = load_model(plan)
        except errors as exc:
            return _fail(f"cannot load model {plan.spec.name!r}: {exc}")
        except Exception as exc:  # noqa: BLE001 - one clear line, no traceback
            log.debug("model load failed", exc_info=True)
            return _fail(f"cannot load model {plan.spec.name!r}: {type(exc).__name__}: {exc}")
        log.info("model %r is ready in %s (%d dims)", encoder.info.name, plan.cache_dir, encoder.dimensions)
        encoder.close()
        return 0

    tracing.setup("polyvec-inference")
    # how long a thread may keep the GIL while another waits for it (Python's default: 5 ms); see
    # InferenceSettings.switch_interval_ms
    sys.setswitchinterval(settings.switch_interval_ms / 1000.0)
    try:
        return run_event_loop(serve(settings, plan, batching=not args.no_batching))
    except KeyboardInterrupt:  # a second Ctrl-C
        return 130
    finally:
        tracing.shutdown()
