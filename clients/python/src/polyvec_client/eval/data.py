"""BEIR files: ``queries.jsonl`` (``_id`` + ``text``, or ``image``), qrels TSV and ``corpus.jsonl``.

Every error names the file and line (``qrels: line 3: score must be an integer, got 'x'``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")


class EvalDataError(ValueError):
    """A bad queries, qrels or corpus file; ``field`` names the file and line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


@dataclass(frozen=True)
class Query:
    """One query: ``text`` for the text kinds, or ``image`` (an http(s) URL, a data: URL or base64) for
    near_image."""

    id: str
    text: str | None = None
    image: str | None = None

    @property
    def modality(self) -> str:
        return "image" if self.image is not None else "text"


def is_url(value: str) -> bool:
    return value.startswith(("http://", "https://", "data:"))


def looks_like_path(value: str) -> bool:
    return len(value) < 4096 and value.lower().endswith(IMAGE_SUFFIXES)


def image_file_base64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def parse_queries(text: str, *, source: str = "queries", base_dir: Path | None = None) -> list[Query]:
    """Queries from JSON lines. ``image`` may be a URL, base64, or (with ``base_dir``) a path relative to
    it, read here; without ``base_dir`` (the gateway) a path is an error."""
    queries: list[Query] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}: line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalDataError(where, f"not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise EvalDataError(where, "must be a JSON object with _id and text (or image)")
        qid = record.get("_id", record.get("id"))
        if not isinstance(qid, str | int) or isinstance(qid, bool) or str(qid) == "":
            raise EvalDataError(f"{where}: _id", "a query needs an _id (string)")
        qid = str(qid)
        if qid in seen:
            raise EvalDataError(f"{where}: _id", f"query {qid!r} appears twice")
        seen.add(qid)
        image = record.get("image")
        if image is not None:
            if not isinstance(image, str) or not image.strip():
                raise EvalDataError(f"{where}: image", "must be a URL, base64 or a file path")
            image = _image(image.strip(), base_dir, f"{where}: image")
            queries.append(Query(qid, image=image))
            continue
        query_text = record.get("text")
        if not isinstance(query_text, str) or not query_text.strip():
            raise EvalDataError(f"{where}: text", "a query needs a non-empty text (or an image)")
        queries.append(Query(qid, text=query_text))
    if not queries:
        raise EvalDataError(source, "no queries")
    return queries


def _image(value: str, base_dir: Path | None, where: str) -> str:
    if is_url(value):
        return value
    if looks_like_path(value):
        if base_dir is None:
            raise EvalDataError(where, f"{value!r} is a file path, which the gateway cannot read; give an "
                                       "http(s) URL or base64 (or run `polyvec eval`, which reads files)")
        path = (base_dir / value).resolve()
        if not path.is_file():
            raise EvalDataError(where, f"no such image file: {path}")
        return image_file_base64(path)
    return value  # base64: checked by the gateway with the search


def read_queries(path: str | Path) -> list[Query]:
    path = Path(path)
    return parse_queries(_read(path, "queries"), source=str(path), base_dir=path.parent)


def parse_qrels(text: str, *, source: str = "qrels") -> dict[str, dict[str, int]]:
    """BEIR qrels (``query-id corpus-id score``, tab-separated, an optional header) or TREC qrels
    (``query-id 0 corpus-id score``) -> {query id: {corpus id: relevance}}."""
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}: line {number}"
        cols = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
        cols = [c.strip() for c in cols]
        if len(cols) == 4:
            cols = [cols[0], cols[2], cols[3]]
        if len(cols) != 3:
            raise EvalDataError(where, "expected query-id, corpus-id, score separated by tabs; got "
                                       f"{len(cols)} column(s)")
        qid, doc, score = cols
        try:
            rel = int(float(score))
        except ValueError:
            if not qrels and number == _first_line(text):
                continue  # the header (query-id corpus-id score)
            raise EvalDataError(f"{where}: score", f"must be an integer, got {score!r}") from None
        if not qid or not doc:
            raise EvalDataError(where, "query-id and corpus-id must not be empty")
        qrels.setdefault(qid, {})[doc] = rel
    if not qrels:
        raise EvalDataError(source, "no judgements")
    return qrels


def _first_line(text: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            return number
    return 0


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    path = Path(path)
    return parse_qrels(_read(path, "qrels"), source=str(path))


def read_corpus(path: str | Path) -> Iterator[dict[str, Any]]:
    """BEIR corpus lines ``{"_id", "title", "text", ...}`` as import objects ``{id, properties}``. A string
    property naming an image file (``.png``, ``.jpg``, ... relative to the corpus file) is read and sent as
    base64, so a corpus can point at its pictures."""
    path = Path(path)
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalDataError(where, f"not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or "_id" not in record:
                raise EvalDataError(where, "a corpus line is a JSON object with an _id")
            properties = {k: v for k, v in record.items() if k != "_id"}
            for key, value in properties.items():
                if isinstance(value, str) and not is_url(value) and looks_like_path(value):
                    file = (path.parent / value).resolve()
                    if file.is_file():
                        properties[key] = image_file_base64(file)
            yield {"id": str(record["_id"]), "properties": properties}


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EvalDataError(str(path), f"cannot read the {what} file ({exc.strerror or exc})") from None
