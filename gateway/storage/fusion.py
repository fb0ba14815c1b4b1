"""Hybrid fusion of ranked result lists: a dense (vector) list, a BM25 list, a neural sparse list.

Each list holds the best ``prefetch_limit`` candidates of one search, best first; ``pos`` is a document's
0-based position in a list (0 = best). Each list ``i`` has a weight ``w_i >= 0``; a list whose weight is 0
takes no part at all. With two lists (vector, BM25) ``alpha`` in [0, 1] is the shorthand
``w_vec = alpha, w_bm25 = 1 - alpha``: alpha = 1 returns exactly the vector ranking, alpha = 0 exactly
the BM25 ranking. A document missing from a list gets nothing from that list.

Reciprocal rank fusion (``rrf``), k = 60 -- Qdrant's weighted RRF, so Qdrant computes it in-engine::

    v_i = w_i / max_j w_j                       (the heaviest list gets 1)
    score(d) = sum over lists with w_i > 0 of  1 / (k - 1 + (pos_i(d) + 1) / v_i)

With all weights equal this is plain RRF, sum of 1 / (k + pos). A smaller weight stretches that list's
ranks: with alpha = 0.8 (v_bm25 = 0.25) the BM25 list's first hit counts like the vector list's fourth.

Relative-score fusion (``relative_score``): each list's scores are min-max normalised to [0, 1] (the
list's best score -> 1, its worst -> 0; a list whose scores are all equal maps to 1)::

    norm_i(s) = (s - worst_i) / (best_i - worst_i)
    score(d) = sum over lists of  (w_i / sum_j w_j) * norm_i(d)          (missing = 0)

(with alpha: alpha * norm_vec(d) + (1 - alpha) * norm_bm25(d)). "best"/"worst" are the first/last
entries, so distances where lower is better (euclid) normalise correctly. Ties are broken by the
position in the most heavily weighted list, then the next (the earlier list first on equal weights).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

RRF_K = 60


class Ranked(NamedTuple):
    """One entry of a ranked input list; ``id`` is any hashable key (a string id, or a UUID's int)."""

    id: Hashable
    score: float
    payload: dict[str, Any] | None = None


class Fused(NamedTuple):
    id: Hashable
    score: float
    payload: dict[str, Any] | None = None


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: must be in [0, 1], got {alpha!r}")


def check_weights(weights: Sequence[float]) -> list[float]:
    """Weights of the lists: finite, >= 0, at least one > 0."""
    out = [float(w) for w in weights]
    if any(not (w >= 0.0) or w == float("inf") for w in out):
        raise ValueError(f"weights: must be finite numbers >= 0, got {list(weights)!r}")
    if not any(w > 0.0 for w in out):
        raise ValueError("weights: at least one list needs a weight above 0")
    return out


def _weighted_lists(lists: Sequence[tuple[float, Sequence[Ranked]]]) -> list[tuple[float, Sequence[Ranked]]]:
    """(weight, list) pairs with zero weights dropped, the heaviest first (earlier first on a tie)."""
    pairs = [pair for pair in lists if pair[0] > 0.0]
    pairs.sort(key=lambda pair: -pair[0])  # stable
    return pairs


def _fuse(lists: list[tuple[float, list[float], Sequence[Ranked]]], top: int | None = None) -> list[Fused]:
    """Sum per-id contributions; order by score, then position in the heaviest list, then the next...

    ``top``: only the best ``top`` are needed (a partial sort instead of a full one).
    """
    scores: dict[Hashable, float] = {}
    positions: list[dict[Hashable, int]] = [{} for _ in lists]
    payloads: dict[Hashable, Any] = {}
    for li, (_, contributions, items) in enumerate(lists):
        pos_map = positions[li]
        for pos, item in enumerate(items):
            key = item.id
            if key in pos_map:  # duplicate id within one list: keep the first (best)
                continue
            pos_map[key] = pos
            scores[key] = scores.get(key, 0.0) + contributions[pos]
            if item.payload is not None and key not in payloads:
                payloads[key] = item.payload
    big = len(scores) + 1

    def order(k: Hashable) -> tuple:
        return (-scores[k], *(p.get(k, big) for p in positions))

    if top is not None and top < len(scores):
        ordered = heapq.nsmallest(top, scores, key=order)
    else:
        ordered = sorted(scores, key=order)
    return [Fused(k, scores[k], payloads.get(k)) for k in ordered]


def rrf_weights(alpha: float) -> tuple[float, float]:
    """(v_vec, v_bm25) = (alpha, 1 - alpha) / max(alpha, 1 - alpha)."""
    _check_alpha(alpha)
    v_vec, v_bm25 = rrf_list_weights([alpha, 1.0 - alpha])
    return v_vec, v_bm25


def rrf_list_weights(weights: Sequence[float]) -> list[float]:
    """v_i = w_i / max_j w_j: the weights Qdrant's weighted RRF takes (the heaviest list gets 1)."""
    w = check_weights(weights)
    top = max(w)
    return [x / top for x in w]


def rrf_lists(lists: Sequence[tuple[float, Sequence[Ranked]]], k: int = RRF_K,
              top: int | None = None) -> list[Fused]:
    """Weighted reciprocal rank fusion of ``(weight, list)`` pairs: sum of 1 / (k - 1 + (pos + 1) / v)."""
    v = rrf_list_weights([w for w, _ in lists])
    pairs = _weighted_lists([(vi, items) for vi, (_, items) in zip(v, lists, strict=True)])
    return _fuse([(vi, [1.0 / (k - 1.0 + (pos + 1.0) / vi) for pos in range(len(items))], items)
                  for vi, items in pairs], top)


def rrf(
    vec: Sequence[Ranked], bm25: Sequence[Ranked], alpha: float, k: int = RRF_K, top: int | None = None
) -> list[Fused]:
    """Two-list weighted RRF with the ``alpha`` shorthand."""
    _check_alpha(alpha)
    return rrf_lists([(alpha, vec), (1.0 - alpha, bm25)], k, top)


def _minmax(items: Sequence[Ranked], weight: float) -> list[float]:
    if not items:
        return []
    best, worst = items[0].score, items[-1].score
    if best == worst:
        return [weight] * len(items)
    span = best - worst
    return [weight * (item.score - worst) / span for item in items]


def relative_score_lists(lists: Sequence[tuple[float, Sequence[Ranked]]],
                         top: int | None = None) -> list[Fused]:
    """Relative-score fusion of ``(weight, list)`` pairs: sum of (w_i / sum w) * minmax_i, missing = 0."""
    w = check_weights([weight for weight, _ in lists])
    total = sum(w)
    pairs = _weighted_lists([(wi / total, items) for wi, (_, items) in zip(w, lists, strict=True)])
    return _fuse([(wi, _minmax(items, wi), items) for wi, items in pairs], top)


def relative_score(
    vec: Sequence[Ranked], bm25: Sequence[Ranked], alpha: float, top: int | None = None
) -> list[Fused]:
    """Two-list relative-score fusion with the ``alpha`` shorthand."""
    _check_alpha(alpha)
    return relative_score_lists([(alpha, vec), (1.0 - alpha, bm25)], top)


def fuse_lists(method: str, lists: Sequence[tuple[float, Sequence[Ranked]]],
               top: int | None = None) -> list[Fused]:
    """Fuse ``(weight, list)`` pairs by ``method`` ("rrf" | "relative_score")."""
    if method == "rrf":
        return rrf_lists(lists, top=top)
    if method == "relative_score":
        return relative_score_lists(lists, top=top)
    raise ValueError(f"fusion: must be 'rrf' or 'relative_score', got {method!r}")


def fuse(
    method: str, vec: Sequence[Ranked], bm25: Sequence[Ranked], alpha: float, top: int | None = None
) -> list[Fused]:
    """Two lists with the ``alpha`` shorthand; ``top`` limits the result to the best ``top``."""
    _check_alpha(alpha)
    return fuse_lists(method, [(alpha, vec), (1.0 - alpha, bm25)], top)
