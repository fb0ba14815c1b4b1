"""gateway.storage.fusion details the formula tests do not reach: ties, duplicates, payloads, bad methods.

(Written against the survivors of a mutation run over fusion.py; the formulas themselves are tested in
tests/test_storage_contract.py.)
"""

from __future__ import annotations

import pytest

from gateway.storage import fusion
from gateway.storage.fusion import Ranked


def ids(fused: list[fusion.Fused]) -> list:
    return [f.id for f in fused]


@pytest.mark.parametrize("method", ["rrf", "relative_score"])
def test_ties_follow_the_heavier_list(method):
    # every document scores the same in both lists: the order comes from the more heavily weighted list
    vec = [Ranked("a", 1.0), Ranked("b", 1.0), Ranked("c", 1.0)]
    bm25 = [Ranked("c", 1.0), Ranked("b", 1.0), Ranked("a", 1.0)]
    if method == "rrf":  # rrf ranks by position; make the fused scores equal with mirrored lists at 0.5
        assert ids(fusion.fuse(method, vec, bm25, 0.5)) == ["a", "c", "b"]  # a, c tie: vector list first
    else:
        assert ids(fusion.fuse(method, vec, bm25, 0.75)) == ["a", "b", "c"]
        assert ids(fusion.fuse(method, vec, bm25, 0.25)) == ["c", "b", "a"]
        assert ids(fusion.fuse(method, vec, bm25, 0.5)) == ["a", "b", "c"]  # equal weights: vector first


def test_a_tie_with_a_document_missing_from_the_heavier_list():
    # at alpha 0.5 the first of each list scores 1/60: "v" (vector list) before "s" (BM25 list only)
    out = fusion.rrf([Ranked("v", 0.9), Ranked("x", 0.5)], [Ranked("s", 7.0), Ranked("y", 3.0)], 0.5)
    assert ids(out)[:2] == ["v", "s"] and out[0].score == out[1].score == pytest.approx(1 / 60)
    vec, bm25 = [Ranked("v", 1.0), Ranked("w", 0.0)], [Ranked("s", 1.0), Ranked("t", 0.0)]
    out = fusion.relative_score(vec, bm25, 0.5)
    assert ids(out)[:2] == ["v", "s"] and out[0].score == out[1].score == 0.5


def test_a_duplicate_id_in_one_list_counts_once_and_does_not_end_the_list():
    vec = [Ranked("a", 0.9), Ranked("b", 0.8), Ranked("a", 0.7), Ranked("c", 0.6)]
    out = {f.id: f.score for f in fusion.rrf(vec, [], 1.0)}
    assert set(out) == {"a", "b", "c"}
    assert out["a"] == pytest.approx(1 / 60) and out["c"] == pytest.approx(1 / (60 + 3))


def test_payloads_travel_with_the_fused_documents():
    vec = [Ranked("a", 0.9, {"from": "vec"}), Ranked("b", 0.5)]
    bm25 = [Ranked("b", 3.0, {"from": "bm25"}), Ranked("a", 1.0, {"from": "bm25, second"})]
    for method in ("rrf", "relative_score"):
        out = {f.id: f.payload for f in fusion.fuse(method, vec, bm25, 0.5)}
        # the first payload seen for each document (lists in weight order, vector list first on a tie)
        assert out == {"a": {"from": "vec"}, "b": {"from": "bm25"}}
    assert fusion.rrf([Ranked("z", 1.0)], [], 1.0)[0].payload is None


def test_top_returns_the_best_in_order():
    vec = [Ranked(k, 1.0 - k / 10) for k in range(8)]
    full = fusion.rrf(vec, list(reversed(vec)), 0.8)
    for top in (1, 3, 8, 20):
        assert fusion.rrf(vec, list(reversed(vec)), 0.8, top=top) == full[:top]


def test_an_unknown_method_is_refused_by_name():
    with pytest.raises(ValueError, match="fusion: must be 'rrf' or 'relative_score', got 'max'"):
        fusion.fuse("max", [], [], 0.5)
    with pytest.raises(ValueError, match="alpha"):
        fusion.rrf([], [], -0.1)
