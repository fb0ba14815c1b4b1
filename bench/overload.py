"""Overload: 200 concurrent clients against ``polyvec up`` (offline MiniLM), with and without the bound.

Starts ``polyvec up --model sentence-transformers/all-MiniLM-L6-v2`` as a child process (embedded
store, one inference child, the gateway), imports a small corpus, then runs N closed-loop clients that
each send search after search (hybrid: one MiniLM call + BM25 per search) for a fixed time, and prints:

* the status mix (200 / 429 / 5xx / client errors) and throughput;
* latency p50 / p99 of all answers and of the 200s;
* the peak RSS (VmHWM) of each process: ``polyvec up`` (it runs the gateway in-process) and the
  inference child.

The same load runs against a second ``polyvec up`` whose waiting bound is effectively off
(``INFERENCE_MAX_WAITING=100000``, ``INFERENCE_QUERY_MAX_WAIT_S=0``): the baseline the bound is compared
with, measured side by side: both are up at once, and the load alternates between them in ``--rounds``
rounds, so that a machine whose speed varies (other jobs) affects both alike. One client alone gives the
unloaded latency, and one client after the load shows the recovery.

A client answered 429 waits as ``polyvec-client`` does: the ``Retry-After`` seconds, jittered (0.5-1.5x),
before it sends again. ``--ignore-retry-after`` makes the shed clients come back after 50-200 ms instead
(a client that ignores the header: on a small machine where the load generator shares the CPU with the
gateway and the model, that churn costs CPU the searches need).

    python bench/overload.py [--clients 200] [--seconds 20] [--rounds 2] [--docs 1000]
                             [--only bounded|unbounded] [--ignore-retry-after]
                             [--env INFERENCE_MAX_WAITING=16 ...]    (gateway settings for both runs)

Linux only (reads /proc for RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from urllib.parse import urlsplit

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


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON: a load generator light enough not to be the
    bottleneck (httpx spends several ms of CPU per request; on a small machine, where the clients share the
    CPU with the gateway and the model, that skewed the comparison against the run with more requests)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0.0

    async def post(self, path: str, body: dict) -> tuple[int, dict[str, str], bytes]:
        idle = time.perf_counter() - self.used > 4  # the server closes keep-alive connections idle for 5 s
        if self.writer is None or self.writer.is_closing() or idle or (self.reader and self.reader.at_eof()):
            await self.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        data = json.dumps(body).encode()
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
        if "content-length" in headers:
            payload = await self.reader.readexactly(int(headers["content-length"]))
        else:  # chunked
            chunks = []
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                chunks.append(await self.reader.readexactly(size + 2))
            await self.reader.readuntil(b"\r\n")
            payload = b"".join(c[:-2] for c in chunks)
        self.used = time.perf_counter()
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def load(url: str, clients: int, seconds: float, seed: int,
               honour_retry_after: bool = True) -> tuple[list[tuple[int, float, bool]], float]:
    """``clients`` closed-loop clients for ``seconds``: [(status, latency s, answered within the
    ``seconds``)], elapsed s (until the last answer)."""
    queries = make_texts(500, seed=seed, lo=2, hi=8)
    results: list[tuple[int, float, bool]] = []
    start = time.perf_counter()
    stop_at = start + seconds

    async def client(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        conn = Connection(url)
        try:
            while time.perf_counter() < stop_at:
                body = {"hybrid": {"query": rng.choice(queries), "alpha": 0.5}, "limit": 10}
                t0 = time.perf_counter()
                headers: dict[str, str] = {}
                try:
                    status, headers, _ = await asyncio.wait_for(
                        conn.post("/v1/collections/bench/search", body), 120)
                    if status == 429:
                        assert int(headers["retry-after"]) >= 1
                except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                    status = -1
                    await conn.close()
                done = time.perf_counter()
                results.append((status, done - t0, done <= stop_at))
                if status == 429:
                    if honour_retry_after:  # as polyvec-client does: Retry-After, jittered
                        pause = int(headers["retry-after"]) * rng.uniform(0.5, 1.5)
                    else:  # a client that ignores the header and comes back at once
                        pause = rng.uniform(0.05, 0.2)
                    await asyncio.sleep(max(0.0, min(pause, stop_at - time.perf_counter())))
        finally:
            await conn.close()

    await asyncio.gather(*(client(k) for k in range(clients)))
    return results, time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def report(label: str, results: list[tuple[int, float, bool]], elapsed: float, window: float) -> dict:
    """Print and return the status mix, latencies and throughput: 200s per second of the load
    (``window``, answers after it not counted) and 200s per second until the last answer (``elapsed``)."""
    mix = Counter(status for status, _, _ in results)
    all_ms = [lat * 1000 for _, lat, _ in results]
    ok_ms = [lat * 1000 for status, lat, _ in results if status == 200]
    served = sum(1 for status, _, inside in results if status == 200 and inside) / window
    total = len(results)
    mix_text = ", ".join(f"{'error' if s == -1 else s}: {n} ({100 * n / total:.1f}%)"
                         for s, n in sorted(mix.items()))
    print(f"{label}: {total} answers; {served:.1f} searches/s served during the {window:g} s of load "
          f"({mix.get(200, 0) / elapsed:.1f}/s until the last answer, {elapsed:.1f} s)")
    print(f"  status mix: {mix_text}")
    shed_ms = [lat * 1000 for status, lat, _ in results if status == 429]
    print(f"  latency all: p50 {pct(all_ms, 50):.0f} ms, p99 {pct(all_ms, 99):.0f} ms;"
          f"  200s only: p50 {pct(ok_ms, 50):.0f} ms, p99 {pct(ok_ms, 99):.0f} ms"
          + (f";  429s: p50 {pct(shed_ms, 50):.0f} ms, p99 {pct(shed_ms, 99):.0f} ms" if shed_ms else ""),
          flush=True)
    return {"mix": mix, "served": served, "p50": pct(all_ms, 50), "p99": pct(all_ms, 99),
            "ok_p50": pct(ok_ms, 50), "ok_p99": pct(ok_ms, 99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0, help="load per mode, over all rounds")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternate the modes this many times (a noisy machine affects both alike)")
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--only", choices=["bounded", "unbounded"])
    parser.add_argument("--ignore-retry-after", action="store_true",
                        help="shed clients send again after 50-200 ms instead of waiting Retry-After")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a gateway setting for both runs (repeat for several)")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    rounds = max(1, args.rounds)
    print(f"polyvec up --model {OFFLINE_MODEL}; {args.clients} closed-loop clients, hybrid searches, "
          f"{args.seconds:g} s per mode in {rounds} alternating rounds; {args.docs} documents; a shed client "
          f"{'ignores Retry-After' if args.ignore_retry_after else 'waits Retry-After'}", flush=True)
    modes = {
        "bounded": (f"bounded ({' '.join(args.env) or 'defaults'})", extra),
        "unbounded": ("unbounded (INFERENCE_MAX_WAITING=100000, INFERENCE_QUERY_MAX_WAIT_S=0)",
                      {**extra, "INFERENCE_MAX_WAITING": "100000", "INFERENCE_QUERY_MAX_WAIT_S": "0"}),
    }
    if args.only:
        modes = {args.only: modes[args.only]}
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="polyvec-overload-") as tmp:
        ups: dict[str, Up] = {}
        try:
            for mode, (_, env) in modes.items():  # both up at once; the idle one costs no CPU
                (Path(tmp) / mode).mkdir()
                ups[mode] = up = Up(Path(tmp) / mode, env).start()
                asyncio.run(prepare(up.url, args.docs))
            for mode, up in ups.items():
                solo, solo_elapsed = asyncio.run(load(up.url, 1, min(5.0, args.seconds), seed=2))
                report(f"[{modes[mode][0]}] 1 client", solo, solo_elapsed, min(5.0, args.seconds))
            before = {mode: {name: rss_mib(pid) for name, pid in up.processes().items()}
                      for mode, up in ups.items()}
            results: dict[str, list[tuple[int, float, bool]]] = {mode: [] for mode in ups}
            elapsed = dict.fromkeys(ups, 0.0)
            for _ in range(rounds):
                for mode, up in ups.items():
                    out, took = asyncio.run(load(up.url, args.clients, args.seconds / rounds, seed=3,
                                                 honour_retry_after=not args.ignore_retry_after))
                    results[mode] += out
                    elapsed[mode] += took
            for mode, up in ups.items():
                label = f"[{modes[mode][0]}] {args.clients} clients"
                runs[mode] = report(label, results[mode], elapsed[mode], args.seconds)
                for name, pid in up.processes().items():
                    rss, peak = rss_mib(pid)
                    print(f"  {name} (pid {pid}): RSS {before[mode].get(name, (0, 0))[0]:.0f} MiB before the "
                          f"load, {rss:.0f} MiB after, peak {peak:.0f} MiB")
                recovered, _ = asyncio.run(load(up.url, 1, 1.0, seed=4))
                print(f"  afterwards, 1 client: {dict(Counter(s for s, _, _ in recovered))}", flush=True)
        finally:
            for up in ups.values():
                up.stop()
    if len(runs) == 2:
        b, u = runs["bounded"], runs["unbounded"]
        print(f"bounded / unbounded: p99 of all answers {b['p99'] / u['p99']:.2f}, p99 of 200s "
              f"{b['ok_p99'] / u['ok_p99']:.2f}, 200s per second {b['served'] / u['served']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
