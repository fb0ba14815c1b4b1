"""Overload: 200 concurrent clients against ``polyvec up`` (offline MiniLM), with and without the bound.

Starts ``polyvec up --model sentence-transformers/all-MiniLM-L6-v2`` as a child process (embedded
store, one inference child, the gateway), imports a small corpus, then runs N closed-loop clients that
each send search after search (hybrid: one MiniLM call + BM25 per search) for a fixed time, and prints:

* the status mix (200 / 429 / 5xx / client errors) and throughput;
* latency p50 / p99 of all answers and of the 200s;
* the peak RSS (VmHWM) of each process: ``polyvec up`` (it runs the gateway in-process) and the
  inference child.

The same run is repeated against a second ``polyvec up`` whose waiting bound is effectively off
(``INFERENCE_MAX_WAITING=100000``, ``INFERENCE_QUERY_MAX_WAIT_S=0``): the baseline the bound is compared
with, measured side by side. One client alone gives the unloaded latency.

A client answered 429 waits as ``polyvec-client`` does: the ``Retry-After`` seconds, jittered (0.5-1.5x),
before it sends again. ``--ignore-retry-after`` makes the shed clients come back after 50-200 ms instead
(a client that ignores the header: on a small machine where the load generator shares the CPU with the
gateway and the model, that churn costs CPU the searches need).

    python bench/overload.py [--clients 200] [--seconds 20] [--docs 1000] [--only bounded|unbounded]
                             [--ignore-retry-after]
                             [--env INFERENCE_MAX_WAITING=16 ...]    (gateway settings for both runs)

Linux only (reads /proc for RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.up import OFFLINE_MODEL  # noqa: E402

WORDS = (
    "red blue running shoes leather bag summer dress wool socks trail backpack waterproof jacket "
    "lightweight cotton shirt denim jeans silver necklace ceramic mug kitchen knife garden chair "
    "oak table lamp soft pillow travel case phone charger wireless earbuds camera lens tripod"
).split()


def make_texts(n: int, seed: int, lo: int = 4, hi: int = 24) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


# -- processes ---------------------------------------------------------------------------------------------
def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def rss_mib(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of ``pid`` in MiB, from /proc/PID/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


class Up:
    """``polyvec up`` as a child process on free ports, with its own data directory."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        for key in ("MODEL", "MODEL_PROPERTIES", "QDRANT_URL", "API_KEYS", "HTTP_PORT", "GRPC_PORT"):
            self.env.pop(key, None)
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout_s: float = 600) -> Up:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--model", OFFLINE_MODEL, "--data-dir",
             str(self.tmp / "data"), "--http-port", "0", "--grpc-port", "off", "--quiet"],
            cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout_s
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("polyvec up exited:\n" + "".join(lines))
            lines.append(line)
            if "Press Ctrl-C to stop" in line:
                break
        self.url = re.search(r"HTTP\s+(http://\S+)", "".join(lines)).group(1)
        # keep draining its output so it never blocks on a full pipe
        import threading

        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        return self

    def processes(self) -> dict[str, int]:
        assert self.proc is not None
        procs = {"polyvec up + gateway": self.proc.pid}
        for i, pid in enumerate(children_of(self.proc.pid)):
            procs[f"inference child {i + 1}" if i else "inference child"] = pid
        return procs

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- load --------------------------------------------------------------------------------------------------
async def prepare(url: str, docs: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        r = await http.post("/v1/collections", json={
            "name": "bench", "vectorizers": {"main": {"model": "default", "text_fields": ["text"]}}})
        r.raise_for_status()
        texts = make_texts(docs, seed=1)
        for lo in range(0, docs, 500):
            r = await http.post("/v1/collections/bench/objects", json={"objects": [
                {"id": f"d{i}", "properties": {"text": t}} for i, t in enumerate(texts[lo:lo + 500], lo)]})
            r.raise_for_status()
            assert r.json()["errors"] == 0, r.text


async def load(url: str, clients: int, seconds: float, seed: int,
               honour_retry_after: bool = True) -> tuple[list[tuple[int, float]], float]:
    """``clients`` closed-loop clients for ``seconds``: [(status, latency s)], elapsed s."""
    queries = make_texts(500, seed=seed, lo=2, hi=8)
    results: list[tuple[int, float]] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        start = time.perf_counter()
        stop_at = start + seconds

        async def client(k: int) -> None:
            rng = random.Random(seed * 1000 + k)
            while time.perf_counter() < stop_at:
                body = {"hybrid": {"query": rng.choice(queries), "alpha": 0.5}, "limit": 10}
                t0 = time.perf_counter()
                try:
                    r = await http.post("/v1/collections/bench/search", json=body)
                    status = r.status_code
                    if status == 429:
                        assert int(r.headers["retry-after"]) >= 1
                except httpx.HTTPError:
                    status = -1
                results.append((status, time.perf_counter() - t0))
                if status == 429:
                    if honour_retry_after:  # as polyvec-client does: Retry-After, jittered
                        pause = int(r.headers["retry-after"]) * rng.uniform(0.5, 1.5)
                    else:  # a client that ignores the header and comes back at once
                        pause = rng.uniform(0.05, 0.2)
                    await asyncio.sleep(max(0.0, min(pause, stop_at - time.perf_counter())))

        await asyncio.gather(*(client(k) for k in range(clients)))
        return results, time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def report(label: str, results: list[tuple[int, float]], elapsed: float) -> dict:
    mix = Counter(status for status, _ in results)
    all_ms = [lat * 1000 for _, lat in results]
    ok_ms = [lat * 1000 for status, lat in results if status == 200]
    total = len(results)
    mix_text = ", ".join(f"{'error' if s == -1 else s}: {n} ({100 * n / total:.1f}%)"
                         for s, n in sorted(mix.items()))
    print(f"{label}: {total} answers in {elapsed:.1f} s ({mix.get(200, 0) / elapsed:.1f} searches/s served)")
    print(f"  status mix: {mix_text}")
    print(f"  latency all: p50 {pct(all_ms, 50):.0f} ms, p99 {pct(all_ms, 99):.0f} ms;"
          f"  200s only: p50 {pct(ok_ms, 50):.0f} ms, p99 {pct(ok_ms, 99):.0f} ms", flush=True)
    return {"mix": mix, "p50": pct(all_ms, 50), "p99": pct(all_ms, 99), "ok_p50": pct(ok_ms, 50),
            "ok_p99": pct(ok_ms, 99)}


def run_one(label: str, env: dict[str, str], args) -> dict:
    with tempfile.TemporaryDirectory(prefix="polyvec-overload-") as tmp:
        up = Up(Path(tmp), env)
        try:
            up.start()
            asyncio.run(prepare(up.url, args.docs))
            solo, solo_elapsed = asyncio.run(load(up.url, 1, min(5.0, args.seconds), seed=2))
            report(f"[{label}] 1 client", solo, solo_elapsed)
            before = {name: rss_mib(pid) for name, pid in up.processes().items()}
            results, elapsed = asyncio.run(load(up.url, args.clients, args.seconds, seed=3,
                                                honour_retry_after=not args.ignore_retry_after))
            out = report(f"[{label}] {args.clients} clients", results, elapsed)
            for name, pid in up.processes().items():
                rss, peak = rss_mib(pid)
                print(f"  {name} (pid {pid}): RSS {before.get(name, (0, 0))[0]:.0f} MiB before the load, "
                      f"{rss:.0f} MiB after, peak {peak:.0f} MiB")
            return out
        finally:
            up.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--only", choices=["bounded", "unbounded"])
    parser.add_argument("--ignore-retry-after", action="store_true",
                        help="shed clients send again after 50-200 ms instead of waiting Retry-After")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a gateway setting for both runs (repeat for several)")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    print(f"polyvec up --model {OFFLINE_MODEL}; {args.clients} closed-loop clients, hybrid searches, "
          f"{args.seconds:g} s each; {args.docs} documents; a shed client "
          f"{'ignores Retry-After' if args.ignore_retry_after else 'waits Retry-After'}", flush=True)
    runs = {}
    if args.only != "unbounded":
        runs["bounded"] = run_one(f"bounded ({' '.join(args.env) or 'defaults'})", extra, args)
    if args.only != "bounded":
        runs["unbounded"] = run_one("unbounded (INFERENCE_MAX_WAITING=100000, INFERENCE_QUERY_MAX_WAIT_S=0)",
                                    {**extra, "INFERENCE_MAX_WAITING": "100000",
                                     "INFERENCE_QUERY_MAX_WAIT_S": "0"}, args)
    if len(runs) == 2:
        b, u = runs["bounded"], runs["unbounded"]
        print(f"p99 of all answers, bounded / unbounded: {b['p99'] / u['p99']:.2f}; "
              f"p99 of 200s: {b['ok_p99'] / u['ok_p99']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
