"""Evaluation on the gateway, for the search page's Evaluate tab: ``POST /v1/collections/{name}/evaluate``.

The page uploads BEIR files; the gateway runs the very code of ``polyvec eval`` (polyvec_client.eval:
the readers, the runner, and the measures from ir-measures), with the searches going straight to this
service instead of over HTTP. So the measures are computed in one place, by one library, whichever way
an evaluation is started; latency here is the search's time inside the gateway.

polyvec_client.eval needs the ``eval`` extra (ir-measures, which brings scipy): the gateway image, which
installs only the ``gateway`` set, answers 501 naming it; ``polyvec up`` (the ``all`` set) has it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from gateway.errors import BadRequest, NotInstalled
from gateway.service.requests import MAX_LIMIT, _Strict, parse

if TYPE_CHECKING:
    from gateway.service.core import GatewayService


class EvaluateRequest(_Strict):
    queries: str = Field(..., min_length=1, description="BEIR queries.jsonl: one {\"_id\", \"text\"} (or "
                                                        "\"image\": an http(s) URL or base64) per line")
    qrels: str = Field(..., min_length=1, description="BEIR qrels TSV: query-id, corpus-id, score per line "
                                                      "(a header line is skipped)")
    kinds: list[str] | None = Field(None, description="search kinds (default: what the collection answers "
                                                      "for these queries)")
    alphas: list[float] = Field([0.0, 0.25, 0.5, 0.75, 1.0], min_length=1, description="hybrid alphas")
    fusion: list[str] = Field(["rrf", "relative_score"], min_length=1, description="hybrid fusions")
    k: list[int] = Field([1, 5, 10, 100], min_length=1, description="cutoffs of Recall@K and P@K")
    vector: str | None = Field(None, description="which named vector (default: the collection's first)")
    filter: dict[str, Any] | None = Field(None, description="restrict every search to this filter")


async def evaluate(service: GatewayService, name: str, body: EvaluateRequest | dict) -> dict[str, Any]:
    request: EvaluateRequest = parse(EvaluateRequest, body)
    try:
        from polyvec_client.eval import data, runner
    except ImportError as exc:
        raise NotInstalled(f"evaluation needs the eval extra, which this gateway was installed without "
                           f"({exc.name or exc} is missing): pip install 'polyvec[eval]', or run "
                           "`polyvec eval` from a machine that has it") from None
    try:
        queries = data.parse_queries(request.queries)
        qrels = data.parse_qrels(request.qrels)
    except data.EvalDataError as exc:
        raise BadRequest(exc.field, exc.detail) from None
    collection = await service.get_collection(name)
    try:
        ks = runner.check_ks(request.k)
        if ks[-1] > MAX_LIMIT:
            raise ValueError(f"k: at most {MAX_LIMIT}")
        kinds = request.kinds or runner.default_kinds(collection, queries)
        runs = runner.plan_runs(kinds, request.alphas, request.fusion)
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        raise BadRequest(field, message) from None
    judged = set(runner.metrics.judged_queries(qrels))
    usable = [q for q in queries if q.id in judged]
    if not usable:
        raise BadRequest("qrels", "no query of the queries file has a relevant document in the qrels "
                                  "(are the query ids the same in both files?)")
    searches = sum(sum(q.modality == run.modality for q in usable) for run in runs)
    limit = service.settings.eval_max_searches
    if searches > limit:
        raise BadRequest("queries", f"this evaluation needs {searches} searches ({len(usable)} judged "
                                    f"queries x {len(runs)} runs); the gateway runs at most {limit} per "
                                    "request (EVAL_MAX_SEARCHES): use `polyvec eval` for larger sets")

    async def search(body: dict[str, Any]) -> list[str]:
        try:
            answer = await service.search(name, body)
        except BadRequest as exc:  # this query alone (a bad image, ...): counted 0, reported
            raise runner.SearchFailed(exc.message) from None
        return [hit["id"] for hit in answer["hits"]]

    return await runner.evaluate(search, queries, qrels, runs, ks, vector=request.vector,
                                 filter=request.filter, collection=name,
                                 latency="per search inside the gateway (no network)")
