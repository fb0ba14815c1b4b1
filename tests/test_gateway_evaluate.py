"""POST /v1/collections/{name}/evaluate: the search page's Evaluate tab runs polyvec eval's code in the
gateway (real service, real inference server with the deterministic test encoder, QdrantStore).

* the report has every run and measure, and its numbers are the ones metrics.compute gives for the
  rankings /search returns (one implementation of the measures);
* bad files and settings are 400s naming the file line or field; EVAL_MAX_SEARCHES is a limit;
* a gateway installed without the eval extra answers 501 naming it.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx
import pytest

from gateway.http_api import create_app
from tests.gateway_support import gateway_with_inference, make_store

DOCS = {"d1": "red apple fruit", "d2": "green leaf plant", "d3": "blue sea water",
        "d4": "yellow banana fruit", "d5": "black night sky", "d6": "red cherry fruit"}
QUERIES = [{"_id": "q1", "text": "apple"}, {"_id": "q2", "text": "sea water"}, {"_id": "q3", "text": "fruit"},
           {"_id": "q4", "text": "unjudged query"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\nq3\td1\t1\nq3\td4\t1\nq3\td6\t1\n"


def _run(tmp_path, scenario, settings=None):
    async def main():
        async with gateway_with_inference(make_store("qdrant", tmp_path), settings=settings) as (svc, _):
            app = create_app(svc)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway",
                                         timeout=60) as client:
                r = await client.post("/v1/collections", json={
                    "name": "docs", "vectorizers": {"main": {"model": "clip", "text_fields": ["text"]}}})
                assert r.status_code == 201, r.text
                r = await client.post("/v1/collections/docs/objects", json={"objects": [
                    {"id": k, "properties": {"text": v}} for k, v in DOCS.items()]})
                assert r.json()["ok"] == len(DOCS)
                return await scenario(client, svc)

    return asyncio.run(asyncio.wait_for(main(), 120))


def _body(**extra):
    return {"queries": "\n".join(json.dumps(q) for q in QUERIES), "qrels": QRELS, **extra}


def test_evaluate_reports_every_run_with_the_measures_of_the_searches(tmp_path):
    from polyvec_client.eval import data, metrics

    async def scenario(client, svc):
        r = await client.post("/v1/collections/docs/evaluate", json=_body(alphas=[0, 1], fusion=["rrf"],
                                                                           k=[1, 3]))
        assert r.status_code == 200, r.text
        rankings = {}
        for q in QUERIES[:3]:
            hits = (await client.post("/v1/collections/docs/search",
                                      json={"near_text": {"query": q["text"]}, "limit": 3})).json()["hits"]
            rankings[q["_id"]] = [h["id"] for h in hits]
        return r.json(), rankings

    report, rankings = _run(tmp_path, scenario)
    assert [run["name"] for run in report["runs"]] == ["near_text", "bm25", "hybrid alpha=0 rrf",
                                                       "hybrid alpha=1 rrf"]
    assert report["queries"] == {"total": 4, "evaluated": 3, "without_qrels": 1, "text": 3, "image": 0}
    assert report["measures"] == ["R@1", "R@3", "P@1", "P@3", "MRR@10", "nDCG@10", "MAP", "AvgRecall"]
    near_text = report["runs"][0]
    assert near_text["queries"] == 3 and near_text["errors"] == 0
    assert near_text["metrics"] == pytest.approx(metrics.compute(rankings, data.parse_qrels(QRELS), [1, 3]))
    # apple -> d1 and sea water -> d3 first; fruit: one of its three relevant documents first
    assert near_text["metrics"]["R@1"] == pytest.approx((1 + 1 + 1 / 3) / 3)
    assert near_text["latency_ms"]["p50"] > 0
    # alpha 1 is exactly the vector ranking, alpha 0 exactly BM25's
    assert report["runs"][3]["metrics"] == pytest.approx(near_text["metrics"])
    assert report["runs"][2]["metrics"] == pytest.approx(report["runs"][1]["metrics"])


@pytest.mark.parametrize("body, field, message", [
    (_body(qrels="q1\td1\t1\nq2\td3\tx\n"), "qrels: line 2: score", "must be an integer"),
    (_body(queries='{"_id": "q1"}'), "queries: line 1: text", "non-empty text"),
    (_body(queries='{"_id": "q1", "image": "photos/q1.jpg"}'), "queries: line 1: image",
     "the gateway cannot read"),
    (_body(kinds=["near_txt"]), "kinds", "unknown kind 'near_txt'"),
    (_body(fusion=["max"]), "fusion", "unknown fusion 'max'"),
    (_body(qrels="q9\td1\t1\n"), "qrels", "no query of the queries file has a relevant document"),
    (_body(), "queries", "needs 36 searches (3 judged queries x 12 runs)"),  # EVAL_MAX_SEARCHES=20
    ({"qrels": QRELS}, "queries", "Field required"),
])
def test_bad_requests_name_the_field(tmp_path, body, field, message):
    async def scenario(client, svc):
        return await client.post("/v1/collections/docs/evaluate", json=body)

    r = _run(tmp_path, scenario, settings={"eval_max_searches": 20})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field
    assert message in r.json()["error"]


def test_without_the_eval_extra_the_route_says_which_to_install(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m.startswith("polyvec_client.eval")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ir_measures", None)  # import ir_measures raises ImportError

    async def scenario(client, svc):
        return await client.post("/v1/collections/docs/evaluate", json=_body())

    r = _run(tmp_path, scenario)
    assert r.status_code == 501
    assert "pip install 'polyvec[eval]'" in r.json()["error"] and "ir_measures" in r.json()["error"]


def test_grpc_evaluate_is_the_same_service_method(tmp_path):
    """gRPC Evaluate: the report of HTTP (as a Struct); errors are INVALID_ARGUMENT naming the field."""
    import grpc

    from gateway.grpc_api import start_grpc_server, struct_to_dict
    from protos import gateway_pb2, gateway_pb2_grpc

    async def scenario(client, svc):
        server, port = await start_grpc_server(svc, "127.0.0.1", 0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                body = _body(alphas=[0, 1], fusion=["rrf"], k=[1, 3])
                answer = await stub.Evaluate(gateway_pb2.EvaluateRequest(
                    collection="docs", queries=body["queries"], qrels=body["qrels"], alphas=[0, 1],
                    fusion=["rrf"], k=[1, 3]))
                http = (await client.post("/v1/collections/docs/evaluate", json=body)).json()
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Evaluate(gateway_pb2.EvaluateRequest(
                        collection="docs", queries=body["queries"], qrels="q1\td1\t1\nq2\td3\tmaybe\n"))
                return struct_to_dict(answer.report), http, info.value
        finally:
            await server.stop(None)

    report, http, error = _run(tmp_path, scenario)
    assert [r["name"] for r in report["runs"]] == [r["name"] for r in http["runs"]]
    assert report["k"] == [1, 3] and report["depth"] == 10
    for grpc_run, http_run in zip(report["runs"], http["runs"], strict=True):
        assert grpc_run["metrics"] == pytest.approx(http_run["metrics"])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(error.trailing_metadata())["field"] == "qrels: line 2: score"
