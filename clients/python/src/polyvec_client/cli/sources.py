"""What ``polyvec import`` reads: JSON lines, CSV/TSV, Parquet, or a folder of images, one record at a time.

Every reader yields records lazily (a 10 GB file is never held in memory); a record it knows is bad (a line
that is not JSON, a cell that does not fit its column's type) comes out as an
:class:`~polyvec_client._importer.InvalidRecord` and becomes a failed object instead of stopping the import.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from polyvec_client._importer import InvalidRecord

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
TYPES = ("str", "int", "float", "bool", "json")
_TRUE = frozenset({"true", "yes", "1", "t", "y"})
_FALSE = frozenset({"false", "no", "0", "f", "n"})
csv.field_size_limit(sys.maxsize)


class SourceError(Exception):
    """The source cannot be read at all (missing file, unknown format, missing optional package)."""


@dataclass
class Source:
    """Records to import, how many there should be (None: unknown), and where failures are written."""

    name: str
    records: Iterator[Any]
    total: int | None
    failed_path: Path
    kind: str


# ---------------------------------------------------------------------------------------------- JSON lines
def count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
    return count


def jsonl_records(stream: IO[str]) -> Iterator[Any]:
    for number, line in enumerate(stream, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            yield json.loads(text)
        except json.JSONDecodeError as exc:
            yield InvalidRecord(f"line {number} is not valid JSON: {exc}", None, text)


def _jsonl_file(path: Path) -> Iterator[Any]:
    with path.open("r", encoding="utf-8") as f:
        yield from jsonl_records(f)


# ---------------------------------------------------------------------------------------------- CSV / TSV
def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def convert(text: str, kind: str) -> Any:
    """One cell as ``kind`` (str, int, float, bool, json); ValueError when it does not fit."""
    if kind == "str":
        return text
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        return _parse_bool(text)
    if kind == "json":
        return json.loads(text)
    raise ValueError(f"unknown type {kind!r}")


def csv_column_types(path: Path, delimiter: str, declared: dict[str, str]) -> dict[str, str]:
    """Each column's type: declared with --type, else inferred from every value of the file."""
    with path.open("r", encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return {}
        unknown = set(declared) - set(header)
        if unknown:
            raise SourceError(f"--type names column(s) {', '.join(sorted(unknown))} that {path.name} does "
                              f"not have (columns: {', '.join(header)})")
        todo = [i for i, name in enumerate(header) if name not in declared]
        candidates: dict[int, list[str]] = {i: ["int", "float", "bool"] for i in todo}
        seen: set[int] = set()
        for row in reader:
            for i in list(candidates):
                value = row[i] if i < len(row) else ""
                if value == "":
                    continue
                seen.add(i)
                kept = []
                for kind in candidates[i]:
                    try:
                        convert(value, kind)
                        kept.append(kind)
                    except ValueError:
                        pass
                candidates[i] = kept
        types = dict(declared)
        for i in todo:
            kinds = candidates[i]
            types[header[i]] = "str" if not kinds or i not in seen else kinds[0]
        return types


def csv_records(path: Path, delimiter: str, types: dict[str, str]) -> Iterator[Any]:
    """Rows as dicts of typed values; empty cells are left out."""
    with path.open("r", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        for row in reader:
            record: dict[str, Any] = {}
            problem = None
            for name, text in row.items():
                if name is None:  # more cells than header columns
                    problem = problem or InvalidRecord(
                        f"row {reader.line_num} has more cells than the header", None, row)
                    continue
                if text is None or text == "":
                    continue
                kind = types.get(name, "str")
                try:
                    record[name] = convert(text, kind)
                except ValueError as exc:
                    problem = problem or InvalidRecord(
                        f"row {reader.line_num}, column {name!r}: {text!r} is not a {kind} ({exc})",
                        f"properties.{name}", row)
            yield problem if problem is not None else record


# ---------------------------------------------------------------------------------------------- Parquet
def parquet_source(path: Path) -> tuple[Iterator[Any], int]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceError(f"reading {path.name} needs pyarrow, which is not installed: "
                          "pip install 'polyvec-client[parquet]' (or pip install pyarrow)") from None
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
        raise SourceError(f"{path} is not a readable Parquet file: {exc}") from None

    def records() -> Iterator[Any]:
        for batch in parquet.iter_batches(batch_size=1000):
            for row in batch.to_pylist():
                yield {k: v for k, v in row.items() if v is not None}

    return records(), int(parquet.metadata.num_rows)


# ---------------------------------------------------------------------------------------------- image folders
def image_files(folder: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [Path(root) / f for f in sorted(files)
                if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith(".")]
    return out


def read_captions(folder: Path) -> dict[str, str]:
    """``captions.csv`` in the folder: a ``caption`` column and a ``filename`` (or ``path``) column."""
    path = folder / "captions.csv"
    if not path.exists():
        return {}
    with path.open("r", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        key = "path" if "path" in columns else "filename" if "filename" in columns else None
        if key is None or "caption" not in columns:
            raise SourceError(f"{path} needs a 'caption' column and a 'filename' (or 'path') column; "
                              f"it has {', '.join(columns)}")
        return {row[key]: row["caption"] for row in reader if row.get(key)}


def image_records(folder: Path, files: list[Path], image_field: str) -> Iterator[Any]:
    """One object per image: ``{id: relative path, properties: {image_field: base64, path, filename,
    caption?}}``; the caption comes from a sidecar ``NAME.txt`` or from ``captions.csv``."""
    captions = read_captions(folder)
    for file in files:
        rel = file.relative_to(folder).as_posix()
        try:
            data = file.read_bytes()
        except OSError as exc:
            yield InvalidRecord(f"{rel}: cannot be read: {exc}", f"properties.{image_field}", {"path": rel})
            continue
        properties: dict[str, Any] = {image_field: base64.b64encode(data).decode(), "path": rel,
                                      "filename": file.name}
        sidecar = file.with_suffix(".txt")
        caption = None
        if sidecar.exists():
            caption = sidecar.read_text(encoding="utf-8").strip()
        elif rel in captions or file.name in captions:
            caption = captions.get(rel, captions.get(file.name))
        if caption:
            properties["caption"] = caption
        yield {"id": rel, "properties": properties}


# ---------------------------------------------------------------------------------------------- choosing
def parse_types(specs: list[str] | None) -> dict[str, str]:
    """``["price=float", "tags=json"]`` -> ``{"price": "float", "tags": "json"}``."""
    out: dict[str, str] = {}
    for spec in specs or []:
        for item in spec.split(","):
            name, sep, kind = item.partition("=")
            name, kind = name.strip(), kind.strip().lower()
            if not sep or not name or kind not in TYPES:
                raise SourceError(f"--type {item!r}: use COLUMN=TYPE with TYPE one of {', '.join(TYPES)}")
            out[name] = kind
    return out


def open_source(spec: str, *, types: dict[str, str] | None = None, image_field: str = "image",
                stdin: IO[str] | None = None, count: bool = True) -> Source:
    """The records of SOURCE: ``-`` (JSON lines on stdin), a .jsonl/.ndjson, .csv/.tsv or .parquet file,
    or a folder of images."""
    types = types or {}
    if spec == "-":
        stream = stdin if stdin is not None else io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8")
        return Source("stdin", jsonl_records(stream), None, Path("stdin.failed.jsonl"), "jsonl")
    path = Path(spec).expanduser()
    if not path.exists():
        raise SourceError(f"{spec}: no such file or folder")
    failed = path.with_name(path.name + ".failed.jsonl")
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise SourceError(f"{spec}: the folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return Source(spec, image_records(path, files, image_field), len(files),
                      path.parent / f"{path.name}.failed.jsonl", "images")
    suffix = path.suffix.lower()
    if types and suffix not in (".csv", ".tsv"):
        raise SourceError("--type applies to .csv and .tsv sources only")
    if suffix in JSONL_SUFFIXES or path.name.endswith(".failed.jsonl"):
        return Source(spec, _jsonl_file(path), count_lines(path) if count else None, failed, "jsonl")
    if suffix in (".csv", ".tsv"):
        delimiter = "\t" if suffix == ".tsv" else ","
        column_types = csv_column_types(path, delimiter, types)
        total = max(0, count_lines(path) - 1) if count else None
        return Source(spec, csv_records(path, delimiter, column_types), total, failed, "csv")
    if suffix == ".parquet":
        records, total = parquet_source(path)
        return Source(spec, records, total, failed, "parquet")
    raise SourceError(f"{spec}: unknown format {suffix or '(no extension)'}; use .jsonl/.ndjson, .csv/.tsv, "
                      ".parquet, a folder of images, or - for JSON lines on stdin")
