"""polyvec eval's measures on a fixture whose values are worked out by hand, the BEIR readers' errors, and
the runner (plan, modality split, failures) over a search function answering from a table."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from polyvec_client.eval import data, metrics, report, runner

# q1: relevant d1, d2; ranked d3 d1 d4 d2   q2: d5 (relevance 2); ranked d5 d6   q3: d7; no hits
# q4: judged, nothing relevant -> not evaluated
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t1\nq2\td5\t2\nq2\td6\t0\nq3\td7\t1\nq4\td8\t0\n"
RANKINGS = {"q1": ["d3", "d1", "d4", "d2"], "q2": ["d5", "d6"], "q3": []}
LOG2 = math.log2
# q1: DCG = 1/log2(3) + 1/log2(5), IDCG = 1/log2(2) + 1/log2(3)
NDCG_Q1 = (1 / LOG2(3) + 1 / LOG2(5)) / (1 + 1 / LOG2(3))
BY_HAND = {
    "R@1": (0 + 1 + 0) / 3, "R@5": (1 + 1 + 0) / 3,
    "P@1": (0 + 1 + 0) / 3, "P@5": (2 / 5 + 1 / 5 + 0) / 3,
    "MRR@10": (1 / 2 + 1 + 0) / 3,
    "nDCG@10": (NDCG_Q1 + 1 + 0) / 3,
    "MAP": ((1 / 2 + 2 / 4) / 2 + 1 + 0) / 3,
    "AvgRecall": ((0 + 1 + 0) / 3 + (1 + 1 + 0) / 3) / 2,  # mean(R@1, R@10); R@10 = R@5 here
}


def test_measures_match_the_values_worked_out_by_hand():
    qrels = data.parse_qrels(QRELS)
    assert metrics.judged_queries(qrels) == ["q1", "q2", "q3"]
    got = metrics.compute(RANKINGS, qrels, [1, 5])
    assert list(got) == ["R@1", "R@5", "P@1", "P@5", "MRR@10", "nDCG@10", "MAP", "AvgRecall"]
    for name, value in BY_HAND.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


def test_the_ranking_order_is_measured_not_trec_evals_tie_order():
    """Reversing q1's ranking changes the result (trec_eval alone would re-sort tied scores by id)."""
    qrels = data.parse_qrels(QRELS)
    reversed_run = {**RANKINGS, "q1": ["d2", "d4", "d1", "d3"]}
    got = metrics.compute(reversed_run, qrels, [1])
    assert got["R@1"] == pytest.approx((1 / 2 + 1) / 3)
    assert got["MRR@10"] == pytest.approx((1 + 1) / 3)


def test_parsing_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(data.EvalDataError, match=r"qrels: line 3: score: must be an integer, got 'x'"):
        data.parse_qrels("q\td\tscore\nq1\td1\t1\nq1\td2\tx\n")
    with pytest.raises(data.EvalDataError, match=r"qrels: line 1: expected query-id, corpus-id, score"):
        data.parse_qrels("q1 d1\n")
    assert data.parse_qrels("q1 0 d1 1\n") == {"q1": {"d1": 1}}  # TREC's four columns
    with pytest.raises(data.EvalDataError, match=r"queries: line 2: not valid JSON"):
        data.parse_queries('{"_id": "a", "text": "x"}\n{oops\n')
    with pytest.raises(data.EvalDataError, match=r"queries: line 1: text: a query needs a non-empty text"):
        data.parse_queries('{"_id": "a"}\n')
    with pytest.raises(data.EvalDataError, match=r"line 2: _id: query 'a' appears twice"):
        data.parse_queries('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    # image queries: a path is read relative to the file by the command, refused by the gateway
    (tmp_path / "q.png").write_bytes(b"\x89PNG fake")
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"_id": "i1", "image": "q.png"}) + "\n"
                       + json.dumps({"_id": "t1", "text": "red shoes"}) + "\n")
    parsed = data.read_queries(queries)
    assert [q.modality for q in parsed] == ["image", "text"]
    assert parsed[0].image == "iVBORyBmYWtl"
    with pytest.raises(data.EvalDataError, match="file path, which the gateway cannot read"):
        data.parse_queries(queries.read_text())


