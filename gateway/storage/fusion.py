"""Hybrid fusion of a dense (vector) result list and a sparse (BM25) result list, weighted by ``alpha``.

Each list holds the best ``prefetch_limit`` candidates of one search, best first; ``pos`` is a document's
0-based position in a list (0 = best). ``alpha`` in [0, 1] weights the vector list, ``1 - alpha`` the BM25
list. A list whose weight is 0 takes no part at all, so alpha = 1 returns exactly the vector ranking and
alpha = 0 exactly the BM25 ranking. A document missing from a list gets nothing from that list.

Reciprocal rank fusion (``rrf``), k = 60 -- Qdrant's weighted RRF, so Qdrant computes it in-engine::

    w_vec = alpha / m,   w_bm25 = (1 - alpha) / m,   m = max(alpha, 1 - alpha)
    score(d) = sum over lists with w > 0 of  1 / (k - 1 + (pos(d) + 1) / w)

With both weights 1 (alpha = 0.5) this is plain RRF, 1 / (k + pos). A smaller weight stretches that
list's ranks: at alpha = 0.8 (w_bm25 = 0.25) the BM25 list's first hit counts like the vector list's
fourth.

Relative-score fusion (``relative_score``): each list's scores are min-max normalised to [0, 1] (the
list's best score -> 1, its worst -> 0; a list whose scores are all equal maps to 1)::

    norm(s) = (s - worst) / (best - worst)
    score(d) = alpha * norm_vec(d) + (1 - alpha) * norm_bm25(d)        (missing = 0)

"best"/"worst" are the first/last entries, so distances where lower is better (euclid) normalise
correctly. Ties are broken by the position in the more heavily weighted list (the vector list at
alpha = 0.5), then in the other list.
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


def _weighted_lists(
    vec: Sequence[Ranked], bm25: Sequence[Ranked], alpha: float
) -> list[tuple[float, Sequence[Ranked]]]:
    """(weight, list) pairs with zero weights dropped, the heavier list first (vector first on a tie)."""
    pairs = [(alpha, vec), (1.0 - alpha, bm25)]
    pairs = [pair for pair in pairs if pair[0] > 0.0]
    pairs.sort(key=lambda pair: -pair[0])  # stable: vector stays first on equal weights
    return pairs


def _fuse(lists: list[tuple[float, list[float], Sequence[Ranked]]], top: int | None = None) -> list[Fused]:
    """Sum per-id contributions; order by score, then position in the heavier list, then the other.

    ``top``: only the best ``top`` are needed (a partial sort instead of a full one).
    """
    scores: dict[Hashable, float] = {}
    first_pos: dict[Hashable, int] = {}
    second_pos: dict[Hashable, int] = {}
    payloads: dict[Hashable, Any] = {}
    for li, (_, contributions, items) in enumerate(lists):
        pos_map = first_pos if li == 0 else second_pos
        for pos, item in enumerate(items):
            key = item.id
            if key in pos_map:  # duplicate id within one list: keep the first (best)
                continue
            pos_map[key] = pos
            scores[key] = scores.get(key, 0.0) + contributions[pos]
            if item.payload is not None and key not in payloads:
                payloads[key] = item.payload
    big = len(scores) + 1

    def order(k: Hashable) -> tuple[float, int, int]:
        return -scores[k], first_pos.get(k, big), second_pos.get(k, big)

    if top is not None and top < len(scores):
        ordered = heapq.nsmallest(top, scores, key=order)
    else:
        ordered = sorted(scores, key=order)
    return [Fused(k, scores[k], payloads.get(k)) for k in ordered]


def rrf_weights(alpha: float) -> tuple[float, float]:
    """(w_vec, w_bm25) = (alpha, 1 - alpha) / max(alpha, 1 - alpha)."""
    _check_alpha(alpha)
    m = max(alpha, 1.0 - alpha)
    return alpha / m, (1.0 - alpha) / m


def rrf(
    vec: Sequence[Ranked], bm25: Sequence[Ranked], alpha: float, k: int = RRF_K, top: int | None = None
) -> list[Fused]:
    """Weighted reciprocal rank fusion: sum of 1 / (k - 1 + (pos + 1) / w) over lists with w > 0."""
    _check_alpha(alpha)
    m = max(alpha, 1.0 - alpha)
    lists = [
        (w, [1.0 / (k - 1.0 + (pos + 1.0) * m / w) for pos in range(len(items))], items)
        for w, items in _weighted_lists(vec, bm25, alpha)
    ]
    return _fuse(lists, top)


def _minmax(items: Sequence[Ranked], weight: float) -> list[float]:
    if not items:
        return []
    best, worst = items[0].score, items[-1].score
    if best == worst:
        return [weight] * len(items)
    span = best - worst
    return [weight * (item.score - worst) / span for item in items]


def relative_score(
    vec: Sequence[Ranked], bm25: Sequence[Ranked], alpha: float, top: int | None = None
) -> list[Fused]:
    """Relative-score fusion: alpha*minmax(vec) + (1-alpha)*minmax(bm25), missing = 0."""
    _check_alpha(alpha)
    lists = [(w, _minmax(items, w), items) for w, items in _weighted_lists(vec, bm25, alpha)]
    return _fuse(lists, top)


def fuse(
    method: str, vec: Sequence[Ranked], bm25: Sequence[Ranked], alpha: float, top: int | None = None
) -> list[Fused]:
    """Dispatch on ``method`` ("rrf" | "relative_score"); ``top`` limits the result to the best ``top``."""
    if method == "rrf":
        return rrf(vec, bm25, alpha, top=top)
    if method == "relative_score":
        return relative_score(vec, bm25, alpha, top=top)
    raise ValueError(f"fusion: must be 'rrf' or 'relative_score', got {method!r}")
