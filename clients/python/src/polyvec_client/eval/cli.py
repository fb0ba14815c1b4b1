"""``polyvec eval COLLECTION --queries Q.jsonl --qrels QRELS.tsv``: retrieval quality through the client.

Every search goes to the gateway over HTTP (latency end to end, one search at a time unless
``--concurrency``); ``--load CORPUS.jsonl`` imports a BEIR corpus first with ``insert_many``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import IO, Any

from polyvec_client.aio import AsyncClient
from polyvec_client.client import Client
from polyvec_client.errors import BadRequestError, PolyvecError
from polyvec_client.eval import data, report, runner


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("collection")
    p.add_argument("--queries", required=True, metavar="Q.jsonl",
                   help='BEIR queries: {"_id", "text"} per line, or "image": a path (relative to the file), '
                        "URL or base64")
    p.add_argument("--qrels", required=True, metavar="QRELS.tsv",
                   help="BEIR qrels: query-id, corpus-id, score (tab-separated; a header line is skipped)")
    p.add_argument("--kinds", type=_names, help="comma-separated: near_text, bm25, hybrid, neural_sparse, "
                                                "near_image (default: what the collection answers)")
    p.add_argument("--alphas", type=_floats, default=list(runner.DEFAULT_ALPHAS),
                   help="hybrid alphas (default 0,0.25,0.5,0.75,1)")
    p.add_argument("--fusion", type=_names, default=list(runner.FUSIONS),
                   help="hybrid fusions (default rrf,relative_score)")
    p.add_argument("--k", type=_ints, default=list(runner.DEFAULT_KS),
                   help="cutoffs of Recall@K and P@K (default 1,5,10,100); searches return the largest")
    p.add_argument("--vector", help="which named vector (default: the collection's first)")
    p.add_argument("--filter", type=json.loads, help="restrict every search to this JSON filter")
    p.add_argument("--concurrency", type=int, default=1,
                   help="searches in flight (default 1: latency without self-contention)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="draw Recall@K per run and metrics against alpha")
    load = p.add_argument_group("load a BEIR corpus first")
    load.add_argument("--load", metavar="CORPUS.jsonl",
                      help='import {"_id", "title", "text", ...} lines first (image paths are read)')
    load.add_argument("--model", help="create the collection when missing, with this model from the "
                                      "gateway's MODELS")
    load.add_argument("--text-fields", type=_names, default=["title", "text"],
                      help="fields embedded as text when creating it (default title,text)")
    load.add_argument("--image-fields", type=_names, default=[],
                      help="fields embedded as images when creating it (image file paths in the corpus are "
                           "read and sent as base64 in any case)")


def load_corpus(client: Client, args: argparse.Namespace, err: IO[str]) -> None:
    if not client.collections.exists(args.collection):
        if not args.model:
            raise data.EvalDataError("--load", f"collection {args.collection!r} does not exist: pass --model "
                                               "NAME to create it (or create it first)")
        vectorizer: dict[str, Any] = {"model": args.model}
        if args.text_fields:
            vectorizer["text_fields"] = args.text_fields
        if args.image_fields:
            vectorizer["image_fields"] = args.image_fields
        definition: dict[str, Any] = {"name": args.collection, "vectorizers": {"main": vectorizer}}
        if args.text_fields:
            definition["bm25"] = {"fields": args.text_fields}
        client.collections.create(definition)
        print(f"created collection {args.collection!r} (model {args.model})", file=err)
    started = time.monotonic()
    objects = data.read_corpus(args.load)
    result = client.collection(args.collection).insert_many(objects, progress=False)
    print(f"loaded {result.ok} objects from {args.load} in {time.monotonic() - started:.1f} s"
          + (f"; {len(result.failed)} failed, e.g. {result.failed[0]}" if result.failed else ""), file=err)


async def evaluate(args: argparse.Namespace, queries: list[data.Query],
                   qrels: dict[str, dict[str, int]], err: IO[str]) -> dict[str, Any]:
    async with AsyncClient(args.url, api_key=args.api_key, timeout=args.timeout) as client:
        definition = (await client.collections.get(args.collection)).raw
        kinds = args.kinds or runner.default_kinds(definition, queries)
        runs = runner.plan_runs(kinds, args.alphas, args.fusion)
        search_api = client.collection(args.collection).search

        async def search(body: dict[str, Any]) -> list[str]:
            try:
                result = await search_api.run(body)
            except BadRequestError as exc:
                raise runner.SearchFailed(str(exc)) from None
            return [hit.id for hit in result.hits]

        started = time.monotonic()

        def progress(result: runner.RunResult) -> None:
            print(f"  {result.config.name}: {result.queries} queries, {len(result.errors)} failed "
                  f"({time.monotonic() - started:.1f} s)", file=err, flush=True)

        return await runner.evaluate(search, queries, qrels, runs, args.k, vector=args.vector,
                                     filter=args.filter, concurrency=args.concurrency,
                                     collection=args.collection, on_run=progress,
                                     latency="end to end per search, at the client")


def run(args: argparse.Namespace, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> int:
    try:
        queries = data.read_queries(args.queries)
        qrels = data.read_qrels(args.qrels)
        runner.plan_runs(args.kinds or ["hybrid"], args.alphas, args.fusion)  # checked before any search
        runner.check_ks(args.k)
        if args.load:
            with Client(args.url, api_key=args.api_key, timeout=args.timeout) as client:
                load_corpus(client, args, err)
        result = asyncio.run(evaluate(args, queries, qrels, err))
    except (data.EvalDataError, ValueError) as exc:
        print(f"polyvec eval: {exc}", file=err)
        return 2
    except PolyvecError as exc:
        print(f"polyvec eval: {exc}", file=err)
        return 1
    if args.json:
        print(json.dumps(result, indent=2), file=out)
    else:
        print(report.format_table(result), file=out)
    if args.plot:
        path = report.plot(result, args.plot)
        print(f"wrote {path}", file=err)
    return 0
