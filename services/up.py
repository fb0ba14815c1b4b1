"""``polyvec up``: everything on one machine.

Reads a config file (default: services/up_default.yaml) with the environment and flags laid over it
(:func:`apply_precedence`), starts one inference service per model as a child process on loopback
(``python -m services.cli inference`` with MODEL or MODEL_PROPERTIES, GRPC_PORT a free port or the
model's ``grpc_port``, HTTP_PORT off or the model's ``http_port``), waits until each answers gRPC health
SERVING, then runs the gateway on the embedded store with MODELS pointing at them and prints where to go
(each model's addresses included). Ctrl-C or
SIGTERM stops the gateway and then every child (SIGTERM, then SIGKILL after a grace period). A child
that dies while the gateway runs is restarted on the same port, with backoff (:func:`supervise`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from services.net import run_event_loop

DEFAULT_CONFIG = Path(__file__).with_name("up_default.yaml")
OFFLINE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
STOP_GRACE_S = 15.0
PROG = "polyvec up"


class UpError(Exception):
    """polyvec up cannot go on; the message says why and what to do."""


@dataclass
class ModelConfig:
    name: str
    model: str | None = None
    model_properties: dict | str | None = None
    env: dict[str, str] = field(default_factory=dict)
    grpc_port: int | None = None  # None: a free loopback port
    http_port: int | None = None  # the Weaviate-compatible HTTP API (+ /metrics); None: off

    def describe(self) -> str:
        if self.model:
            return f"MODEL={self.model}"
        props = self.model_properties
        if isinstance(props, dict):
            return f"MODEL_PROPERTIES name={props.get('name')!r}"
        return "MODEL_PROPERTIES"


@dataclass
class UpConfig:
    models: list[ModelConfig]
    data_dir: str | None = None
    host: str = "127.0.0.1"
    http_port: int | str = 8000
    grpc_port: int | str = 50050
    startup_timeout_s: float = 1800.0


def load_config(path: str | Path | None) -> UpConfig:
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise UpError(f"cannot read the config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UpError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise UpError(f"{path}: the config must be a mapping")
    known = {"models", "data_dir", "host", "http_port", "grpc_port", "startup_timeout_s"}
    unknown = set(raw) - known
    if unknown:
        raise UpError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; "
                      f"known: {', '.join(sorted(known))}")
    models_raw = raw.get("models") or {}
    if not isinstance(models_raw, dict) or not models_raw:
        raise UpError(f"{path}: models must map a name to {{model: NAME}} or {{model_properties: {{...}}}}")
    models = []
    for name, spec in models_raw.items():
        if isinstance(spec, str):
            spec = {"model": spec}
        if not isinstance(spec, dict) or not (spec.get("model") or spec.get("model_properties")):
            raise UpError(f"{path}: models.{name} needs model (a built-in name) or model_properties")
        extra = set(spec) - {"model", "model_properties", "env", "grpc_port", "http_port"}
        if extra:
            raise UpError(f"{path}: models.{name}: unknown key(s) {', '.join(sorted(extra))}; "
                          "known: env, grpc_port, http_port, model, model_properties")
        where = f"{path}: models.{name}"
        env = {str(k): str(v) for k, v in (spec.get("env") or {}).items()}
        taken = {"GRPC_PORT", "HTTP_PORT", "HOST"} & set(env)
        if taken:
            raise UpError(f"{path}: models.{name}.env sets {', '.join(sorted(taken))}: "
                          f"use models.{name}.grpc_port / http_port (the service always listens on loopback)")
        models.append(ModelConfig(name=str(name), model=spec.get("model"),
                                  model_properties=spec.get("model_properties"), env=env,
                                  grpc_port=_config_port(spec.get("grpc_port"), f"{where}.grpc_port"),
                                  http_port=_config_port(spec.get("http_port"), f"{where}.http_port")))
    cfg = UpConfig(models=models)
    for key in ("data_dir", "host", "http_port", "grpc_port", "startup_timeout_s"):
        if raw.get(key) is not None:
            setattr(cfg, key, raw[key])
    return cfg


def _config_port(value: object, where: str) -> int | None:
    """A fixed port from the config (1-65535), or None (unset, null, or off)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("off", "none", "")):
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UpError(f"{where} must be a port number 1-65535 or off, not {value!r}")
    try:
        port = int(value)
    except ValueError:
        raise UpError(f"{where} must be a port number 1-65535 or off, not {value!r}") from None
    if not 1 <= port <= 65535:
        raise UpError(f"{where} must be a port number 1-65535 or off, not {port}")
    return port


#: `polyvec up` settings that the gateway's variables also set: flag > environment > config file.
ENV_OVERRIDES = {"data_dir": "DATA_DIR", "host": "HOST", "http_port": "HTTP_PORT", "grpc_port": "GRPC_PORT"}


