"""Turning objects into points: field values -> inference jobs -> weighted-mean vectors + BM25 vector +
sparse vectors (each text field encoded by the sparse model, merged by the largest weight per token).

Every object keeps its own status; an object with a bad field or a value the inference service rejects
is reported and left out, the others go on. A batch is sent per inference service in calls sized to the
service's limits (see gateway.inference_client); a call the service rejects is split in halves until the
offending items are found, so one bad image costs about log2(batch) extra calls and fails only its own
object (each rejected item is tried once more alone, since a batching server may have failed it
alongside a bad one). An item too large for any request to the service fails at once, naming its field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ValidationError

from gateway.definitions import BM25_VECTOR, RESERVED_PREFIX, bad_request_from
from gateway.image_urls import is_image_url
from gateway.inference_client import InferenceClient, InferenceRejected
from gateway.service.collections import StoredCollection
from gateway.service.requests import ObjectIn
from gateway.service.vectors import check_vector, get_path, is_uuid, object_uuid, weighted_mean
from gateway.storage.base import PointRecord, SparseVec
from gateway.tasks import gather_or_cancel
from services.input_rules import check_text, decode_base64, find_invalid_text

#: Payload key holding the user's id when it is not a UUID (the point id is derived from it).
ID_KEY = "_polyvec_id"


class ObjectError(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass
class Pending:
    """One object on its way to becoming a point."""

    index: int
    external_id: str | None = None
    point_id: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    dense: dict[str, list[float]] = field(default_factory=dict)
    # vector -> field -> vector of that field's value
    field_vectors: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    sparse: dict[str, SparseVec] = field(default_factory=dict)  # sparse vectors kept from before (PUT)
    # sparse vector -> field -> sparse vector of that field's text
    field_sparse: dict[str, dict[str, SparseVec]] = field(default_factory=dict)
    vectorized: list[str] = field(default_factory=list)
    error: str | None = None
    error_field: str | None = None
    replaced_by: int | None = None  # index of a later object of the same request with the same id

    def fail(self, field_name: str | None, message: str) -> None:
        if self.error is None:
            self.error, self.error_field = message, field_name

    def result(self) -> dict[str, Any]:
        status = "error" if self.error else "replaced" if self.replaced_by is not None else "ok"
        out: dict[str, Any] = {"index": self.index, "id": self.external_id or self.point_id, "status": status}
        if self.point_id:
            out["uuid"] = self.point_id
        if status == "replaced":
            out["message"] = (f"replaced by objects.{self.replaced_by}, a later object of this request "
                              "with the same id; only that one is written")
        if self.error:
            out["error"] = self.error
            if self.error_field:
                out["field"] = self.error_field
        return out


@dataclass(frozen=True)
class ImageUrl:
    """An image field given as an http(s) URL, fetched before the object is vectorized."""

    url: str


@dataclass
class Job:
    pending: Pending
    vector: str
    field: str
    data: str | bytes | ImageUrl


@dataclass
class SparseJob:
    """One text field of one object for a sparse vectorizer's model."""

    pending: Pending
    vector: str
    field: str
    text: str


def decode_base64_image(value: str) -> bytes:
    """A base64 image (or data: URL) by the rule both services share; ValueError saying what is wrong."""
    return decode_base64(value)


def text_value(value: Any) -> str | None:
    """The text of a field value (strings, numbers, lists of them); None when empty/missing."""
    if value is None:
        return None
    if isinstance(value, str):
        check_text(value)
        return value if value.strip() else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str | int | float) and not isinstance(v, bool)
                                       for v in value):
        joined = " ".join(str(v) for v in value)
        check_text(joined)
        return joined if joined.strip() else None
    raise ValueError("must be a string (or a list of strings) to be embedded as text")


def public_payload(payload: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (payload or {}).items() if not k.startswith(RESERVED_PREFIX)}


def external_id(point_id: str, payload: dict[str, Any] | None) -> str:
    return str((payload or {}).get(ID_KEY) or point_id)


