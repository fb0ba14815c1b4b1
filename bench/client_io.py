"""polyvec-client speed and memory, measured against the gateway itself in the same run.

    python bench/client_io.py import  [--objects 10000]     # `polyvec import` vs the gateway's own import
    python bench/client_io.py export  [--objects 100000] [--rounds 3] [--against GIT_REF]
                                                            # `polyvec export` objects/s (target >= 20,000/s)
    python bench/client_io.py memory  [--lines 1000000]     # peak RSS of `polyvec import` on a big JSONL
    python bench/client_io.py transport [--objects 20000] [--searches 2000] [--rounds 3]
                                                            # the client over gRPC vs over HTTP

* import: the real ``polyvec up --model sentence-transformers/all-MiniLM-L6-v2`` as a child process. The
  baseline is the gateway's own import throughput: the same objects, pre-serialised into requests of
  IMPORT_BATCH_SIZE objects, posted 4 at a time by a bare httpx loop (no file reading, no client). Then
  ``polyvec import`` (a child process reading the JSONL file, 4 requests in flight) into a second
  collection. Ratio = client / baseline (target >= 0.9).
* export: ``polyvec gateway`` on the embedded store (no model: the objects carry their own 8-d vectors),
  loaded with ``--objects`` objects, then, alternating ``--rounds`` times: the gateway's bare paging rate
  (a bare httpx loop fetching every page of 1,000 and discarding it: the ceiling for any client) and
  ``polyvec export`` as a child process writing a JSONL file (with the CPU seconds the gateway and the
  command used, which a loaded machine distorts less than wall time); once ``--with-vectors``. With
  ``--against REF`` the gateway and command of that commit (``git archive``) run in the same rounds on
  the same data, alternating with this checkout's, and the after/before ratio is printed.
* memory: the same gateway; a generated JSONL of ``--lines`` objects (own vectors, so no model bounds the
  rate) imported by ``polyvec import`` in a child process whose peak RSS (ru_maxrss) is reported, for
  a tenth of the lines and for all of them (flat memory: about the same peak).
* transport: the same gateway with its gRPC port open too; alternating ``--rounds`` times, one
  ``Client`` per transport (``http://`` and ``grpc://``, in this process) imports ``--objects`` objects
  with their own 8-d vectors into a fresh collection (``insert_many``, 4 requests in flight), then runs
  ``--searches`` near_vector searches one after another (limit 10) and the same searches as batches of
  32 (``search.batch``). Printed: objects/s and searches/s per transport, and the CPU time the client
  (this process) and the gateway used per 1,000 (medians over the rounds), with the gRPC/HTTP ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
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


def child_env(tree: Path = REPO) -> dict[str, str]:
    """The environment of a child running the gateway and client code of ``tree`` (this checkout, or an
    older commit's files for --against)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree / "clients" / "python" / "src"), str(tree),
                                         env.get("PYTHONPATH", "")])
    env.pop("POLYVEC_URL", None)
    return env


def polyvec_cli(*args: str, url: str, stdout=subprocess.DEVNULL,
                tree: Path = REPO) -> tuple[float, int, float]:
    """Run ``polyvec ARGS`` (the services.cli entry point) as a child: (seconds, its peak RSS in KiB, its
    CPU seconds)."""
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", *args, "--url", url], cwd=tree,
                                env=child_env(tree), stdout=stdout, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read()[-2000:]
            raise RuntimeError(f"polyvec {' '.join(args)} exited with {proc.returncode}:\n{tail}")
    return elapsed, int(usage.ru_maxrss), usage.ru_utime + usage.ru_stime


class GatewayChild:
    """``polyvec gateway`` on the embedded store (no models), on a free port."""

    def __init__(self, data_dir: Path, tree: Path = REPO, *, grpc: bool = False) -> None:
        self.port = free_port()
        self.grpc_port = free_port() if grpc else None
        env = {**child_env(tree), "DATA_DIR": str(data_dir), "HTTP_PORT": str(self.port),
               "GRPC_PORT": str(self.grpc_port or "off"), "HOST": "127.0.0.1", "LOG_LEVEL": "WARNING"}
        env.pop("QDRANT_URL", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "services.cli", "gateway"], cwd=tree, env=env)
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
        elapsed, _, _ = polyvec_cli("import", "client", str(src), url=up.http_url)
        client = n / elapsed
    print(f"gateway's own import {base:,.0f} objects/s; `polyvec import` {client:,.0f} objects/s; "
          f"ratio {client / base:.2f} ({n:,} objects, all-MiniLM-L6-v2)")


