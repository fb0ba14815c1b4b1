"""Which searches an evaluation runs, and running them through a search function.

A *run* is one search configuration: a kind (near_text, bm25, neural_sparse, near_image) or hybrid at
one alpha with one fusion. Every judged query of the run's modality is searched once, ``limit`` = the
largest K; the ranking and the latency of each search are kept, and :mod:`.metrics` scores them.

The search function is the only thing that differs between ``polyvec eval`` (the client, over HTTP:
latency end to end) and the gateway's ``/evaluate`` route behind the search page (the service, in
process: latency inside the gateway).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polyvec_client.eval import metrics
from polyvec_client.eval.data import Query

TEXT_KINDS = ("near_text", "bm25", "hybrid", "neural_sparse")
IMAGE_KINDS = ("near_image",)
KINDS = TEXT_KINDS + IMAGE_KINDS
FUSIONS = ("rrf", "relative_score")
DEFAULT_ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_KS = (1, 5, 10, 100)


class SearchFailed(Exception):
    """One search failed (the run goes on; the query counts 0)."""


#: body -> the ids of the hits, best first
SearchFn = Callable[[dict[str, Any]], Awaitable[list[str]]]


@dataclass(frozen=True)
class RunConfig:
    kind: str
    alpha: float | None = None
    fusion: str | None = None

    @property
    def name(self) -> str:
        if self.kind == "hybrid":
            return f"hybrid alpha={self.alpha:g} {self.fusion}"
        return self.kind

    @property
    def modality(self) -> str:
        return "image" if self.kind in IMAGE_KINDS else "text"

    def body(self, query: Query, limit: int, *, vector: str | None = None,
             filter: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"limit": limit, "properties": []}
        if self.kind == "near_image":
            body["near_image"] = {"image": query.image}
        elif self.kind == "hybrid":
            body["hybrid"] = {"query": query.text, "alpha": self.alpha, "fusion": self.fusion}
        else:
            body[self.kind] = {"query": query.text}
        if vector is not None and self.kind not in ("bm25", "neural_sparse"):
            body["vector"] = vector
        if filter is not None:
            body["filter"] = filter
        return body


def plan_runs(kinds: Sequence[str], alphas: Sequence[float] = DEFAULT_ALPHAS,
              fusions: Sequence[str] = FUSIONS) -> list[RunConfig]:
    """One run per kind, hybrid once per (fusion, alpha). Unknown names raise ValueError naming them."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"kinds: unknown kind {kind!r}; known: {', '.join(KINDS)}")
    for fusion in fusions:
        if fusion not in FUSIONS:
            raise ValueError(f"fusion: unknown fusion {fusion!r}; known: {', '.join(FUSIONS)}")
    for alpha in alphas:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alphas: {alpha:g} is not in [0, 1]")
    runs: list[RunConfig] = []
    for kind in dict.fromkeys(kinds):
        if kind == "hybrid":
            runs += [RunConfig("hybrid", float(a), f) for f in dict.fromkeys(fusions)
                     for a in dict.fromkeys(alphas)]
        else:
            runs.append(RunConfig(kind))
    if not runs:
        raise ValueError("kinds: no search kinds to run")
    return runs


def check_ks(ks: Sequence[int]) -> list[int]:
    out = sorted({int(k) for k in ks})
    if not out or out[0] < 1:
        raise ValueError("k: cutoffs are integers >= 1")
    return out


def depth(ks: Sequence[int]) -> int:
    """How many hits each search asks for: the largest K, and never fewer than 10 (MRR@10, nDCG@10 and
    AvgRecall's R@10 need the top 10 whatever the Ks asked for)."""
    return max(*ks, 10)