def _search_from(table: dict[str, list[str]], fail: set[str] = frozenset()):
    calls: list[dict] = []

    async def search(body: dict) -> list[str]:
        calls.append(body)
        query = (body.get("near_text") or body.get("bm25") or body.get("hybrid") or {}).get("query")
        if query in fail:
            raise runner.SearchFailed("400: bad query")
        return table.get(query, [])[: body["limit"]]

    return search, calls


def test_runner_plans_kinds_alphas_and_fusions_and_scores_each_run():
    plan = runner.plan_runs(["near_text", "hybrid", "near_image"], [0.0, 0.5], ["rrf", "relative_score"])
    assert [r.name for r in plan] == ["near_text", "hybrid alpha=0 rrf", "hybrid alpha=0.5 rrf",
                                      "hybrid alpha=0 relative_score", "hybrid alpha=0.5 relative_score",
                                      "near_image"]
    with pytest.raises(ValueError, match="unknown kind 'near_txt'"):
        runner.plan_runs(["near_txt"])
    with pytest.raises(ValueError, match="alphas: 1.5 is not in"):
        runner.plan_runs(["hybrid"], [1.5])
    queries = data.parse_queries("\n".join(json.dumps({"_id": q, "text": f"text of {q}"})
                                           for q in ("q1", "q2", "q3", "q4", "q5")))
    table = {f"text of {q}": ranked for q, ranked in RANKINGS.items()}
    search, calls = _search_from(table, fail={"text of q3"})
    result = asyncio.run(runner.evaluate(search, queries, data.parse_qrels(QRELS),
                                         runner.plan_runs(["near_text", "near_image"]), [5, 1],
                                         collection="c", vector="main"))
    assert result["k"] == [1, 5]
    assert result["queries"] == {"total": 5, "evaluated": 3, "without_qrels": 2, "text": 3, "image": 0}
    text_run, image_run = result["runs"]
    assert len(calls) == 3 and all(c["limit"] == 10 and c["vector"] == "main" for c in calls)
    assert text_run["errors"] == 1 and text_run["error"] == "q3: 400: bad query"
    for name, value in BY_HAND.items():  # q3's failure counts 0, as its empty ranking did
        assert text_run["metrics"][name] == pytest.approx(value), name
    assert text_run["latency_ms"]["p50"] >= 0
    assert image_run["metrics"] is None and "no image queries" in image_run["error"]
    table_text = report.format_table(result)
    assert "near_text" in table_text and "0.500" in table_text and "failed: no image queries" in table_text


def test_default_kinds_follow_the_collection():
    text = [data.Query("a", text="x")]
    image = [data.Query("b", image="https://example.com/x.png")]
    clip = {"vectorizers": {"v": {"modalities": ["text", "image"]}}, "bm25": {"fields": ["title"]}}
    assert runner.default_kinds(clip, text + image) == ["near_text", "bm25", "hybrid", "near_image"]
    assert runner.default_kinds({"vectorizers": {"v": {"modalities": ["text"]}}}, text) == ["near_text"]
    assert runner.default_kinds({**clip, "sparse_vectorizers": {"s": {}}}, text) == [
        "near_text", "bm25", "neural_sparse", "hybrid"]


def test_plot_draws_recall_curves_and_alpha_panel(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    assert matplotlib
    runs = [{"name": f"hybrid alpha={a:g} rrf", "kind": "hybrid", "alpha": a, "fusion": "rrf",
             "metrics": {"R@1": a / 2, "R@10": a, "nDCG@10": a, "MRR@10": a / 3, "AvgRecall": a * 3 / 4},
             "latency_ms": {"p50": 1, "p99": 2}} for a in (0.0, 0.5, 1.0)]
    out = report.plot({"k": [1, 10], "runs": runs, "collection": "c"}, tmp_path / "plot.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