# ---------------------------------------------------------------------------------------------- export
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bare_scroll(url: str, n: int, page: int = 1000) -> float:
    """The gateway's own paging rate: every page of the collection fetched by a bare httpx loop that
    neither parses nor writes anything (only the cursor is read). The ceiling for any client."""
    seen = 0
    cursor = None
    start = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as c:
        while True:
            body = {"limit": page} if cursor is None else {"limit": page, "cursor": cursor}
            r = c.post("/v1/collections/things/objects/scroll", json=body)
            r.raise_for_status()
            tail = r.content[-200:].decode()  # ..."next_cursor":"..."} or null}
            cursor = json.loads("{" + tail[tail.rindex('"next_cursor"'):])["next_cursor"]
            seen += r.content.count(b'"uuid":')
            if cursor is None:
                break
    assert seen == n, seen
    return n / (time.perf_counter() - start)


def checkout(ref: str, into: Path) -> Path:
    """The files of git ``ref`` of this repository, extracted under ``into`` (for --against)."""
    tree = into / "against"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def export_round(data: Path, n: int, out: Path, tree: Path) -> tuple[float, float, float, float]:
    """One gateway of ``tree`` on ``data``: (bare paging objects/s, `polyvec export` objects/s, the
    gateway's and the command's CPU seconds during the export)."""
    with GatewayChild(data, tree) as gw:
        bare = bare_scroll(gw.url, n)
        gateway_cpu = cpu_seconds(gw.proc.pid)
        with out.open("w") as f:
            elapsed, _, client_cpu = polyvec_cli("export", "things", url=gw.url, stdout=f, tree=tree)
        gateway_cpu = cpu_seconds(gw.proc.pid) - gateway_cpu
    lines = sum(1 for _ in out.open())
    assert lines == n, lines
    return bare, n / elapsed, gateway_cpu, client_cpu


def bench_export(n: int, rounds: int, against: str | None) -> None:
    from polyvec_client import Client

    with tempfile.TemporaryDirectory(prefix="polyvec-bench-export-") as tmp:
        data = Path(tmp) / "data"
        with GatewayChild(data) as gw:
            with Client(gw.url) as client:
                client.collections.create("things", **OWN_VECTORS)
                start = time.perf_counter()
                report = client.collection("things").insert_many(own_vector_objects(n), progress=False)
                assert report.ok == n, report.failed[:3]
            print(f"loaded {n:,} objects in {time.perf_counter() - start:.1f} s", flush=True)
            out = Path(tmp) / "export.jsonl"
            with out.open("w") as f:
                elapsed_v, _, _ = polyvec_cli("export", "things", "--with-vectors", url=gw.url, stdout=f)
        trees = {"this checkout": REPO}
        if against:
            trees = {against: checkout(against, Path(tmp)), **trees}
        results: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in trees}
        for _ in range(rounds):  # alternating, so that each tree sees the same machine
            for name, tree in trees.items():
                results[name].append(export_round(data, n, out, tree))
                bare, rate, gateway_cpu, client_cpu = results[name][-1]
                print(f"  {name}: bare paging {bare:,.0f} objects/s; `polyvec export` {rate:,.0f} objects/s "
                      f"(CPU: gateway {gateway_cpu:.2f} s, command {client_cpu:.2f} s)", flush=True)
    median = statistics.median
    rates = {}
    for name, rows in results.items():
        bare, rate = median(r[0] for r in rows), median(r[1] for r in rows)
        gateway_cpu, client_cpu = median(r[2] for r in rows), median(r[3] for r in rows)
        rates[name] = rate
        print(f"{name}: `polyvec export` {rate:,.0f} objects/s (target >= 20,000); bare paging "
              f"{bare:,.0f} objects/s; export / bare paging {rate / bare:.2f}; CPU per 100,000 objects: "
              f"gateway {gateway_cpu * 1e5 / n:.2f} s, command {client_cpu * 1e5 / n:.2f} s")
    print(f"with vectors (this checkout, once): {n / elapsed_v:,.0f} objects/s")
    if against:
        print(f"after / before ({against}): {rates['this checkout'] / rates[against]:.2f}x "
              f"({n:,} objects, median of {rounds} alternating rounds)")


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
            elapsed, rss_kib, _ = polyvec_cli("import", name, str(src), url=gw.url)
            with httpx.Client(base_url=gw.url) as c:
                stored = c.post(f"/v1/collections/{name}/count").json()["count"]
            assert stored == count, (stored, count)
            rate = count / elapsed
            print(f"`polyvec import` of {count:,} lines ({size_mb:,.0f} MB): peak RSS "
                  f"{rss_kib / 1024:,.0f} MiB, {elapsed:.0f} s ({rate:,.0f} objects/s)", flush=True)
            src.unlink()


