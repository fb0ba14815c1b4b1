"""Search benchmark: ratios measured side by side in one run (not a test).

    python bench/search.py                 # 10k and 100k objects, 384-d; filtered search at 100k
    python bench/search.py --sizes 10000 --dim 128 --queries 100 --filter-sizes 20000
    python bench/search.py --sizes --import-texts 0 --filter-sizes 1000000 --filter-stores edge   # 1M

For each size: clustered random unit vectors + generated catalogue texts (BM25 sparse vectors from
gateway.bm25, Qdrant's analyzer) are loaded into EdgeStore (qdrant-edge, HNSW built with optimize())
and QdrantStore(":memory:") (qdrant-client local mode: exact numpy search). Reported:

- near-vector p50/p99 latency, EdgeStore vs QdrantStore(:memory:)
- BM25 top-10 on EdgeStore (sparse vectors + IDF inside Qdrant) vs rank-bm25 ``get_scores`` + top-10 on
  the same tokenised corpus
- hybrid vs near-vector on EdgeStore, alpha 0.5: RRF (fused inside the engine) and relative score (both
  lists fetched in one batch call, fused in Python)

- end-to-end import (``--import-texts N``, default 960): objects/s through the gateway service
  (GatewayService.import_objects: batched gRPC Vectorize calls to a real ``polyvec inference`` child
  process serving all-MiniLM-L6-v2, BM25, upsert into EdgeStore) vs the inference service's own
  throughput on the same texts through the same client settings (batch 64, 4 calls in flight).

- filtered near-vector search (``--filter-sizes``, default 100k; ``--filter-sizes 1000000 --filter-stores
  edge`` for the 1M run, whose HNSW builds take ~7.5 min each on 2 cores): a keyword filter matching ~1%
  (``brand`` = one of 100 values) and a float range matching ~10% (``price`` < 100 of 0..1000), on a
  collection without payload indexes and on one whose fields were declared (keyword / float indexes,
  created before the HNSW build so the graph gets Qdrant's extra payload links), against the unfiltered
  search of the same collection; with the recall@10 of the filtered hits against exact filtered search.
  QdrantStore(:memory:) (qdrant-client's local mode) keeps no payload indexes and filters in Python: it
  is measured once, for reference (a Qdrant server builds the same indexes as the embedded engine).
- facets over the same collections: the 10 most frequent brands, estimated and exact counts.

Latency = wall time of one synchronous store call (single thread), after a short warm-up.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.bm25 import Bm25Encoder, Bm25Settings, make_encoder, mean_length  # noqa: E402
from gateway.storage.base import (  # noqa: E402
    CollectionSchema,
    DenseVectorConfig,
    FieldMatch,
    FieldRange,
    Filter,
    PointRecord,
    Store,
)
from gateway.storage.edge_store import EdgeStore  # noqa: E402
from gateway.storage.qdrant_store import QdrantStore  # noqa: E402

WORDS = (
    "lamp chair desk sofa kettle blender jacket boots backpack tent speaker headphones monitor keyboard "
    "mouse router camera lens tripod mug teapot pan knife board towel pillow blanket rug mirror clock "
    "compact wireless waterproof ergonomic vintage modern lightweight foldable adjustable rechargeable "
    "insulated organic handmade premium budget silent smart portable durable oak walnut steel aluminium "
    "bamboo wool cotton leather ceramic glass with for and the of in to on easy clean setup warranty "
    "design black white grey blue green red small medium large home office kitchen outdoor travel "
    "camping garden kids gift set pack battery hours power noise bluetooth wifi zoom safe washable"
).split()


VOCABULARY = WORDS + [f"term{k}" for k in range(20_000)]


def make_texts(n: int, seed: int = 1) -> list[str]:
    """Zipf-distributed words (rank r drawn with weight 1/(r+1)) over a 20k-word vocabulary whose head is
    catalogue words, 5-40 tokens per document, plus one rare SKU-like token."""
    rng = random.Random(seed)
    weights = [1.0 / (r + 1) for r in range(len(VOCABULARY))]
    cum = list(itertools.accumulate(weights))
    texts = []
    for _ in range(n):
        words = rng.choices(VOCABULARY, cum_weights=cum, k=rng.randint(5, 40))
        words.append(f"sku{rng.randrange(50_000)}")
        texts.append(" ".join(words))
    return texts


def make_queries(count: int, seed: int = 2) -> list[str]:
    """1-3 distinct words, uniform over vocabulary ranks 20-2000 (neither stopword-like head words nor
    words that occur in a handful of documents)."""
    rng = random.Random(seed)
    return [" ".join(rng.sample(VOCABULARY[20:2000], rng.randint(1, 3))) for _ in range(count)]


def analysed(encoder: Bm25Encoder, text: str) -> list[int]:
    """A document as rank-bm25 input: each analysed term (its index) repeated tf times."""
    return [idx for idx, tf in encoder.term_counts(text).items() for _ in range(tf)]


def _normalise(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Clustered unit vectors (like embeddings: topics, not uniform noise): 1 of n/100 centres + noise."""
    rng = np.random.default_rng(seed)
    centres = _normalise(rng.normal(size=(max(1, n // 100), dim)))
    noise = rng.normal(size=(n, dim)).astype(np.float32) * (0.6 / np.sqrt(dim))
    return _normalise(centres[rng.integers(0, len(centres), size=n)] + noise)


def query_vectors(data: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Perturbed copies of random stored vectors."""
    rng = np.random.default_rng(seed)
    picked = data[rng.integers(0, len(data), size=count)]
    noise = rng.normal(size=picked.shape).astype(np.float32) * (0.6 / np.sqrt(data.shape[1]))
    return _normalise(picked + noise)


def timed(fn: Callable[[int], object], count: int, warmup: int = 5) -> np.ndarray:
    for i in range(warmup):
        fn(i)
    out = np.empty(count)
    for i in range(count):
        t0 = time.perf_counter()
        fn(i)
        out[i] = time.perf_counter() - t0
    return out * 1000.0  # ms


def load(store: Store, vectors: np.ndarray, sparse: list, batch: int = 1000) -> float:
    t0 = time.perf_counter()
    store.create_collection(
        CollectionSchema(
            "bench", dense={"v": DenseVectorConfig(vectors.shape[1], "cosine")}, sparse=["bm25"], hnsw_m=16,
            hnsw_ef_construct=100,
        )
    )
    for start in range(0, len(vectors), batch):
        store.upsert(
            "bench",
            [
                PointRecord(
                    str(uuid.UUID(int=i + 1)), {"i": i}, {"v": vectors[i].tolist()}, {"bm25": sparse[i]}
                )
                for i in range(start, min(start + batch, len(vectors)))
            ],
        )
    return time.perf_counter() - t0


def p(arr: np.ndarray, q: float) -> float:
    return float(np.percentile(arr, q))


def run_size(n: int, dim: int, n_queries: int, rank_bm25_queries: int) -> list[tuple[str, str, str, str]]:
    from rank_bm25 import BM25Okapi

    rows: list[tuple[str, str, str, str]] = []
    print(f"\n== {n} objects, {dim}-d ==", flush=True)
    vectors = unit_vectors(n, dim, seed=n)
    queries_v = query_vectors(vectors, n_queries + 10, seed=n + 1)
    texts = make_texts(n)
    query_texts = make_queries(n_queries + 10)
    probe = make_encoder(Bm25Settings(fields=["text"]))
    encoder = make_encoder(Bm25Settings(fields=["text"], avg_len=mean_length(probe, texts[:2000]) or 1.0))
    t0 = time.perf_counter()
    sparse = [encoder.document(t) for t in texts]
    print(f"bm25 encode: {time.perf_counter() - t0:.1f}s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        edge = EdgeStore(Path(tmp) / "edge", auto_optimize_points=0)
        load_s = load(edge, vectors, sparse)
        t0 = time.perf_counter()
        edge.optimize("bench")
        opt_s = time.perf_counter() - t0
        print(f"EdgeStore load {load_s:.1f}s, optimize (HNSW) {opt_s:.1f}s", flush=True)

        mem = QdrantStore(location=":memory:")
        mem_s = load(mem, vectors, sparse)
        print(f"QdrantStore(:memory:) load {mem_s:.1f}s", flush=True)

        def edge_vec(i: int) -> object:
            return edge.search_dense("bench", "v", queries_v[i].tolist(), limit=10, with_payload=False)

        def mem_vec(i: int) -> object:
            return mem.search_dense("bench", "v", queries_v[i].tolist(), limit=10, with_payload=False)

        def edge_bm25(i: int) -> object:
            sq = encoder.query(query_texts[i])
            return edge.search_sparse("bench", "bm25", sq, limit=10, with_payload=False)

        def edge_hybrid(i: int) -> object:
            return edge.search_hybrid(
                "bench", "v", queries_v[i].tolist(), "bm25", encoder.query(query_texts[i]), alpha=0.5,
                fusion="rrf", limit=10, with_payload=False,
            )

        def edge_hybrid_rs(i: int) -> object:
            return edge.search_hybrid(
                "bench", "v", queries_v[i].tolist(), "bm25", encoder.query(query_texts[i]), alpha=0.5,
                fusion="relative_score", limit=10, with_payload=False,
            )

        # recall of the HNSW search against exact search, as a sanity check of the speed numbers
        exact = np.argsort(-(vectors @ queries_v[:20].T), axis=0)[:10].T
        found = [{int(uuid.UUID(h.id).int) - 1 for h in edge_vec(i)} for i in range(20)]  # type: ignore[attr-defined]
        recall = np.mean([len(found[i] & set(exact[i].tolist())) / 10 for i in range(20)])

        ev = timed(edge_vec, n_queries)
        mv = timed(mem_vec, min(n_queries, 100 if n <= 20000 else 30))
        eb = timed(edge_bm25, n_queries)
        eh = timed(edge_hybrid, n_queries)
        ehr = timed(edge_hybrid_rs, n_queries)

        tokenized = [analysed(encoder, t) for t in texts]  # rank-bm25 gets the same analyzer's terms
        t0 = time.perf_counter()
        ref = BM25Okapi(tokenized)
        ref_build = time.perf_counter() - t0

        def rank_bm25(i: int) -> object:
            scores = ref.get_scores(encoder.query(query_texts[i]).indices)
            return np.argpartition(-scores, 10)[:10]

        rb = timed(rank_bm25, rank_bm25_queries, warmup=1)
        edge.close()
        mem.close()

    def row(label: str, mine: float, base: float, ratio: float, fmt: str) -> None:
        rows.append((f"{label} ({n})", f"{mine:.3f} ms", f"{base:.3f} ms", f"{ratio:{fmt}}x"))

    row("near-vector p50", p(ev, 50), p(mv, 50), p(mv, 50) / p(ev, 50), ".1f")
    row("near-vector p99", p(ev, 99), p(mv, 99), p(mv, 99) / p(ev, 99), ".1f")
    row("BM25 top-10 p50", p(eb, 50), p(rb, 50), p(rb, 50) / p(eb, 50), ".0f")
    row("hybrid rrf p50", p(eh, 50), p(ev, 50), p(eh, 50) / p(ev, 50), ".2f")
    row("hybrid rel-score p50", p(ehr, 50), p(ev, 50), p(ehr, 50) / p(ev, 50), ".2f")
    print(f"HNSW recall@10 vs exact: {recall:.2f}; rank-bm25 index build {ref_build:.1f}s", flush=True)
    return rows


FILTER_COLLECTION = "filtered"
FILTERS = {
    "keyword ~1%": Filter(must=[FieldMatch("brand", "b7")]),
    "float range ~10%": Filter(must=[FieldRange("price", lt=100.0)]),
}


def catalogue_payloads(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"i": i, "brand": f"b{rng.randrange(100)}", "price": round(rng.uniform(0, 1000), 2)}
            for i in range(n)]


def load_filtered(store: Store, name: str, vectors: np.ndarray, payloads: list[dict], indexed: bool,
                  batch: int = 1000) -> float:
    """Create + load (+ declare brand/price first when ``indexed``) + build the HNSW index; seconds."""
    t0 = time.perf_counter()
    dense = {"v": DenseVectorConfig(vectors.shape[1], "cosine")}
    store.create_collection(CollectionSchema(name, dense=dense, hnsw_m=16, hnsw_ef_construct=100))
    if indexed:  # as the gateway does for declared fields: before any object, so HNSW gets payload links
        store.create_payload_index(name, "brand", "keyword")
        store.create_payload_index(name, "price", "float")
    for start in range(0, len(vectors), batch):
        store.upsert(name, [
            PointRecord(str(uuid.UUID(int=i + 1)), payloads[i], {"v": vectors[i].tolist()})
            for i in range(start, min(start + batch, len(vectors)))])
    store.optimize(name)
    return time.perf_counter() - t0


def filtered_recall(store: Store, name: str, vectors: np.ndarray, payloads: list[dict],
                    queries: np.ndarray, flt: Filter, predicate: Callable[[dict], bool],
                    count: int = 20) -> float:
    allowed = np.array([predicate(p) for p in payloads])
    scores = vectors @ queries[:count].T
    scores[~allowed] = -np.inf
    recall = []
    for q in range(count):
        exact = set(np.argsort(-scores[:, q])[:10].tolist())
        got = {int(uuid.UUID(h.id).int) - 1
               for h in store.search_dense(name, "v", queries[q].tolist(), filter=flt, limit=10,
                                           with_payload=False)}
        recall.append(len(got & exact) / 10)
    return float(np.mean(recall))


PREDICATES: dict[str, Callable[[dict], bool]] = {
    "keyword ~1%": lambda p: p["brand"] == "b7",
    "float range ~10%": lambda p: p["price"] < 100.0,
}


def ms(arr: np.ndarray) -> str:
    return f"{p(arr, 50):.3f} / {p(arr, 99):.3f}"


def measure_filtered(kind: str, indexed: bool, folder: Path, vectors: np.ndarray, payloads: list[dict],
                     queries: np.ndarray, n_queries: int) -> dict[str, Any]:
    """One store, with or without the declared indexes: latencies, recalls and facet times."""
    n = len(vectors)
    if kind == "edge":
        store: Store = EdgeStore(folder / f"edge-{indexed}", auto_optimize_points=0)
        count = n_queries
    else:
        store = QdrantStore(location=":memory:")
        count = min(n_queries, 10 if n > 20_000 else 50)  # local mode filters in Python: seconds at 100k
    took = load_filtered(store, FILTER_COLLECTION, vectors, payloads, indexed)
    print(f"{kind} {'indexed' if indexed else 'no index'}: load + index build {took:.1f}s", flush=True)

    def search(i: int, flt: Filter | None = None) -> object:
        return store.search_dense(FILTER_COLLECTION, "v", queries[i].tolist(), filter=flt, limit=10,
                                  with_payload=False)

    out: dict[str, Any] = {"unfiltered": timed(search, count)}
    for label, flt in FILTERS.items():
        out[label] = timed(lambda i, flt=flt: search(i, flt), count)
        out[f"recall {label}"] = filtered_recall(store, FILTER_COLLECTION, vectors, payloads, queries, flt,
                                                 PREDICATES[label])
    if indexed or kind != "edge":  # the embedded engine facets indexed fields only
        for exact in (False, True):
            out[f"facet {exact}"] = timed(
                lambda i, exact=exact: store.facet(FILTER_COLLECTION, "brand", limit=10, exact=exact),
                min(count, 20))
    store.close()
    return out


def print_partial(kind: str, result: dict[str, Any]) -> None:
    """The collection's rows as soon as they are measured (p50 / p99 ms, recall@10), so that a long run
    cut short during the next index build still leaves numbers."""
    for label, value in result.items():
        shown = f"recall@10 {value:.2f}" if label.startswith("recall") else f"p50 / p99 {ms(value)} ms"
        print(f"  {kind} no index, {label}: {shown}", flush=True)


def run_filtered(n: int, dim: int, n_queries: int, stores: list[str]) -> list[tuple[str, ...]]:
    """Filtered near-vector search and facets, with and without payload indexes (see the docstring)."""
    print(f"\n== filtered search and facets, {n} objects, {dim}-d ==", flush=True)
    vectors = unit_vectors(n, dim, seed=n + 7)
    payloads = catalogue_payloads(n, seed=n)
    queries = query_vectors(vectors, n_queries + 10, seed=n + 8)
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory(prefix="polyvec-bench-filter-") as tmp:
        for kind in stores:
            name = "EdgeStore" if kind == "edge" else "QdrantStore(:memory:)"
            plain = measure_filtered(kind, False, Path(tmp), vectors, payloads, queries, n_queries)
            print_partial(kind, plain)  # before the declared build: at 1M it can take hours
            if kind == "edge":
                declared = measure_filtered(kind, True, Path(tmp), vectors, payloads, queries, n_queries)
            else:  # local mode keeps no payload indexes: "declared" would measure the same store again
                declared = plain
            show = ms if kind == "edge" else (lambda _: "n/a (local mode: no indexes)")
            base = p(declared["unfiltered"], 50)
            rows.append((f"{name} near-vector, unfiltered ({n})", ms(plain["unfiltered"]),
                         show(declared["unfiltered"]), "1.00x", "-"))
            for label in FILTERS:
                ratio = p(declared[label], 50) / base
                recall = f"{plain[f'recall {label}']:.2f} / {declared[f'recall {label}']:.2f}"
                rows.append((f"{name} near-vector, {label} ({n})", ms(plain[label]), show(declared[label]),
                             f"{ratio:.2f}x", recall))
            for exact in (False, True):
                key = f"facet {exact}"
                rows.append((f"{name} facets brand top-10, {'exact' if exact else 'estimated'} ({n})",
                             ms(plain[key]) if key in plain else "- (needs the index)", show(declared[key]),
                             "-", "-"))
    return rows


async def _import_vs_inference(n_texts: int) -> tuple[float, float]:
    """(inference-only texts/s, end-to-end import objects/s), measured alternately, best of 2 each."""
    from bench.inference import Server, minilm_env
    from gateway.config import GatewaySettings
    from gateway.inference_client import InferenceClient
    from gateway.service import GatewayService

    texts = [t[:400] for t in make_texts(n_texts, seed=5)]
    with tempfile.TemporaryDirectory(prefix="polyvec-bench-import-") as tmp:
        server = Server(minilm_env(), str(Path(tmp) / "cache"), batching=True, max_batch=32)
        try:
            await server.wait_ready()
            address = f"127.0.0.1:{server.port}"
            settings = GatewaySettings.from_env({}, models={"minilm": address})
            client = InferenceClient(address, timeout_s=120, concurrency=settings.inference_concurrency,
                                     batch_size=settings.inference_batch_size)
            store = EdgeStore(Path(tmp) / "data")
            service = GatewayService(store, settings)
            await client.vectorize(texts[:64])  # warm-up
            infer, imported = [], []
            for round_ in range(2):
                start = time.perf_counter()
                await client.vectorize(texts)
                infer.append(n_texts / (time.perf_counter() - start))
                name = f"import{round_}"
                await service.create_collection(
                    {"name": name, "vectorizers": {"main": {"model": "minilm", "text_fields": ["text"]}}}
                )
                objects = [{"id": f"doc-{i}", "properties": {"text": t}} for i, t in enumerate(texts)]
                start = time.perf_counter()
                result = await service.import_objects(name, {"objects": objects})
                imported.append(n_texts / (time.perf_counter() - start))
                assert result["errors"] == 0, result
            await client.close()
            await service.close()
            store.close()
        finally:
            server.stop()
    return max(infer), max(imported)


def run_import(n_texts: int) -> list[tuple[str, str, str, str]]:
    import asyncio

    print(f"\n== end-to-end import, {n_texts} texts, all-MiniLM-L6-v2 ==", flush=True)
    infer, imported = asyncio.run(_import_vs_inference(n_texts))
    print(f"inference only {infer:.0f} texts/s, gateway import {imported:.0f} objects/s", flush=True)
    return [(f"import objects/s ({n_texts})", f"{imported:.0f}/s", f"{infer:.0f}/s (inference only)",
             f"{imported / infer:.2f}x")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rank-bm25-queries", type=int, default=20)
    parser.add_argument("--import-texts", type=int, default=960, help="0 skips the import measurement")
    parser.add_argument("--filter-sizes", type=int, nargs="*", default=[100_000],
                        help="sizes of the filtered-search / facet runs (none: skip them); 1000000 takes "
                             "~20 min on 2 cores (two HNSW builds)")
    parser.add_argument("--filter-stores", nargs="+", choices=["edge", "qdrant"], default=["edge", "qdrant"])
    parser.add_argument("--filter-queries", type=int, default=200)
    args = parser.parse_args(argv)
    rows: list[tuple[str, str, str, str]] = []
    for n in args.sizes:
        rows.extend(run_size(n, args.dim, args.queries, args.rank_bm25_queries))
    if args.import_texts:
        rows.extend(run_import(args.import_texts))
    filtered: list[tuple[str, ...]] = []
    for n in args.filter_sizes:
        filtered.extend(run_filtered(n, args.dim, args.filter_queries, args.filter_stores))
    if rows:
        header = ("measure", "EdgeStore", "baseline", "ratio")
        print("\nbaselines: near-vector -> QdrantStore(:memory:); BM25 -> rank-bm25 get_scores; "
              "hybrid -> EdgeStore near-vector (ratio = hybrid / near-vector); "
              "import -> the inference service alone on the same texts (ratio = import / inference)")
        print_table(header, rows)
    if filtered:
        print("\nfiltered search: latency ms p50 / p99; ratio = filtered p50 with the index / unfiltered p50 "
              "of the same collection; recall@10 against exact filtered search (no index / index)")
        print_table(("measure", "no index", "declared (indexed)", "ratio", "recall@10"), filtered)
    return 0


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    raise SystemExit(main())
