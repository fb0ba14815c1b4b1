"""The parts of ``insert_many`` that do not depend on sync or async: objects in, chunks out, results back.

Objects are serialised one by one as they arrive (nothing holds the whole input) and packed into chunks
of at most the gateway's IMPORT_BATCH_SIZE objects and under its MAX_REQUEST_BYTES. A chunk's answer
(one result per object) is folded into the :class:`ImportReport`; failed objects keep their position in
your input.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from polyvec_client.models import Failure, ImportReport

OBJECT_KEYS = frozenset({"id", "properties", "vectors"})
#: Keys an import ignores in object-shaped records (a failed-objects file carries the error in ``_error``).
IGNORED_KEYS = frozenset({"_error", "uuid"})
#: The namespace of the UUIDv5 the gateway derives from an id that is not a UUID (gateway/service/vectors.py).
OBJECT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "polyvec:object")
_FIELD_PREFIX = re.compile(r"^objects\.\d+\.?")
BODY_OVERHEAD = len(b'{"objects":[]}')
#: Fraction of MAX_REQUEST_BYTES a chunk may fill (room for the gateway's own framing).
BYTES_HEADROOM = 0.95


def object_uuid(object_id: str) -> str:
    """The point UUID the gateway stores an id under: the id itself when it is a UUID, else UUIDv5."""
    try:
        return str(uuid.UUID(object_id))
    except ValueError:
        return str(uuid.uuid5(OBJECT_NAMESPACE, object_id))


def _json_default(value: Any) -> Any:
    """JSON for what json.dumps cannot write: bytes (base64, e.g. images), dates, numpy values, ..."""
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    raise TypeError(f"{type(value).__name__} values cannot be sent as JSON")


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default,
                      allow_nan=False)


def to_object(item: Any, id_field: str | None = None) -> dict[str, Any]:
    """An input item as an import object ``{id?, properties, vectors?}``.

    A mapping with a ``properties`` mapping and no keys but ``id``/``properties``/``vectors`` (and the
    ignored ``_error``/``uuid``) is already an object. Any other mapping is a flat record: its items are
    the properties and the id comes from ``id_field`` (default ``"id"``; a field named ``id`` is taken out
    of the properties, any other id field stays in them).
    """
    if not isinstance(item, Mapping):
        raise TypeError(f"must be a JSON object (a mapping), not {type(item).__name__}")
    keys = set(item) - IGNORED_KEYS
    if isinstance(item.get("properties"), Mapping) and keys <= OBJECT_KEYS:
        out: dict[str, Any] = {"properties": item["properties"]}
        if item.get("id") is not None:
            out["id"] = _id_string(item["id"])
        if item.get("vectors") is not None:
            out["vectors"] = item["vectors"]
        return out
    key = id_field or "id"
    properties = dict(item)
    value = properties.pop(key) if key == "id" else properties.get(key)
    out = {"properties": properties}
    if value is not None and value != "":
        out["id"] = _id_string(value)
    elif id_field:
        raise ValueError(f"has no value in the id field {id_field!r}")
    return out


def _id_string(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"id must be a string or a number, not {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


@dataclass(frozen=True)
class InvalidRecord:
    """An input item a reader already knows is bad (a line that is not JSON, a cell of the wrong type):
    it becomes a failure with this error instead of being sent. ``raw`` keeps what was read."""

    error: str
    field: str | None = None
    raw: Any = None


FailureHook = Callable[[Failure, Any], None]


@dataclass
class Chunk:
    """Objects to send in one request: their JSON, their input positions and ids."""

    parts: list[bytes] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)  # the input items (for a failure hook)
    size: int = BODY_OVERHEAD

    def __len__(self) -> int:
        return len(self.parts)

    def body(self) -> bytes:
        return b'{"objects":[' + b",".join(self.parts) + b"]}"

    @property
    def idempotent(self) -> bool:
        """Sending it twice stores the same: every object has an id (else each gets a new random UUID)."""
        return all(i is not None for i in self.ids)

    def halves(self) -> tuple[Chunk, Chunk]:
        mid = len(self) // 2
        a, b = Chunk(), Chunk()
        for part, index, oid, item in zip(self.parts, self.indices, self.ids, self.items, strict=True):
            (a if len(a) < mid else b).add(part, index, oid, item)
        return a, b

    def add(self, part: bytes, index: int, oid: str | None, item: Any) -> None:
        self.parts.append(part)
        self.indices.append(index)
        self.ids.append(oid)
        self.items.append(item)
        self.size += len(part) + 1


class Planner:
    """Packs objects into chunks by count and bytes; failures it finds itself go straight to the report."""

    def __init__(self, report: ImportReport, batch_size: int, max_request_bytes: int, *,
                 id_field: str | None = None, skip: Callable[[str], bool] | None = None,
                 on_failure: FailureHook | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.report = report
        self.batch_size = batch_size
        self.max_bytes = max(1024, int(max_request_bytes * BYTES_HEADROOM))
        self.id_field = id_field
        self.skip = skip
        self.on_failure = on_failure
        self.current = Chunk()

    def _fail(self, failure: Failure, item: Any) -> None:
        self.report.failed.append(failure)
        if self.on_failure is not None:
            self.on_failure(failure, item)

    def add(self, index: int, item: Any) -> list[Chunk]:
        """Take input item ``index``; returns the chunks that are now ready to send (often none)."""
        if isinstance(item, InvalidRecord):
            self._fail(Failure(index, None, item.field, item.error), item)
            return []
        try:
            obj = to_object(item, self.id_field)
            part = dumps(obj).encode()
        except (TypeError, ValueError) as exc:
            oid = item.get("id") if isinstance(item, Mapping) else None
            self._fail(Failure(index, None if oid is None else str(oid), None, str(exc)), item)
            return []
        oid = obj.get("id")
        if self.skip is not None and oid is not None and self.skip(oid):
            self.report.skipped += 1
            return []
        if len(part) + BODY_OVERHEAD > self.max_bytes:
            self._fail(Failure(index, oid, None, f"the object is {len(part)} bytes as JSON, more than the "
                                                 "gateway takes in one request (MAX_REQUEST_BYTES)"), item)
            return []
        ready: list[Chunk] = []
        if self.current.parts and self.current.size + len(part) + 1 > self.max_bytes:
            ready.append(self.current)
            self.current = Chunk()
        self.current.add(part, index, oid, item)
        if len(self.current) >= self.batch_size:
            ready.append(self.current)
            self.current = Chunk()
        return ready

    def flush(self) -> Chunk | None:
        ready, self.current = self.current, Chunk()
        return ready if ready.parts else None


def absorb(report: ImportReport, chunk: Chunk, answer: dict[str, Any],
           on_failure: FailureHook | None = None) -> tuple[int, int]:
    """Fold a chunk's import answer into the report; returns (ok, failed) of this chunk."""
    ok = failed = 0
    for result in answer.get("results", []):
        pos = int(result["index"])
        if result.get("status") == "ok":
            ok += 1
            continue
        failed += 1
        where = result.get("field")
        if where:
            where = _FIELD_PREFIX.sub("", where) or None
        failure = Failure(chunk.indices[pos], result.get("id") or chunk.ids[pos], where,
                          str(result.get("error", "failed")))
        report.failed.append(failure)
        if on_failure is not None:
            on_failure(failure, chunk.items[pos])
    report.ok += ok
    return ok, failed


def fail_chunk(report: ImportReport, chunk: Chunk, message: str, field: str | None = None,
               on_failure: FailureHook | None = None) -> None:
    """Every object of a chunk failed for one reason (the gateway refused the request as a whole)."""
    for index, oid, item in zip(chunk.indices, chunk.ids, chunk.items, strict=True):
        failure = Failure(index, oid, field, message)
        report.failed.append(failure)
        if on_failure is not None:
            on_failure(failure, item)
