"""``polyvec up``: everything on one machine.

Reads a config file (default: services/up_default.yaml), starts one inference service per model as a
child process on a free loopback port (``python -m services.cli inference`` with MODEL or
MODEL_PROPERTIES, GRPC_PORT, HTTP_PORT=off), waits until each answers gRPC health SERVING, then runs
the gateway on the embedded store with MODELS pointing at them and prints where to go. Ctrl-C or
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
from dataclasses import dataclass, field
from pathlib import Path

import yaml

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
        extra = set(spec) - {"model", "model_properties", "env"}
        if extra:
            raise UpError(f"{path}: models.{name}: unknown key(s) {', '.join(sorted(extra))}")
        models.append(ModelConfig(name=str(name), model=spec.get("model"),
                                  model_properties=spec.get("model_properties"),
                                  env={str(k): str(v) for k, v in (spec.get("env") or {}).items()}))
    cfg = UpConfig(models=models)
    for key in ("data_dir", "host", "http_port", "grpc_port", "startup_timeout_s"):
        if raw.get(key) is not None:
            setattr(cfg, key, raw[key])
    return cfg


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

    def __init__(self, model: ModelConfig, port: int, *, quiet: bool = False) -> None:
        self.model = model
        self.port = port
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
        env.update({"GRPC_PORT": str(self.port), "HTTP_PORT": "off", "HOST": "127.0.0.1"})
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
                    base_delay_s: float = 1.0, ready_timeout_s: float = 600.0) -> None:
    """Restart ``child`` on its own port when it dies while the gateway runs.

    The gateway keeps its address, so calls that need the model answer 503 only until the restarted
    service is SERVING again. Restarts back off (1 s, 2 s, 4 s ... at most 30 s); after ``max_restarts``
    within ``window_s`` the child is left down and that is said once.
    """
    restarts: collections.deque[float] = collections.deque()
    while not stop_requested():
        if not child.exited:
            await asyncio.sleep(0.5)
            continue
        code = child.proc.returncode if child.proc else None
        now = time.monotonic()
        while restarts and now - restarts[0] > window_s:
            restarts.popleft()
        if len(restarts) >= max_restarts:
            print(f"polyvec up: the inference service for model {child.model.name!r} exited with code {code} "
                  f"{len(restarts)} times within {window_s:g} s; leaving it down (calls that need it answer "
                  "503). Its last output:\n" + "\n".join(f"  {line}" for line in list(child.tail)[-6:]),
                  file=sys.stderr, flush=True)
            return
        delay = min(30.0, base_delay_s * 2 ** len(restarts))
        print(f"polyvec up: the inference service for model {child.model.name!r} exited with code {code}; "
              f"restarting it in {delay:g} s (calls that need it answer 503 meanwhile)",
              file=sys.stderr, flush=True)
        restarts.append(now)
        await asyncio.sleep(delay)
        if stop_requested():
            return
        await child.restart()
        deadline = time.monotonic() + ready_timeout_s
        while not child.exited and not stop_requested() and time.monotonic() < deadline:
            if await child.serving():
                print(f"polyvec up: model {child.model.name!r} is serving again on {child.address}",
                      file=sys.stderr, flush=True)
                break
            await asyncio.sleep(0.5)


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
    from gateway.main import STOP, describe, serve

    data_dir = cfg.data_dir or os.environ.get("DATA_DIR") or default_data_dir()
    # the environment still sets API_KEYS, LOG_LEVEL, INFERENCE_*, ...; the store is always embedded here
    environ = {k: v for k, v in os.environ.items() if k not in ("QDRANT_URL", "MODELS")}
    try:
        settings_probe = GatewaySettings.from_env(environ, data_dir=str(data_dir), host=str(cfg.host),
                                                  http_port=str(cfg.http_port), grpc_port=str(cfg.grpc_port))
    except SettingsError as exc:
        raise UpError(str(exc)) from None
    children = [Child(m, free_port(), quiet=quiet_children) for m in cfg.models]
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
            print("\npolyvec is up:\n" + describe(settings, http_port, grpc_port) + "\n\n"
                  + (example(http) + "\n\n" if http_port else "") + "Press Ctrl-C to stop.", flush=True)

        watcher = asyncio.gather(*(supervise(c, STOP.is_set) for c in children))
        await serve(settings, on_started=started)
        return 0
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher  # collect the cancellation (else asyncio logs it as never retrieved)
        if any(c.proc and c.proc.returncode is None for c in children):
            print("polyvec up: stopping the inference services", file=sys.stderr, flush=True)
        await asyncio.gather(*(c.stop() for c in children))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Run polyvec on this machine: the embedded store, "
                                "the inference services of the config file, and the gateway.")
    p.add_argument("--config", help=f"config file (default: {DEFAULT_CONFIG})")
    p.add_argument("--model", action="append",
                   help="serve this model instead of the config's (a built-in name such as "
                        f"{OFFLINE_MODEL}, or a JSON model spec); repeat for several")
    p.add_argument("--data-dir", help="embedded store directory [env DATA_DIR]")
    p.add_argument("--host", help="gateway address (default 127.0.0.1)")
    p.add_argument("--http-port", help="gateway HTTP port (default 8000)")
    p.add_argument("--grpc-port", help="gateway gRPC port (default 50050; 'off' disables it)")
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
        for key in ("data_dir", "host", "http_port", "grpc_port", "startup_timeout_s"):
            if getattr(args, key) is not None:
                setattr(cfg, key, getattr(args, key))
        import logging

        logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        install_stop_handlers()
        return asyncio.run(run_up(cfg, quiet_children=args.quiet))
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
