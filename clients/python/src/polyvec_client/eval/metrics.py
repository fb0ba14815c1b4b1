"""The measures, computed by ir-measures (pytrec_eval / trec_eval underneath), never by hand.

``R@k`` (recall), ``P@k`` (precision), ``MRR@10`` (ir-measures' ``RR@10``), ``nDCG@10`` (trec_eval's
linear gains), ``MAP`` (``AP`` over the whole ranking, i.e. to the largest K searched) and
``AvgRecall`` = mean(R@1, R@10), the measure of the Marqo-FashionCLIP model card. A judgement of
relevance >= 1 is relevant.

trec_eval orders a run by score and breaks ties by document id, ignoring the order it was given; the
ranking a search returns is therefore turned into strictly decreasing scores (n, n-1, ...), so what is
measured is exactly the order the user sees (hybrid RRF scores tie often).

A query that has relevant documents but got no hits (or whose search failed) counts 0 for every measure:
the mean is over every judged query, not only those that returned something.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import ir_measures
from ir_measures import AP, RR, P, R, nDCG

#: the order measures are shown in, for a set of Ks
FIXED = ("MRR@10", "nDCG@10", "MAP", "AvgRecall")


def measure_names(ks: Sequence[int]) -> list[str]:
    return [f"R@{k}" for k in ks] + [f"P@{k}" for k in ks] + list(FIXED)


def judged_queries(qrels: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Queries with at least one relevant document (the only ones a recall can be computed for)."""
    return [qid for qid, docs in qrels.items() if any(rel > 0 for rel in docs.values())]


def compute(rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]],
            ks: Sequence[int], queries: Iterable[str] | None = None) -> dict[str, float]:
    """Mean of each measure over ``queries`` (default: every judged query).

    ``rankings``: query id -> document ids, best first (a query missing here counts 0).
    """
    evaluated = list(queries) if queries is not None else judged_queries(qrels)
    if not evaluated:
        raise ValueError("no judged queries to evaluate (no qrels with relevance >= 1)")
    wanted = set(evaluated)
    measures = {f"R@{k}": R @ k for k in {*ks, 1, 10}}
    measures.update({f"P@{k}": P @ k for k in ks})
    measures.update({"MRR@10": RR @ 10, "nDCG@10": nDCG @ 10, "MAP": AP})
    by_measure = {m: name for name, m in measures.items()}
    run = {qid: {doc: float(len(docs) - i) for i, doc in enumerate(dict.fromkeys(docs))}
           for qid, docs in rankings.items() if qid in wanted and docs}
    judged = {qid: dict(docs) for qid, docs in qrels.items() if qid in wanted}
    totals = dict.fromkeys(measures, 0.0)
    if run:
        for metric in ir_measures.iter_calc(list(measures.values()), judged, run):
            totals[by_measure[metric.measure]] += float(metric.value)
    means = {name: total / len(evaluated) for name, total in totals.items()}
    means["AvgRecall"] = (means["R@1"] + means["R@10"]) / 2
    return {name: means[name] for name in measure_names(ks)}