def default_kinds(collection: Mapping[str, Any], queries: Sequence[Query]) -> list[str]:
    """The kinds a collection can answer for these queries (from its definition as the gateway shows it)."""
    vectorizers = (collection.get("vectorizers") or {}).values()
    modalities = {m for v in vectorizers for m in v.get("modalities") or ()}
    bm25 = bool((collection.get("bm25") or {}).get("fields"))
    sparse = bool(collection.get("sparse_vectorizers"))
    has_text = any(q.modality == "text" for q in queries)
    kinds: list[str] = []
    if has_text:
        if "text" in modalities:
            kinds.append("near_text")
        if bm25:
            kinds.append("bm25")
        if sparse:
            kinds.append("neural_sparse")
        if "text" in modalities and bm25:
            kinds.append("hybrid")
    if any(q.modality == "image" for q in queries) and "image" in modalities:
        kinds.append("near_image")
    return kinds


@dataclass
class RunResult:
    config: RunConfig
    rankings: dict[str, list[str]] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    queries: int = 0


async def run_one(search: SearchFn, config: RunConfig, queries: Sequence[Query], limit: int, *,
                  vector: str | None = None, filter: dict[str, Any] | None = None,
                  concurrency: int = 1) -> RunResult:
    """Search every query once (``concurrency`` at a time; 1 measures latency without self-contention)."""
    result = RunResult(config, queries=len(queries))
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(query: Query) -> None:
        body = config.body(query, limit, vector=vector, filter=filter)
        async with gate:
            started = time.perf_counter()
            try:
                ids = await search(body)
            except SearchFailed as exc:
                result.errors.append(f"{query.id}: {exc}")
                return
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
        result.rankings[query.id] = ids

    await asyncio.gather(*(one(q) for q in queries))
    return result


async def evaluate(search: SearchFn, queries: Sequence[Query], qrels: Mapping[str, Mapping[str, int]],
                   runs: Sequence[RunConfig], ks: Sequence[int], *, vector: str | None = None,
                   filter: dict[str, Any] | None = None, concurrency: int = 1, collection: str = "",
                   latency: str = "", on_run: Callable[[RunResult], None] | None = None) -> dict[str, Any]:
    """Run every configuration over the judged queries and score them: the report (see :mod:`.report`)."""
    ks = check_ks(ks)
    judged = set(metrics.judged_queries(qrels))
    usable = [q for q in queries if q.id in judged]
    if not usable:
        raise ValueError("qrels: no query of the queries file has a relevant document in the qrels "
                         "(are the query ids the same in both files?)")
    out_runs: list[dict[str, Any]] = []
    for config in runs:
        subset = [q for q in usable if q.modality == config.modality]
        if not subset:
            out_runs.append({**_describe(config), "queries": 0, "errors": 0, "metrics": None,
                             "latency_ms": None, "error": f"no {config.modality} queries for {config.kind}"})
            continue
        result = await run_one(search, config, subset, depth(ks), vector=vector, filter=filter,
                               concurrency=concurrency)
        if on_run is not None:
            on_run(result)
        entry: dict[str, Any] = {**_describe(config), "queries": len(subset), "errors": len(result.errors)}
        if len(result.errors) == len(subset):
            entry.update(metrics=None, latency_ms=None, error=result.errors[0].partition(": ")[2])
        else:
            entry["metrics"] = metrics.compute(result.rankings, qrels, ks, [q.id for q in subset])
            lat = np.asarray(result.latencies_ms)
            entry["latency_ms"] = {"p50": round(float(np.percentile(lat, 50)), 3),
                                   "p99": round(float(np.percentile(lat, 99)), 3),
                                   "mean": round(float(lat.mean()), 3)}
            if result.errors:
                entry["error"] = result.errors[0]
        out_runs.append(entry)
    return {
        "collection": collection,
        "k": ks,
        "depth": depth(ks),
        "measures": metrics.measure_names(ks),
        "queries": {"total": len(queries), "evaluated": len(usable),
                    "without_qrels": len(queries) - len(usable),
                    "text": sum(q.modality == "text" for q in usable),
                    "image": sum(q.modality == "image" for q in usable)},
        "latency": latency,
        "runs": out_runs,
    }


def _describe(config: RunConfig) -> dict[str, Any]:
    return {"name": config.name, "kind": config.kind, "alpha": config.alpha, "fusion": config.fusion}
