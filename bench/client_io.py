"""polyvec-client speed and memory, measured against the gateway itself in the same run.

    python bench/client_io.py import  [--objects 10000]     # `polyvec import` vs the gateway's own import
    python bench/client_io.py export  [--objects 100000]    # `polyvec export` objects/s (target >= 20,000/s)
    python bench/client_io.py memory  [--lines 1000000]     # peak RSS of `polyvec import` on a big JSONL

* import: the real ``polyvec up --model sentence-transformers/all-MiniLM-L6-v2`` as a child process. The
  baseline is the gateway's own import throughput: the same objects, pre-serialised into requests of
  IMPORT_BATCH_SIZE objects, posted 4 at a time by a bare httpx loop (no file reading, no client). Then
  ``polyvec import`` (a child process reading the JSONL file, 4 requests in flight) into a second
  collection. Ratio = client / baseline (target >= 0.9).
* export: ``polyvec gateway`` on the embedded store (no model: the objects carry their own 8-d vectors),
  loaded with ``--objects`` objects, then ``polyvec export`` as a child process writing a JSONL file.
* memory: the same gateway; a generated JSONL of ``--lines`` objects (own vectors, so no model bounds the
  rate) imported by ``polyvec import`` in a child process whose peak RSS (ru_maxrss) is reported, for
  a tenth of the lines and for all of them (flat memory: about the same peak).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "clients" / "python" / "src"))

from bench.search import make_texts  # noqa: E402
from bench.up_child import UpChild  # noqa: E402
from services.up import free_port  # noqa: E402


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "clients" / "python" / "src"), str(REPO),
                                         env.get("PYTHONPATH", "")])
    env.pop("POLYVEC_URL", None)
    return env


def polyvec_cli(*args: str, url: str, stdout=subprocess.DEVNULL) -> tuple[float, int]:
    """Run ``polyvec ARGS`` (the services.cli entry point) as a child: (seconds, its peak RSS in KiB)."""
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", *args, "--url", url], cwd=REPO,
                                env=child_env(), stdout=stdout, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read()[-2000:]
            raise RuntimeError(f"polyvec {' '.join(args)} exited with {proc.returncode}:\n{tail}")
    return elapsed, int(usage.ru_maxrss)


class GatewayChild:
    """``polyvec gateway`` on the embedded store (no models), on a free port."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        env = {**child_env(), "DATA_DIR": str(data_dir), "HTTP_PORT": str(self.port), "GRPC_PORT": "off",
               "HOST": "127.0.0.1", "LOG_LEVEL": "WARNING"}
        env.pop("QDRANT_URL", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "services.cli", "gateway"], cwd=REPO, env=env)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> GatewayChild:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("polyvec gateway did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def own_vector_objects(n: int, dims: int = 8, seed: int = 1):
    rng = random.Random(seed)
    for i in range(n):
        yield {"id": f"o{i}", "properties": {"title": f"object number {i}", "n": i, "tag": f"t{i % 50}"},
               "vectors": {"main": [round(rng.uniform(-1, 1), 4) for _ in range(dims)]}}


def write_jsonl(path: Path, objects) -> None:
    with path.open("w") as f:
        for obj in objects:
            f.write(json.dumps(obj) + "\n")


OWN_VECTORS = {"vectorizers": {"main": {"dimensions": 8}}, "bm25": {"fields": []}}


# ---------------------------------------------------------------------------------------------- import
def bench_import(n: int) -> None:
    texts = make_texts(n, seed=9)
    objects = [{"id": f"d{i}", "properties": {"text": t[:300]}} for i, t in enumerate(texts)]
    with tempfile.TemporaryDirectory(prefix="polyvec-bench-client-") as tmp, UpChild(
            Path(tmp) / "data", env={"INFERENCE_TIMEOUT_S": "300"}) as up:
        src = Path(tmp) / "objects.jsonl"
        write_jsonl(src, objects)
        with httpx.Client(base_url=up.http_url, timeout=600) as c:
            for name in ("baseline", "client", "warmup"):
                c.post("/v1/collections", json={"name": name, "vectorizers": {
                    "main": {"model": "default", "text_fields": ["text"]}}}).raise_for_status()
            size = c.get("/v1/limits").json()["import_batch_size"]
            c.post("/v1/collections/warmup/objects", json={"objects": objects[:64]}).raise_for_status()
            bodies = [json.dumps({"objects": objects[i:i + size]}).encode() for i in range(0, n, size)]

            def post(body: bytes) -> None:
                r = c.post("/v1/collections/baseline/objects", content=body,
                           headers={"content-type": "application/json"})
                r.raise_for_status()
                assert r.json()["errors"] == 0

            start = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(post, bodies))
            base = n / (time.perf_counter() - start)
        elapsed, _ = polyvec_cli("import", "client", str(src), url=up.http_url)
        client = n / elapsed
    print(f"gateway's own import {base:,.0f} objects/s; `polyvec import` {client:,.0f} objects/s; "
          f"ratio {client / base:.2f} ({n:,} objects, all-MiniLM-L6-v2)")


