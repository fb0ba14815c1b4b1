"""The user command line: ``polyvec import | export | search | collections | eval`` (also
``polyvec-client ...``).

The gateway is ``--url`` (default $POLYVEC_URL, else http://localhost:8000; ``grpc://HOST:PORT`` for its
gRPC API) with ``--api-key`` (default $POLYVEC_API_KEY).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from typing import IO, Any

from polyvec_client import _json
from polyvec_client import query as q
from polyvec_client.cli import load
from polyvec_client.client import Client
from polyvec_client.errors import PolyvecError
from polyvec_client.progress import Progress

COMMANDS = ("import", "export", "search", "collections", "eval")


def build_parser(prog: str = "polyvec") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Load, export and search polyvec collections.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the gateway: http(s)://HOST:PORT, or grpc://HOST:PORT for its "
                                      "gRPC API (default: $POLYVEC_URL or http://localhost:8000)")
    common.add_argument("--api-key", help="API key (default: $POLYVEC_API_KEY)")
    common.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default 600)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("import", parents=[common], help="import a file or folder into a collection",
                       description="Import JSON lines, CSV/TSV, Parquet or a folder of images, with "
                                   "progress. Failed objects are written with their errors to "
                                   "SOURCE.failed.jsonl.")
    load.add_arguments(p)

    p = sub.add_parser("export", parents=[common], help="write a collection as JSON lines (import's format)",
                       description="Write every object (matching --filter) as one JSON line {id, properties, "
                                   "vectors?}: what `polyvec import` reads, so a round trip reproduces it.")
    p.add_argument("collection")
    p.add_argument("--filter", type=json.loads, help="JSON filter, e.g. '{\"brand\": \"Fleet\"}'")
    p.add_argument("--with-vectors", action="store_true", help="include the dense vectors")
    p.add_argument("--properties", help="comma-separated properties to export (default: all)")
    p.add_argument("--batch-size", type=int, default=1000, help="objects per page (default 1000)")
    p.add_argument("-o", "--output", help="file to write (default: standard output)")
    p.add_argument("--progress-interval", type=float, default=5.0, help=argparse.SUPPRESS)

    p = sub.add_parser("search", parents=[common], help="search a collection and print the hits")
    p.add_argument("collection")
    p.add_argument("query", help="the query text (near_text, bm25, neural_sparse, hybrid) or an image "
                                 "path/URL (near_image)")
    p.add_argument("--kind", default="near_text",
                   choices=["near_text", "bm25", "neural_sparse", "hybrid", "near_image"])
    p.add_argument("--alpha", type=float, default=None, help="hybrid: 1 = vector only, 0 = BM25 only "
                                                             "(default 0.5)")
    p.add_argument("--weights", type=json.loads, help="hybrid: two or three lists and their weights, e.g. "
                                                      "'{\"minilm\": 0.5, \"bm25\": 0.2, \"splade\": 0.3}'")
    p.add_argument("--sparse-vector", help="neural_sparse: which sparse vectorizer (default: the first)")
    p.add_argument("--fusion", default="rrf", choices=["rrf", "relative_score"])
    p.add_argument("--filter", type=json.loads, help="JSON filter")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--vector", help="which named vector (default: the collection's first)")
    p.add_argument("--properties", help="comma-separated properties to show (default: all)")
    p.add_argument("--json", action="store_true", help="print the gateway's JSON answer")

    p = sub.add_parser("collections", parents=[common], help="list, show or delete collections")
    p.add_argument("action", choices=["list", "get", "delete"])
    p.add_argument("name", nargs="?")
    p.add_argument("--yes", action="store_true", help="delete without asking")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("eval", parents=[common], help="measure retrieval quality (Recall@K, MRR, nDCG, ...)",
                       description="Search a collection with BEIR queries and score the hits against the "
                                   "qrels: Recall@K, P@K, MRR@10, nDCG@10, MAP and AvgRecall = mean(R@1, "
                                   "R@10) per search kind and hybrid alpha, with p50/p99 latency. Needs the "
                                   "eval extra (pip install 'polyvec-client[eval]').")
    eval_arguments(p)
    return parser


def eval_arguments(p: argparse.ArgumentParser) -> None:
    """``polyvec eval``'s options, from polyvec_client.eval.cli when the eval extra is installed."""
    try:
        from polyvec_client.eval import cli as eval_cli
    except ImportError:  # the command then says what to install
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        return
    eval_cli.add_arguments(p)


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [f.strip() for f in text.split(",") if f.strip()]


def _cell(value: Any, width: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) > 100 and isinstance(value, str) and " " not in text[:100]:
        text = f"<{len(text):,} chars>"  # base64 images and the like
    text = " ".join(text.split())
    return text if len(text) <= width else text[:max(1, width - 1)] + "…"


