"""Searches on their way to the store: checked, BM25-encoded, waiting for a query vector, then SearchSpecs.

A single search and every search of a batch take the same path: :func:`prepare` checks the request against
the collection (vector name, modalities, filter), encodes BM25 queries and decodes or fetches the query
image; the service then embeds the texts and images of all waiting queries (one Vectorize call per
inference service) and runs the specs as one store batch. Errors name the field, prefixed with
``searches.N`` inside a batch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.definitions import BM25_VECTOR
from gateway.errors import BadRequest
from gateway.image_urls import is_image_url
from gateway.service import objects as obj
from gateway.service.collections import StoredCollection
from gateway.service.filters import parse_filter
from gateway.service.requests import QUERY_KINDS, SearchRequest
from gateway.service.vectors import check_vector
from gateway.storage.base import (
    DenseQuery,
    Filter,
    Hit,
    HybridQuery,
    SearchSpec,
    SparseQuery,
    SparseVec,
    WithPayload,
)


def at(where: str, field: str) -> str:
    """``field`` inside ``where`` (``searches.3`` + ``hybrid.alpha``); ``where`` empty: ``field``."""
    return f"{where}.{field}" if where else field


@dataclass
class Query:
    """One search: what the store needs, and the query text or image still to be embedded."""

    req: SearchRequest | None
    where: str = ""
    filter: Filter | None = None
    vector: str | None = None  # the dense vector searched (None for bm25)
    sparse: SparseVec | None = None  # the BM25 query (bm25, hybrid)
    values: list[float] | None = None  # the dense query vector, once known
    text: str | None = None  # to embed with the model of ``vector``
    image: bytes | None = None
    embed_field: str = ""  # the field a model's rejection names
    error: BadRequest | None = None
    alone: bool = False  # browse / order_by / diversity: run on its own, not in the store batch

    @classmethod
    def failed(cls, where: str, error: BadRequest) -> Query:
        return cls(req=None, where=where, error=error)

    def fail(self, field: str | None, message: str) -> None:
        self.error = BadRequest(at(self.where, field) if field else (self.where or None), message)

    @property
    def waiting(self) -> bool:
        """True while the query text or image still has to go through the model."""
        pending = self.text is not None or self.image is not None
        return self.error is None and not self.alone and self.values is None and pending

    @property
    def with_payload(self) -> WithPayload:
        assert self.req is not None
        return True if self.req.properties is None else [*self.req.properties, obj.ID_KEY]

    def spec(self) -> SearchSpec:
        req = self.req
        assert req is not None and self.error is None
        kind = req.kind
        if kind == "bm25":
            assert self.sparse is not None
            query: DenseQuery | SparseQuery | HybridQuery = SparseQuery(BM25_VECTOR, self.sparse)
        elif kind == "hybrid":
            assert self.vector and self.values is not None and self.sparse is not None and req.hybrid
            alpha = 0.5 if req.hybrid.alpha is None else req.hybrid.alpha
            query = HybridQuery(self.vector, self.values, BM25_VECTOR, self.sparse, alpha, req.hybrid.fusion)
        else:
            assert self.vector and self.values is not None
            query = DenseQuery(self.vector, self.values)
        return SearchSpec(query, self.filter, req.limit, req.offset, self.with_payload)

    def hits_out(self, hits: list[Hit]) -> list[dict[str, Any]]:
        """Store hits as the API shows them: the user's id, the score, the chosen properties."""
        assert self.req is not None
        wanted = None if self.req.properties is None else set(self.req.properties)
        out = []
        for hit in hits:
            props = obj.public_payload(hit.payload)
            if wanted is not None:
                props = {k: v for k, v in props.items() if k in wanted}
            out.append({"id": obj.external_id(hit.id, hit.payload), "score": float(hit.score),
                        "properties": props})
        return out


def vector_name(stored: StoredCollection, requested: str | None, where: str = "") -> str:
    vectorizers = stored.definition.vectorizers
    if requested is None:
        default = stored.definition.default_vector()
        if default is None:
            raise BadRequest(at(where, "vector"), "this collection has no dense vectors (only bm25)")
        return default
    if requested not in vectorizers:
        raise BadRequest(at(where, "vector"),
                         f"unknown vector {requested!r}; this collection has {sorted(vectorizers)}")
    return requested


def bm25_query(stored: StoredCollection, text: str, field: str) -> SparseVec:
    encoder = stored.bm25_encoder
    if encoder is None:
        raise BadRequest(field, f"collection {stored.definition.name!r} has no bm25 fields")
    return encoder.query(text)


def check_embeddable(stored: StoredCollection, vector: str, field: str, modality: str) -> None:
    """The model of ``vector`` can embed a query of ``modality`` ("text" | "image")."""
    if not stored.definition.vectorizers[vector].uses_service:
        raise BadRequest(field, f"vector {vector!r} holds user-supplied vectors and has no model; "
                                "use near_vector")
    modalities = stored.vectors[vector].modalities
    if modalities and modality not in modalities:
        raise BadRequest(field, f"the model of vector {vector!r} does not embed {modality}s")


async def prepare(stored: StoredCollection, req: SearchRequest, where: str,
                  fetch_image: Callable[[str], Awaitable[bytes]]) -> Query:
    """Check ``req`` against the collection; BadRequest naming the field (inside ``where``) otherwise.

    A search that browses (no query), orders by a field or asks for diversity is marked ``alone``: the
    service runs it through its single-search path.
    """
    kind = req.kind
    if kind not in QUERY_KINDS or getattr(req, "order_by", None) is not None or \
            getattr(req, "diversity", None) is not None:
        return Query(req=req, where=where, alone=True)
    if kind == "neural_sparse" or (kind == "hybrid" and req.hybrid is not None and req.hybrid.weights):
        # their query goes through a sparse model (VectorizeSparse): the single-search path does that
        return Query(req=req, where=where, alone=True)
    q = Query(req=req, where=where, filter=parse_filter(req.filter, at(where, "filter")))
    if kind == "bm25":
        assert req.bm25 is not None
        if req.vector is not None:
            vector_name(stored, req.vector, where)  # a named vector that does not exist is an error
        q.sparse = bm25_query(stored, req.bm25.query, at(where, "bm25"))
        return q
    q.vector = vector_name(stored, req.vector, where)
    dims = stored.vectors[q.vector].dimensions
    if kind == "near_vector":
        assert req.near_vector is not None
        values = [float(v) for v in req.near_vector.vector]
        problem = check_vector(values, dims, at(where, "near_vector.vector"))
        if problem:
            raise BadRequest(*problem)
        q.values = values
    elif kind == "near_text":
        assert req.near_text is not None
        q.embed_field = "near_text.query"
        check_embeddable(stored, q.vector, at(where, q.embed_field), "text")
        q.text = req.near_text.query
    elif kind == "near_image":
        assert req.near_image is not None
        q.embed_field = "near_image.image"
        field = at(where, q.embed_field)
        check_embeddable(stored, q.vector, field, "image")
        raw = req.near_image.image
        try:
            q.image = await fetch_image(raw.strip()) if is_image_url(raw) else obj.decode_base64_image(raw)
        except ValueError as exc:  # ImageFetchError is a ValueError too
            raise BadRequest(field, str(exc)) from None
    else:  # hybrid
        assert req.hybrid is not None
        q.sparse = bm25_query(stored, req.hybrid.query, at(where, "hybrid"))
        q.embed_field = "hybrid.query"
        check_embeddable(stored, q.vector, at(where, q.embed_field), "text")
        q.text = req.hybrid.query
    return q