def apply_precedence(cfg: UpConfig, flags: dict[str, object], environ: Mapping[str, str]) -> UpConfig:
    """Lay the environment (DATA_DIR, HOST, HTTP_PORT, GRPC_PORT), then the flags, over the config file's
    values: the same rule as `polyvec gateway` and `polyvec inference`."""
    for key, env in ENV_OVERRIDES.items():
        if environ.get(env, "").strip() != "":
            setattr(cfg, key, environ[env].strip())
    for key, value in flags.items():
        if value is not None:
            setattr(cfg, key, value)
    return cfg


def check_ports(cfg: UpConfig, settings_http: int | None, settings_grpc: int | None) -> None:
    """Refuse fixed ports used twice or already taken, before minutes of model loading."""
    wanted: list[tuple[str, str, int]] = []
    for name, port in (("http_port", settings_http), ("grpc_port", settings_grpc)):
        if port:
            wanted.append((name, str(cfg.host), port))
    for m in cfg.models:
        for kind in ("grpc_port", "http_port"):
            port = getattr(m, kind)
            if port:
                wanted.append((f"models.{m.name}.{kind}", "127.0.0.1", port))
    seen: dict[int, str] = {}
    for what, host, port in wanted:
        if port in seen:
            raise UpError(f"{what} and {seen[port]} are both port {port}")
        seen[port] = what
        if not port_is_free(host, port):
            raise UpError(f"{what}: port {port} on {host} is already in use")


def port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def model_from_flag(value: str) -> ModelConfig:
    """``--model NAME`` (a built-in name) or ``--model '{json spec}'`` (MODEL_PROPERTIES)."""
    value = value.strip()
    if value.startswith("{"):
        try:
            props = json.loads(value)
        except json.JSONDecodeError as exc:
            raise UpError(f"--model: not valid JSON: {exc}") from None
        return ModelConfig(name=str(props.get("name", "custom")), model_properties=props)
    return ModelConfig(name=value, model=value)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# -- children ----------------------------------------------------------------------------------------------