def table(rows: list[list[str]], header: list[str], out: IO[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


# ---------------------------------------------------------------------------------------------- export
def _import_line(data: dict[str, Any]) -> bytes:
    """One scrolled object as a line of the import format: ``{id, properties, vectors?}``."""
    vectors = data.get("vectors")
    out = {"id": data["id"], "properties": data.get("properties") or {}}
    if vectors:
        out["vectors"] = vectors
    return _json.dumps_line(out)


def export(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    col = client.collection(args.collection)
    total = col.count(args.filter)
    progress = Progress(f"export {args.collection}", total, stream=err, interval_s=args.progress_interval,
                        failures=False)
    # bytes straight to the file (or to stdout's buffer): no text layer re-encoding every line
    if args.output:
        target: IO[bytes] | None = open(args.output, "wb")  # noqa: SIM115
    else:
        target = getattr(out, "buffer", None)
        out.flush()

    def write(chunk: bytes) -> None:
        if target is not None:
            target.write(chunk)
        else:  # a text stream without a buffer (tests' StringIO)
            out.write(chunk.decode("utf-8"))

    written = 0
    try:
        for page in col._raw_pages(args.filter, batch_size=args.batch_size,
                                   properties=_csv(args.properties), with_vectors=args.with_vectors):
            write(b"".join([_import_line(o) for o in page]))
            written += len(page)
            progress.update(written)
        if target is not None:
            target.flush()
        progress.update(written)
    finally:
        progress.close()
        if args.output and target is not None:
            target.close()
    print(f"exported {written:,} objects from {args.collection!r}", file=err)
    return 0


# ---------------------------------------------------------------------------------------------- search
def search(client: Client, args: argparse.Namespace, out: IO[str]) -> int:
    options: dict[str, Any] = {"limit": args.limit, "filter": args.filter,
                               "properties": _csv(args.properties)}
    if args.kind == "bm25":
        body = q.bm25(args.query, **options)
    elif args.kind == "hybrid":
        body = q.hybrid(args.query, alpha=args.alpha, weights=args.weights, fusion=args.fusion,
                        vector=args.vector, **options)
    elif args.kind == "neural_sparse":
        body = q.neural_sparse(args.query, sparse_vector=args.sparse_vector, **options)
    elif args.kind == "near_image":
        body = q.near_image(args.query, vector=args.vector, **options)
    else:
        body = q.near_text(args.query, vector=args.vector, **options)
    answer = client.collection(args.collection).search.raw(body)
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False), file=out)
        return 0
    hits = answer["hits"]
    if not hits:
        print(f"no hits ({answer['took_ms']:.1f} ms)", file=out)
        return 0
    names: list[str] = []
    for h in hits:
        names += [k for k in h["properties"] if k not in names]
    names = names[:6]
    width = max(12, (shutil.get_terminal_size((120, 20)).columns - 40) // max(1, len(names)))
    rows = [[str(i), _cell(h["id"], 36), f"{h['score']:.4f}", *[_cell(h["properties"].get(n, ""), width)
                                                               for n in names]]
            for i, h in enumerate(hits, start=1)]
    table(rows, ["#", "id", "score", *names], out)
    print(f"{len(hits)} hits in {answer['took_ms']:.1f} ms", file=out)
    return 0


# ---------------------------------------------------------------------------------------------- collections
def collections(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if args.action == "list":
        items = client.collections.list()
        if args.json:
            print(json.dumps([c.raw for c in items], indent=2, ensure_ascii=False), file=out)
            return 0
        if not items:
            print("no collections", file=out)
            return 0
        rows = []
        for c in items:
            vectors = ", ".join(f"{n}: {v.model or v.inference_url or 'own'} ({v.dimensions})"
                                for n, v in c.vectorizers.items())
            bm25 = ", ".join((c.bm25 or {}).get("fields") or []) or "-"
            rows.append([c.name, f"{client.collection(c.name).count():,}", vectors, bm25])
        table(rows, ["name", "objects", "vectors", "bm25 fields"], out)
        return 0
    if not args.name:
        print(f"polyvec collections {args.action}: give the collection name", file=err)
        return 2
    if args.action == "get":
        print(json.dumps(client.collections.get(args.name).raw, indent=2, ensure_ascii=False), file=out)
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"polyvec collections delete: pass --yes to delete {args.name!r} and all its objects",
                  file=err)
            return 2
        answer = input(f"delete collection {args.name!r} and all its objects? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted", file=out)
            return 1
    client.collections.delete(args.name)
    print(f"deleted collection {args.name!r}", file=out)
    return 0


def main(argv: list[str] | None = None, *, prog: str = "polyvec-client") -> int:
    args = build_parser(prog).parse_args(argv)
    out, err = sys.stdout, sys.stderr
    if args.command == "eval":
        return run_eval(args, prog, out, err)
    try:
        with Client(args.url, api_key=args.api_key, timeout=args.timeout) as client:
            if args.command == "import":
                return load.run(client, args, out, err)
            if args.command == "export":
                return export(client, args, out, err)
            if args.command == "search":
                return search(client, args, out)
            return collections(client, args, out, err)
    except PolyvecError as exc:
        where = f" [{exc.field}]" if exc.field else ""
        print(f"{prog} {args.command}: {exc.message}{where}", file=err)
        return 1
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted", file=err)
        return 130
    except BrokenPipeError:  # `polyvec export ... | head`
        return 0


def run_eval(args: argparse.Namespace, prog: str, out: IO[str], err: IO[str]) -> int:
    try:
        from polyvec_client.eval import cli as eval_cli
    except ImportError as exc:
        print(f"{prog} eval: needs the eval extra ({exc.name or exc} is missing): "
              "pip install 'polyvec-client[eval]'", file=err)
        return 2
    try:
        return eval_cli.run(args, out, err)
    except KeyboardInterrupt:
        print(f"{prog} eval: interrupted", file=err)
        return 130


if __name__ == "__main__":
    sys.exit(main())