# ---------------------------------------------------------------------------------------------- transport
def transport_round(url: str, objects: list[dict], queries: list[list[float]],
                    gateway_pid: int) -> list[tuple[float, float, float]]:
    """(rate/s, client CPU ms and gateway CPU ms per 1,000) of one Client over ``url``: for the import,
    the sequential searches and the batched searches. CPU time is distorted less by a loaded machine."""
    from polyvec_client import Client, query

    out: list[tuple[float, float, float]] = []

    def measured(count: int, work) -> None:
        wall, cpu, gw = time.perf_counter(), time.process_time(), cpu_seconds(gateway_pid)
        work()
        wall, cpu, gw = (time.perf_counter() - wall, time.process_time() - cpu,
                         cpu_seconds(gateway_pid) - gw)
        out.append((count / wall, cpu / count * 1e6, gw / count * 1e6))

    with Client(url) as client:
        name = f"t{random.getrandbits(40):x}"
        client.collections.create({"name": name, **OWN_VECTORS})
        col = client.collection(name)

        def load() -> None:
            report = col.insert_many(objects, concurrency=4, progress=False)
            assert report.ok == len(objects) and not report.failed, report.failed[:3]

        def one_by_one() -> None:
            for vector in queries:
                assert col.search.near_vector(vector, limit=10).hits

        bodies = [query.near_vector(v, limit=10) for v in queries]

        def batched() -> None:
            for i in range(0, len(bodies), 32):
                col.search.batch(bodies[i:i + 32])

        measured(len(objects), load)
        measured(len(queries), one_by_one)
        measured(len(queries), batched)
        client.collections.delete(name)
    return out


def bench_transport(n: int, searches: int, rounds: int) -> None:
    objects = list(own_vector_objects(n))
    rng = random.Random(5)
    queries = [[rng.uniform(-1, 1) for _ in range(8)] for _ in range(searches)]
    runs: dict[str, list[list[tuple[float, float, float]]]] = {"http": [], "grpc": []}
    with tempfile.TemporaryDirectory(prefix="polyvec-bench-transport-") as tmp, \
            GatewayChild(Path(tmp), grpc=True) as gw:
        urls = {"http": gw.url, "grpc": f"grpc://127.0.0.1:{gw.grpc_port}"}
        for r in range(rounds):
            for kind in (("http", "grpc") if r % 2 == 0 else ("grpc", "http")):
                runs[kind].append(transport_round(urls[kind], objects, queries, gw.proc.pid))
                print(f"round {r + 1} {kind}: " + "; ".join(f"{rate:,.0f}/s" for rate, _, _ in runs[kind][-1])
                      + " (import, searches, batched searches)", flush=True)
    print("medians; CPU ms per 1,000 objects or searches (client / gateway):")
    for i, what in enumerate(("import objects", "sequential searches", "batched searches (32)")):
        m = {k: [statistics.median(run[i][j] for run in v) for j in range(3)] for k, v in runs.items()}
        (hr, hc, hg), (gr, gc, gg) = m["http"], m["grpc"]
        print(f"{what:>22}: HTTP {hr:,.0f}/s (CPU {hc:,.0f} / {hg:,.0f})  gRPC {gr:,.0f}/s "
              f"(CPU {gc:,.0f} / {gg:,.0f})  gRPC/HTTP rate {gr / hr:.2f}x, "
              f"CPU {(gc + gg) / (hc + hg):.2f}x", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["import", "export", "memory", "transport"])
    parser.add_argument("--objects", type=int)
    parser.add_argument("--searches", type=int, default=2000, help="transport: searches per round")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="export: alternating rounds (median)")
    parser.add_argument("--against", metavar="GIT_REF",
                        help="export: also run the gateway and command of this commit, alternating")
    args = parser.parse_args(argv)
    if args.what == "import":
        bench_import(args.objects or 10_000)
    elif args.what == "transport":
        bench_transport(args.objects or 20_000, args.searches, args.rounds)
    elif args.what == "export":
        bench_export(args.objects or 100_000, args.rounds, args.against)
    else:
        bench_memory(args.lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