class Child:
    """One inference service process; its output is relayed with a [name] prefix and its tail kept."""

    def __init__(self, model: ModelConfig, port: int, *, http_port: int | None = None,
                 quiet: bool = False) -> None:
        self.model = model
        self.port = port
        self.http_port = http_port
        self.address = f"127.0.0.1:{port}"
        self.quiet = quiet
        self.proc: asyncio.subprocess.Process | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=25)
        self._relay: asyncio.Task | None = None
        self.restarts = 0

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("MODEL", "MODEL_PROPERTIES", "GRPC_PORT", "HTTP_PORT", "HOST"):
            env.pop(key, None)
        if self.model.model:
            env["MODEL"] = self.model.model
        else:
            props = self.model.model_properties
            env["MODEL_PROPERTIES"] = props if isinstance(props, str) else json.dumps(props)
        env.update({"GRPC_PORT": str(self.port), "HTTP_PORT": str(self.http_port or "off"),
                    "HOST": "127.0.0.1"})
        env.update(self.model.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "inference",
            env=self.env(), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        self._relay = asyncio.create_task(self._relay_output())

    async def _relay_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        buffer = ""
        while True:
            chunk = await self.proc.stdout.read(4096)
            if not chunk:
                break
            buffer += chunk.decode("utf-8", "replace")
            *lines, buffer = re.split(r"[\r\n]", buffer)
            for line in lines:
                if line.strip():
                    self.tail.append(line)
                    if not self.quiet:
                        print(f"[{self.model.name}] {line}", file=sys.stderr, flush=True)
        if buffer.strip():
            self.tail.append(buffer)

    async def restart(self) -> None:
        """Start the service again on the same port (after it exited)."""
        if self._relay is not None:
            try:
                await asyncio.wait_for(self._relay, 2)
            except (TimeoutError, asyncio.CancelledError):
                self._relay.cancel()
        self.restarts += 1
        await self.start()

    @property
    def exited(self) -> bool:
        return self.proc is not None and self.proc.returncode is not None

    async def serving(self) -> bool:
        """True once the child answers gRPC health SERVING."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            async with grpc.aio.insecure_channel(self.address) as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                return reply.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.aio.AioRpcError:
            return False

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(self.proc.wait(), STOP_GRACE_S)
            except ProcessLookupError:
                pass
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._relay is not None:
            try:
                await asyncio.wait_for(self._relay, 2)
            except (TimeoutError, asyncio.CancelledError):
                self._relay.cancel()

    def describe_addresses(self) -> str:
        text = f"gRPC {self.address}"
        if self.http_port:
            text += f"   HTTP http://127.0.0.1:{self.http_port} (Weaviate multi2vec API, /metrics)"
        return text

    def failure_message(self) -> str:
        code = self.proc.returncode if self.proc else None
        lines = [f"the inference service for model {self.model.name!r} ({self.model.describe()}) exited "
                 f"with code {code} before it was ready."]
        if self.tail:
            lines.append("Its last output:")
            lines += [f"  {line}" for line in list(self.tail)[-6:]]
        text = "\n".join(self.tail).lower()
        offline = any(w in text for w in ("connection", "network", "resolve", "offline", "download",
                                           "timed out", "unreachable", "hub"))
        if self.model.model != OFFLINE_MODEL:
            lead = ("It could not download the model (no network?). Start" if offline else
                    "If the model could not be downloaded (no network?), start")
            lines.append(f"{lead} with a model that works offline instead:\n"
                         f"  polyvec up --model {OFFLINE_MODEL}")
        return "\n".join(lines)


async def wait_ready(children: list[Child], timeout_s: float, stop_requested) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(children)
    while pending:
        if stop_requested():
            raise UpError("stopped before the inference services were ready")
        for child in list(pending):
            if child.exited:
                await asyncio.sleep(0.2)  # let the relay catch the last lines
                raise UpError(child.failure_message())
            if await child.serving():
                print(f"polyvec up: model {child.model.name!r} is ready on {child.address}", file=sys.stderr,
                      flush=True)
                pending.remove(child)
        if pending and time.monotonic() > deadline:
            names = ", ".join(repr(c.model.name) for c in pending)
            raise UpError(f"the inference service(s) for {names} did not become ready within {timeout_s:g} s "
                          "(raise startup_timeout_s in the config, or check the output above)")
        if pending:
            await asyncio.sleep(0.5)


async def supervise(child: Child, stop_requested, *, max_restarts: int = 5, window_s: float = 600.0,
                    base_delay_s: float = 1.0, max_delay_s: float = 30.0, ready_timeout_s: float = 600.0,
                    sleep=asyncio.sleep, clock=time.monotonic) -> None:
    """Restart ``child`` on its own port when it dies while the gateway runs.

    The gateway keeps its address and retries a model's calls inside its retry budget, so a model that
    is back within it is not noticed by clients. Restarts back off (1 s, 2 s, 4 s ... at most
    ``max_delay_s``), counting the restarts of the last ``window_s``; after ``max_restarts`` within
    ``window_s`` the child is left down and that is said once. ``sleep`` and ``clock`` are
    asyncio.sleep and time.monotonic (tests pass their own).
    """
    restarts: collections.deque[float] = collections.deque()
    while not stop_requested():
        if not child.exited:
            await sleep(0.5)
            continue
        code = child.proc.returncode if child.proc else None
        now = clock()
        while restarts and now - restarts[0] > window_s:
            restarts.popleft()
        if len(restarts) >= max_restarts:
            print(f"polyvec up: the inference service for model {child.model.name!r} exited with code {code} "
                  f"{len(restarts)} times within {window_s:g} s; leaving it down (calls that need it answer "
                  "503). Its last output:\n" + "\n".join(f"  {line}" for line in list(child.tail)[-6:]),
                  file=sys.stderr, flush=True)
            return
        delay = min(max_delay_s, base_delay_s * 2 ** len(restarts))
        print(f"polyvec up: the inference service for model {child.model.name!r} exited with code {code}; "
              f"restarting it in {delay:g} s (calls that need it wait for it within the gateway's retry "
              "budget)",
              file=sys.stderr, flush=True)
        restarts.append(now)
        await sleep(delay)
        if stop_requested():
            return
        await child.restart()
        deadline = clock() + ready_timeout_s
        while not child.exited and not stop_requested() and clock() < deadline:
            if await child.serving():
                print(f"polyvec up: model {child.model.name!r} is serving again on {child.address}",
                      file=sys.stderr, flush=True)
                break
            await sleep(0.5)


def models_summary(children: list[Child]) -> str:
    """One line per model: its name (the first is also "default") and the addresses it serves on."""
    width = max(len(c.model.name) for c in children)
    lines = []
    for i, child in enumerate(children):
        alias = '   (also "default")' if i == 0 and child.model.name != "default" else ""
        lines.append(f"  model  {child.model.name:<{width}}  {child.describe_addresses()}{alias}")
    return "\n".join(lines)


def example(http: str) -> str:
    return (
        "Try it:\n"
        f"  curl -s {http}/v1/collections -H 'content-type: application/json' \\\n"
        "    -d '{\"name\": \"notes\", \"vectorizers\": {\"main\": {\"model\": \"default\", "
        "\"text_fields\": [\"text\"]}}}'\n"
        f"  curl -s {http}/v1/collections/notes/objects -H 'content-type: application/json' \\\n"
        "    -d '{\"objects\": [{\"id\": \"n1\", \"properties\": {\"text\": \"the cat sat on the mat\"}}]}'\n"
        f"  curl -s {http}/v1/collections/notes/search -H 'content-type: application/json' \\\n"
        "    -d '{\"hybrid\": {\"query\": \"a cat\", \"alpha\": 0.5}}'"
    )


async def run_up(cfg: UpConfig, *, quiet_children: bool = False) -> int:
    from gateway.config import GatewaySettings, SettingsError, default_data_dir
    from gateway.main import STOP, build_store, describe, serve
    from gateway.storage.data_dir_lock import DataDirInUse

    data_dir = cfg.data_dir or default_data_dir()
    # the environment still sets API_KEYS, LOG_LEVEL, INFERENCE_*, ...; the store is always embedded here
    environ = {k: v for k, v in os.environ.items() if k not in ("QDRANT_URL", "MODELS")}
    try:
        settings_probe = GatewaySettings.from_env(environ, data_dir=str(data_dir), host=str(cfg.host),
                                                  http_port=str(cfg.http_port), grpc_port=str(cfg.grpc_port))
    except SettingsError as exc:
        raise UpError(str(exc)) from None
    check_ports(cfg, settings_probe.http_port, settings_probe.grpc_port)
    try:  # opened first: a DATA_DIR another process uses stops here, before any model is loaded
        store = build_store(settings_probe)
    except DataDirInUse as exc:
        raise UpError(str(exc)) from None
    children = [Child(m, m.grpc_port or free_port(), http_port=m.http_port, quiet=quiet_children)
                for m in cfg.models]
    watcher: asyncio.Future | None = None
    try:
        for child in children:
            print(f"polyvec up: starting the inference service for model {child.model.name!r} "
                  f"({child.model.describe()}) on {child.address}; a first start downloads the model",
                  file=sys.stderr, flush=True)
            await child.start()
        await wait_ready(children, float(cfg.startup_timeout_s), STOP.is_set)
        models = {c.model.name: c.address for c in children}
        if "default" not in models:
            models = {"default": children[0].address, **models}
        settings = dataclasses.replace(settings_probe, models=models)
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)

        def started(http_port: int | None, grpc_port: int | None) -> None:
            host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
            http = f"http://{host}:{http_port}"
            print("\npolyvec is up:\n" + describe(settings, http_port, grpc_port, models=False) + "\n"
                  + models_summary(children) + "\n\n"
                  + (example(http) + "\n\n" if http_port else "") + "Press Ctrl-C to stop.", flush=True)

        watcher = asyncio.gather(*(supervise(c, STOP.is_set) for c in children))
        await serve(settings, store, on_started=started)
        return 0
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher  # collect the cancellation (else asyncio logs it as never retrieved)
        if any(c.proc and c.proc.returncode is None for c in children):
            print("polyvec up: stopping the inference services", file=sys.stderr, flush=True)
        await asyncio.gather(*(c.stop() for c in children))
        await asyncio.to_thread(store.close)  # serve() closed it already unless it never ran


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Run polyvec on this machine: the embedded store, "
                                "the inference services of the config file, and the gateway.")
    p.add_argument("--config", help=f"config file (default: {DEFAULT_CONFIG})")
    p.add_argument("--model", action="append",
                   help="serve this model instead of the config's (a built-in name such as "
                        f"{OFFLINE_MODEL}, or a JSON model spec); repeat for several")
    p.add_argument("--data-dir", help="embedded store directory [env DATA_DIR]")
    p.add_argument("--host", help="gateway address (default 127.0.0.1) [env HOST]")
    p.add_argument("--http-port", help="gateway HTTP port (default 8000) [env HTTP_PORT]")
    p.add_argument("--grpc-port", help="gateway gRPC port (default 50050; 'off' disables it) [env GRPC_PORT]")
    p.add_argument("--startup-timeout-s", type=float, help="how long to wait for the models to load")
    p.add_argument("--quiet", action="store_true", help="do not relay the inference services' output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gateway.main import install_stop_handlers

    try:
        cfg = load_config(args.config)
        if args.model:
            cfg.models = [model_from_flag(m) for m in args.model]
        flags = {key: getattr(args, key) for key in ("data_dir", "host", "http_port", "grpc_port",
                                                      "startup_timeout_s")}
        apply_precedence(cfg, flags, os.environ)
        from services.logging_setup import setup_logging

        try:
            setup_logging(os.environ.get("LOG_LEVEL") or "INFO")  # the secret variables are masked
        except ValueError as exc:
            raise UpError(str(exc)) from None
        install_stop_handlers()
        from services import tracing

        tracing.setup("polyvec-gateway")  # the children trace as polyvec-inference (same environment)
        try:
            return run_event_loop(run_up(cfg, quiet_children=args.quiet))
        finally:
            tracing.shutdown()
    except UpError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