# ---------------------------------------------------------------------------------------------- export
def bench_export(n: int) -> None:
    from polyvec_client import Client

    with tempfile.TemporaryDirectory(prefix="polyvec-bench-export-") as tmp, GatewayChild(Path(tmp)) as gw:
        with Client(gw.url) as client:
            client.collections.create("things", **OWN_VECTORS)
            start = time.perf_counter()
            report = client.collection("things").insert_many(own_vector_objects(n), progress=False)
            assert report.ok == n, report.failed[:3]
            print(f"loaded {n:,} objects in {time.perf_counter() - start:.1f} s", flush=True)
        out = Path(tmp) / "export.jsonl"
        with out.open("w") as f:
            elapsed, _ = polyvec_cli("export", "things", url=gw.url, stdout=f)
        lines = sum(1 for _ in out.open())
        assert lines == n, lines
        with out.open("w") as f:
            elapsed_v, _ = polyvec_cli("export", "things", "--with-vectors", url=gw.url, stdout=f)
    print(f"`polyvec export` {n / elapsed:,.0f} objects/s ({n:,} objects, {elapsed:.1f} s); "
          f"with vectors {n / elapsed_v:,.0f} objects/s")


# ---------------------------------------------------------------------------------------------- memory
def bench_memory(lines: int) -> None:
    with tempfile.TemporaryDirectory(prefix="polyvec-bench-memory-") as tmp, GatewayChild(Path(tmp)) as gw:
        with httpx.Client(base_url=gw.url) as c:
            for name in ("small", "big"):
                c.post("/v1/collections", json={"name": name, **OWN_VECTORS}).raise_for_status()
        for name, count in (("small", max(1, lines // 10)), ("big", lines)):
            src = Path(tmp) / f"{name}.jsonl"
            write_jsonl(src, own_vector_objects(count))
            size_mb = src.stat().st_size / 1e6
            elapsed, rss_kib = polyvec_cli("import", name, str(src), url=gw.url)
            with httpx.Client(base_url=gw.url) as c:
                stored = c.post(f"/v1/collections/{name}/count").json()["count"]
            assert stored == count, (stored, count)
            rate = count / elapsed
            print(f"`polyvec import` of {count:,} lines ({size_mb:,.0f} MB): peak RSS "
                  f"{rss_kib / 1024:,.0f} MiB, {elapsed:.0f} s ({rate:,.0f} objects/s)", flush=True)
            src.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["import", "export", "memory"])
    parser.add_argument("--objects", type=int)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    if args.what == "import":
        bench_import(args.objects or 10_000)
    elif args.what == "export":
        bench_export(args.objects or 100_000)
    else:
        bench_memory(args.lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