def id_and_properties(point_id: str, payload: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """``(external_id(...), public_payload(...))`` in one pass, for pages of many objects: one C-level
    copy of the payload with the id popped; the slower filter only when another reserved key is there
    (imports refuse such names)."""
    props = dict(payload or {})
    ext = props.pop(ID_KEY, None)
    for key in props:
        if key.startswith(RESERVED_PREFIX):
            props = public_payload(props)
            break
    return str(ext or point_id), props


def start(index: int, raw: Any, stored: StoredCollection, prefix: str) -> Pending:
    """Validate one raw object and take its user vectors; errors are recorded on the Pending.

    ``prefix`` starts every field name of the object ("objects.3." in an import, "" for a PUT body).
    """
    pending = Pending(index=index)
    try:
        obj = raw if isinstance(raw, ObjectIn) else ObjectIn.model_validate(raw)
    except ValidationError as exc:
        err = bad_request_from(exc, prefix.rstrip("."))
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            pending.external_id = raw["id"]
        pending.fail(err.field, err.detail)
        return pending
    if obj.id is not None:
        pending.external_id = obj.id
        pending.point_id = object_uuid(obj.id)
    else:
        import uuid

        pending.point_id = str(uuid.uuid4())
    invalid = find_invalid_text(obj.properties, f"{prefix}properties")  # the stores cannot hold it
    if invalid is not None:
        pending.fail(*invalid)
        return pending
    for key in obj.properties:
        if key.startswith(RESERVED_PREFIX):
            pending.fail(f"{prefix}properties.{key}",
                         f"property names starting with {RESERVED_PREFIX!r} are reserved")
            return pending
    for name, ftype in stored.field_types.items():  # declared fields must hold their type
        problem = ftype.check(get_path(obj.properties, name))
        if problem:
            sub, message = problem
            pending.fail(f"{prefix}properties.{name}{sub}", message)
            return pending
    pending.properties = obj.properties
    for name, values in (obj.vectors or {}).items():
        if name not in stored.definition.vectorizers:
            pending.fail(f"{prefix}vectors.{name}",
                         f"unknown vector; this collection has {sorted(stored.definition.vectorizers)}")
            return pending
        problem = check_vector(values, stored.vectors[name].dimensions, f"{prefix}vectors.{name}")
        if problem:
            pending.fail(*problem)
            return pending
        pending.dense[name] = [float(v) for v in values]
    return pending


def plan_jobs(pending: Pending, stored: StoredCollection, prefix: str,
              reuse: dict[str, list[float]] | None = None) -> list[Job]:
    """Inference jobs for the vectors this object still needs (not user-given, not reusable)."""
    jobs: list[Job] = []
    for name, vec in stored.definition.vectorizers.items():
        if name in pending.dense:
            continue
        if reuse and name in reuse:
            pending.dense[name] = reuse[name]
            continue
        if not vec.uses_service:
            pending.fail(f"{prefix}vectors.{name}", "this vector has no vectorizer: send it in vectors")
            return []
        mine: list[Job] = []
        for fname in vec.text_fields:
            try:
                text = text_value(get_path(pending.properties, fname))
            except ValueError as exc:
                pending.fail(f"{prefix}properties.{fname}", str(exc))
                return []
            if text is not None:
                mine.append(Job(pending, name, fname, text))
        for fname in vec.image_fields:
            value = get_path(pending.properties, fname)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                pending.fail(f"{prefix}properties.{fname}", "must be a base64-encoded image or an image URL")
                return []
            if is_image_url(value):
                mine.append(Job(pending, name, fname, ImageUrl(value.strip())))
                continue
            try:
                mine.append(Job(pending, name, fname, decode_base64_image(value)))
            except ValueError as exc:
                pending.fail(f"{prefix}properties.{fname}", str(exc))
                return []
        if not mine:
            fields = vec.text_fields + vec.image_fields
            pending.fail(f"{prefix}properties",
                         f"none of the fields {fields} of vector {name!r} is set (or send vectors.{name})")
            return []
        pending.vectorized.append(name)
        jobs += mine
    return jobs


def plan_sparse_jobs(pending: Pending, stored: StoredCollection, prefix: str,
                     reuse: dict[str, SparseVec] | None = None) -> list[SparseJob]:
    """The text fields this object's sparse vectors need encoded (an object without any gets none)."""
    jobs: list[SparseJob] = []
    for name, cfg in stored.definition.sparse_vectorizers.items():
        if reuse and name in reuse:
            pending.sparse[name] = reuse[name]
            continue
        mine: list[SparseJob] = []
        for fname in cfg.text_fields:
            try:
                text = text_value(get_path(pending.properties, fname))
            except ValueError as exc:
                pending.fail(f"{prefix}properties.{fname}", str(exc))
                return []
            if text is not None:
                mine.append(SparseJob(pending, name, fname, text))
        if mine:
            pending.vectorized.append(name)
            jobs += mine
    return jobs


def merge_sparse(vectors: list[SparseVec]) -> SparseVec:
    """Per token, the largest weight any of ``vectors`` gives it (ids ascending, zeros dropped)."""
    best: dict[int, float] = {}
    for vec in vectors:
        for idx, value in zip(vec.indices, vec.values, strict=True):
            if value > best.get(idx, 0.0):
                best[idx] = value
    ids = sorted(best)
    return SparseVec(ids, [best[i] for i in ids])


async def isolate_rejected(call: Callable[[list[Any]], Any], items: list[Any], client: InferenceClient,
                           budget_s: float | None = None) -> tuple[list, list]:
    """``call`` (a batch of items -> one result per item) over ``items`` in calls sized to the service's
    limits (``client.plan``); a batch the service rejects is split in halves until the offending items are
    found, which get an error. An item that can never fit in a request to the service (larger than its
    MAX_REQUEST_BYTES) fails at once, without a call.

    InferenceUnavailable / InferenceBusy propagate (the whole request fails, nothing is written).
    """
    results: list[Any] = [None] * len(items)
    errors: list[str | None] = [None] * len(items)
    await client.limits(budget_s)
    sendable: list[int] = []
    for k, item in enumerate(items):
        problem = client.oversize(item)
        if problem:
            errors[k] = problem
        else:
            sendable.append(k)

    async def run(keys: list[int]) -> None:
        try:
            out = await call([items[k] for k in keys])
        except InferenceRejected as exc:
            if len(keys) == 1:
                errors[keys[0]] = f"inference service {client.address} rejected it: {exc.message}"
                return
            mid = len(keys) // 2
            await gather_or_cancel(run(keys[:mid]), run(keys[mid:]))
            return
        for k, result in zip(keys, out, strict=True):
            results[k] = result

    ranges = client.plan([items[k] for k in sendable])
    await gather_or_cancel(*(run(sendable[lo:hi]) for lo, hi in ranges))
    # A dynamically batching server may have run a good item in one forward pass with a bad one from a
    # concurrent call: give every rejected item one more try alone, one at a time.
    for k in [k for k in sendable if errors[k] is not None]:
        try:
            out = await call([items[k]])
        except InferenceRejected:
            continue
        results[k], errors[k] = out[0], None
    return results, errors


async def embed_isolating(client: InferenceClient, kind: str, items: list[Any], *,
                          budget_s: float | None = None) -> tuple[list, list]:
    """Vectors for ``items`` (texts or image bytes); items the service rejects get an error instead."""

    async def call(batch: list[Any]) -> np.ndarray:
        if kind == "text":
            return (await client.vectorize(texts=batch, budget_s=budget_s))[0]
        return (await client.vectorize(images=batch, budget_s=budget_s))[1]

    return await isolate_rejected(call, items, client, budget_s)


async def run_sparse_jobs(jobs: list[SparseJob], stored: StoredCollection,
                          client_for: Callable[[str], InferenceClient],
                          prefix_of: Callable[[Pending], str], *, budget_s: float | None = None) -> None:
    """Encode every sparse job in batched VectorizeSparse calls per vectorizer; a text the model rejects
    (or an answer with token ids outside the model's vocabulary) fails only its own object."""
    groups: dict[str, list[SparseJob]] = {}
    for job in jobs:
        groups.setdefault(job.vector, []).append(job)

    async def run_group(vector: str, group: list[SparseJob]) -> None:
        client = client_for(vector)

        async def call(batch: list[Any]) -> list[SparseVec]:
            return await client.vectorize_sparse(batch, budget_s=budget_s)

        vectors, errors = await isolate_rejected(call, [j.text for j in group], client, budget_s)
        vocab = stored.sparse[vector].vocab_size if vector in stored.sparse else 0
        for job, vec, err in zip(group, vectors, errors, strict=True):
            where = f"{prefix_of(job.pending)}properties.{job.field}"
            if err is not None:
                job.pending.fail(where, err)
            elif vec is None or (vocab and any(i >= vocab for i in vec.indices)):
                job.pending.fail(where, f"inference service {client.address} returned token ids outside its "
                                        f"vocabulary of {vocab}")
            else:
                job.pending.field_sparse.setdefault(job.vector, {})[job.field] = vec

    await gather_or_cancel(*(run_group(v, g) for v, g in groups.items()))


async def run_jobs(jobs: list[Job], stored: StoredCollection, client_for: Callable[[str], InferenceClient],
                   prefix_of: Callable[[Pending], str], *, budget_s: float | None = None) -> None:
    """Embed every job, grouped per inference service and kind, and store field vectors on the Pendings."""
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        kind = "text" if isinstance(job.data, str) else "image"
        groups.setdefault((job.vector, kind), []).append(job)

    async def run_group(vector: str, kind: str, group: list[Job]) -> None:
        client = client_for(vector)
        vectors, errors = await embed_isolating(client, kind, [j.data for j in group], budget_s=budget_s)
        dims = stored.vectors[vector].dimensions
        for job, vec, err in zip(group, vectors, errors, strict=True):
            where = f"{prefix_of(job.pending)}properties.{job.field}"
            if err is not None:
                job.pending.fail(where, err)
            elif vec is None or vec.shape[0] != dims:
                got = None if vec is None else vec.shape[0]
                job.pending.fail(where, f"inference service {client.address} returned {got} dimensions, "
                                        f"expected {dims}")
            else:
                job.pending.field_vectors.setdefault(job.vector, {})[job.field] = vec

    await gather_or_cancel(*(run_group(v, k, g) for (v, k), g in groups.items()))


def mark_replaced(pendings: list[Pending]) -> None:
    """Of the objects that share an id, only the last one that did not fail is written: the others that
    did not fail are marked replaced by it (as if the objects were written one after the other)."""
    last: dict[str, int] = {}
    for p in pendings:
        if p.error is None and p.point_id:
            last[p.point_id] = p.index
    for p in pendings:
        if p.error is None and p.point_id and last[p.point_id] != p.index:
            p.replaced_by = last[p.point_id]


def finish(pending: Pending, stored: StoredCollection) -> PointRecord | None:
    """Combine field vectors into object vectors, add BM25 and the sparse vectors; None when the object
    failed or was replaced."""
    if pending.error or pending.replaced_by is not None:
        return None
    for name, per_field in pending.field_vectors.items():
        vec = stored.definition.vectorizers[name]
        fields = list(per_field)
        pending.dense[name] = weighted_mean([per_field[f] for f in fields],
                                            [vec.weight(f) for f in fields]).tolist()
    payload = dict(pending.properties)
    if pending.external_id is not None and not is_uuid(pending.external_id):
        payload[ID_KEY] = pending.external_id
    sparse: dict[str, SparseVec] = {}
    encoder = stored.bm25_encoder
    if encoder is not None:
        sv = encoder.document_from(pending.properties)
        if sv.indices:
            sparse[BM25_VECTOR] = sv
    for sname, kept in pending.sparse.items():
        if kept.indices:
            sparse[sname] = kept
    for sname, per_text in pending.field_sparse.items():
        merged = merge_sparse(list(per_text.values()))
        if merged.indices:  # an empty sparse vector is stored as no vector
            sparse[sname] = merged
    return PointRecord(id=pending.point_id or "", payload=payload, dense=dict(pending.dense), sparse=sparse)


def sparse_out(rec: PointRecord) -> dict[str, dict[str, list]]:
    """A point's sparse vectorizers' vectors as the API shows them (the internal BM25 vector left out)."""
    return {name: {"indices": list(vec.indices), "values": list(vec.values)}
            for name, vec in rec.sparse.items() if name != BM25_VECTOR}
