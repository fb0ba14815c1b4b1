"""``polyvec import COLLECTION SOURCE``: stream a file or folder into a collection, with progress.

Failed objects go to ``SOURCE.failed.jsonl`` as they are known: each line is the object as it was read
plus ``"_error": {"index", "field", "error"}``, so the file can be fixed and imported again (the import
ignores ``_error``). Ctrl-C lets the requests in flight finish and says what the gateway acknowledged.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import IO, Any

from polyvec_client._importer import InvalidRecord, _json_default
from polyvec_client.cli.sources import Source, SourceError, open_source, parse_types
from polyvec_client.client import Client, ImportInterrupted
from polyvec_client.errors import NotFoundError, PolyvecError
from polyvec_client.models import Failure, ImportReport
from polyvec_client.progress import Progress


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("collection")
    p.add_argument("source", help="a .jsonl/.ndjson file, '-' (JSON lines on stdin), a .csv/.tsv file, "
                                  "a .parquet file (needs pyarrow), or a folder of images")
    p.add_argument("--id-field", help="the property holding each object's id (default: 'id' when present)")
    p.add_argument("--batch-size", type=int, help="objects per request (default and most: the gateway's "
                                                  "IMPORT_BATCH_SIZE)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument("--type", action="append", metavar="COLUMN=TYPE", dest="types",
                   help="a CSV column's type (str, int, float, bool, json); others are inferred")
    p.add_argument("--resume", action="store_true", help="skip objects whose id is already in the collection")
    p.add_argument("--failed", metavar="FILE", help="where failed objects go (default: SOURCE.failed.jsonl)")
    p.add_argument("--image-field", default="image", help="property holding each image of a folder source "
                                                        "(default: image)")
    create = p.add_argument_group("create the collection when it does not exist")
    create.add_argument("--create", action="store_true")
    create.add_argument("--model", default="default",
                        help="model name from the gateway's MODELS (default: 'default', polyvec up's first)")
    create.add_argument("--text-fields", help="comma-separated properties embedded as text")
    create.add_argument("--image-fields", help="comma-separated properties holding images")
    p.add_argument("--progress-interval", type=float, default=5.0, help=argparse.SUPPRESS)


def _fields(text: str | None) -> list[str]:
    return [f.strip() for f in (text or "").split(",") if f.strip()]


def ensure_collection(client: Client, args: argparse.Namespace, source: Source, out: IO[str]) -> None:
    if client.collections.exists(args.collection):
        if args.create:
            print(f"collection {args.collection!r} exists; importing into it", file=out)
        return
    if not args.create:
        raise SourceError(f"collection {args.collection!r} does not exist: create it first, or pass --create "
                          "--model M --text-fields ... / --image-fields ...")
    text_fields, image_fields = _fields(args.text_fields), _fields(args.image_fields)
    if source.kind == "images" and not (text_fields or image_fields):
        text_fields, image_fields = ["caption"], [args.image_field]
    if not (text_fields or image_fields):
        raise SourceError("--create needs --text-fields and/or --image-fields (what the model embeds)")
    vectorizer: dict[str, Any] = {"model": args.model}
    if text_fields:
        vectorizer["text_fields"] = text_fields
    if image_fields:
        vectorizer["image_fields"] = image_fields
    client.collections.create(args.collection, vectorizers={"main": vectorizer})
    print(f"created collection {args.collection!r}: model {args.model!r}, text {text_fields}, "
          f"images {image_fields}", file=out)


class FailedWriter:
    """Writes failed objects, with their errors, as JSON lines (opened at the first failure)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    def __call__(self, failure: Failure, item: Any) -> None:
        error = {"index": failure.index, "field": failure.field, "error": failure.error}
        if isinstance(item, InvalidRecord):
            line: dict[str, Any] = {"_raw": item.raw, "_error": error}
        elif isinstance(item, dict):
            line = {**{k: v for k, v in item.items() if k != "_error"}, "_error": error}
        else:
            line = {"_raw": repr(item), "_error": error}
        text = json.dumps(line, ensure_ascii=False, default=_json_default)
        with self._lock:
            if self._file is None:
                self._file = self.path.open("w", encoding="utf-8")
            self._file.write(text + "\n")
            self.count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def summary(report: ImportReport, collection: str, failed: FailedWriter) -> str:
    rate = report.objects_per_second
    lines = [f"imported {report.ok:,} objects into {collection!r} in {report.elapsed:.1f} s ({rate:,.0f} "
             f"objects/s); {len(report.failed):,} failed"]
    if report.skipped:
        lines[0] += f"; {report.skipped:,} skipped (already present)"
    if failed.count:
        lines.append(f"failed objects and their errors: {failed.path} (fix them and import that file again)")
        for f in report.failed[:5]:
            where = f" {f.field}:" if f.field else ""
            lines.append(f"  #{f.index} {f.id or '(no id)'}:{where} {f.error}")
        if len(report.failed) > 5:
            lines.append(f"  ... and {len(report.failed) - 5:,} more")
    return "\n".join(lines)


def run(client: Client, args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    try:
        types = parse_types(args.types)
        source = open_source(args.source, types=types, image_field=args.image_field)
        ensure_collection(client, args, source, out)
    except SourceError as exc:
        print(f"polyvec import: {exc}", file=err)
        return 2
    failed = FailedWriter(Path(args.failed) if args.failed else source.failed_path)
    progress = Progress(f"import {args.collection}", source.total, stream=err,
                        interval_s=args.progress_interval)
    col = client.collection(args.collection)
    started = time.monotonic()
    try:
        report = col.insert_many(source.records, batch_size=args.batch_size, concurrency=args.concurrency,
                                 progress=progress, id_field=args.id_field, skip_existing=args.resume,
                                 total=source.total, on_failure=failed)
    except ImportInterrupted as exc:
        report = exc.report
        progress.close()
        failed.close()
        print(summary(report, args.collection, failed), file=out)
        where = "" if report.unsent_from is None else f" from input record #{report.unsent_from} on"
        print(f"interrupted: every request that was sent finished; the input{where} was not sent. "
              "Run the same command with --resume to go on.", file=out, flush=True)
        return 130
    except NotFoundError as exc:
        failed.close()
        print(f"polyvec import: {exc.message}", file=err)
        return 2
    except PolyvecError as exc:
        failed.close()
        partial: ImportReport | None = getattr(exc, "report", None)
        print(f"polyvec import: stopped: {exc.message}", file=err)
        if partial is not None:
            partial.elapsed = time.monotonic() - started
            print(summary(partial, args.collection, failed), file=out)
        return 1
    failed.close()
    print(summary(report, args.collection, failed), file=out)
    return 1 if report.failed else 0
