"""Batch search: 32 searches in one ``/search/batch`` request against 32 sequential ``/search`` requests.

    python bench/batch_search.py [--docs 2000] [--batch 32] [--rounds 5] [--kinds near_text,hybrid,bm25]
    python bench/batch_search.py --parts    # where a near_vector batch spends CPU outside the store

Runs the real ``polyvec up --model sentence-transformers/all-MiniLM-L6-v2`` (embedded store, MiniLM
inference child, gateway) as a child process, imports ``--docs`` generated catalogue texts, then for
each search kind alternates, ``--rounds`` times: 32 single searches one after the other (each its own HTTP
request, Vectorize call and store query) and the same 32 searches as one batch request (one Vectorize
call, one store batch query). Prints searches/s of both (median over the rounds) and their ratio
(target: batch >= 4x sequential). New query texts each round. Request bodies are encoded before the
clock starts, for both, so that the client's own JSON encoding is not timed.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.search import make_texts  # noqa: E402
from bench.up_child import UpChild  # noqa: E402

JSON = {"content-type": "application/json"}
WORDS = ("lamp chair desk sofa kettle jacket boots backpack tent speaker headphones monitor keyboard mug "
         "waterproof ergonomic vintage modern lightweight oak walnut steel wool leather ceramic").split()


def queries(kind: str, n: int, rng: random.Random, vector: list[float]) -> list[dict]:
    out = []
    for _ in range(n):
        text = " ".join(rng.sample(WORDS, 3))
        if kind == "near_vector":
            body: dict = {"near_vector": {"vector": [v + rng.uniform(-0.01, 0.01) for v in vector]}}
        elif kind == "hybrid":
            body = {"hybrid": {"query": text, "alpha": 0.5}}
        else:
            body = {kind: {"query": text}}
        out.append({**body, "limit": 10})
    return out


def run(docs: int, batch: int, rounds: int, kinds: list[str]) -> list[tuple[str, float, float]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="polyvec-bench-batch-") as tmp, UpChild(
            Path(tmp) / "data", env={"INFERENCE_TIMEOUT_S": "300"}) as up:
        with httpx.Client(base_url=up.http_url, timeout=120) as c:
            r = c.post("/v1/collections", json={"name": "catalogue", "vectorizers": {
                "main": {"model": "default", "text_fields": ["text"]}}})
            r.raise_for_status()
            texts = make_texts(docs, seed=3)
            for i in range(0, docs, 200):
                chunk = [{"id": f"d{k}", "properties": {"text": t[:300]}}
                         for k, t in enumerate(texts[i:i + 200], start=i)]
                out = c.post("/v1/collections/catalogue/objects", json={"objects": chunk}).json()
                assert "errors" in out, out
                assert out["errors"] == 0, out
            vector = c.get("/v1/collections/catalogue/objects/d0", params={"with_vectors": True}).json()[
                "vectors"]["main"]
            rng = random.Random(11)
            for kind in kinds:
                for q in queries(kind, 4, rng, vector):  # warm-up
                    c.post("/v1/collections/catalogue/search", json=q).raise_for_status()
                seq, bat = [], []
                for _ in range(rounds):
                    # bodies encoded before the clock starts, for both: what is timed is the gateway
                    # (json.dumps of a 384-d near_vector query takes ~0.9 ms of this process's time)
                    bodies = [json.dumps(q).encode() for q in queries(kind, batch, rng, vector)]
                    start = time.perf_counter()
                    for body in bodies:
                        c.post("/v1/collections/catalogue/search", content=body,
                               headers=JSON).raise_for_status()
                    seq.append(batch / (time.perf_counter() - start))
                    body = json.dumps({"searches": queries(kind, batch, rng, vector)}).encode()
                    start = time.perf_counter()
                    r = c.post("/v1/collections/catalogue/search/batch", content=body, headers=JSON)
                    bat.append(batch / (time.perf_counter() - start))
                    r.raise_for_status()
                    assert all("hits" in x for x in r.json()["results"]), r.text[:500]
                s, b = statistics.median(seq), statistics.median(bat)
                print(f"{kind:12s} sequential {s:8.1f} searches/s   batch {b:8.1f} searches/s   "
                      f"{b / s:5.2f}x", flush=True)
                rows.append((kind, s, b))
    return rows


def parts(batch: int, dims: int = 384, runs: int = 30) -> None:
    """Where a batch of near_vector queries spends CPU outside the store, in this process (median ms)."""
    from gateway.json_body import loads
    from gateway.service.requests import SearchRequest
    from gateway.service.vectors import check_vector

    rng = random.Random(1)
    searches = queries("near_vector", batch, rng, [rng.gauss(0, 0.05) for _ in range(dims)])
    body = json.dumps({"searches": searches}).encode()
    parsed = loads(body, 64)["searches"]

    def checked() -> None:
        for raw in parsed:
            req = SearchRequest.model_validate(raw)
            values = [float(v) for v in req.near_vector.vector]
            assert check_vector(values, dims, "near_vector.vector") is None

    def cpu_ms(fn) -> float:
        times = []
        for _ in range(runs):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
        return statistics.median(times) * 1e3

    vector = [float(v) for v in parsed[0]["near_vector"]["vector"]]
    print(f"{batch} near_vector queries of {dims} floats ({len(body):,} bytes), CPU ms (median of {runs}): "
          f"json.dumps of the body {cpu_ms(lambda: json.dumps({'searches': searches})):.1f}; the gateway's "
          f"parse {cpu_ms(lambda: loads(body, 64)):.1f}; check_vector x{batch} "
          f"{cpu_ms(lambda: [check_vector(vector, dims, 'v') for _ in range(batch)]):.1f}; validation + "
          f"check x{batch} {cpu_ms(checked):.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kinds", default="near_text,hybrid,bm25,near_vector")
    parser.add_argument("--parts", action="store_true",
                        help="only print where a near_vector batch spends CPU outside the store (no server)")
    args = parser.parse_args(argv)
    if args.parts:
        parts(args.batch)
        return 0
    rows = run(args.docs, args.batch, args.rounds, args.kinds.split(","))
    print(f"\n| kind | {args.batch} sequential searches | one batch of {args.batch} | ratio |")
    print("|---|---|---|---|")
    for kind, s, b in rows:
        print(f"| {kind} | {s:.0f}/s | {b:.0f}/s | {b / s:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
