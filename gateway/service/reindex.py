"""Rebuilding a collection's BM25 vectors: measure the corpus's mean length, then rewrite every vector.

1. Every object's BM25 text is analysed with the new settings (Qdrant's analyzer unless told otherwise)
   and the mean length of the objects that have any term is taken as ``avg_len`` (or the one given).
2. The definition is saved with the new analyzer and ``avg_len``; from then on this gateway writes new
   objects and analyses queries with them. Other gateways see it within DEFINITION_CACHE_S, which the
   rebuild waits out before step 3.
3. Every object's BM25 vector is recomputed from its stored properties and replaced (payload and dense
   vectors untouched).

Afterwards BM25 scores are exactly Okapi BM25 over the analysed corpus (``avg_len`` = its mean length),
until the corpus drifts: run it again after large imports. During step 3 a query may meet a mix of old
and new vectors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from gateway.bm25 import DEFAULT_AVG_LEN, DEFAULT_LANGUAGE, Bm25Encoder, make_encoder
from gateway.definitions import BM25_VECTOR, Bm25Config, bad_request_from
from gateway.errors import BadRequest
from gateway.service.collections import StoredCollection
from gateway.service.requests import ReindexBm25Request
from gateway.storage.base import PointRecord, SparseVec, Store

PAGE = 1000
Db = Callable[..., Awaitable[Any]]


def new_settings(stored: StoredCollection, request: ReindexBm25Request) -> Bm25Config:
    """The collection's BM25 settings with the request's changes; the analyzer becomes ``qdrant``.

    A legacy collection's list of stopwords is kept as words added to the language's stopword set.
    """
    cfg = stored.definition.bm25
    if cfg is None or not cfg.fields:
        raise BadRequest("bm25", f"collection {stored.definition.name!r} has no BM25 fields")
    base = cfg.model_dump(mode="json", exclude_none=True)
    base.pop("avg_len", None)
    legacy_words: list[str] = []
    if cfg.analyzer == "legacy":
        legacy_words = list(base.pop("stopwords", None) or [])
    changes = dict(request.bm25 or {})
    if "avg_len" in changes:
        raise BadRequest("bm25.avg_len", "give avg_len at the top level (or leave it out to measure it)")
    merged = {**base, "analyzer": "qdrant", **changes}
    if legacy_words and "stopwords" not in changes:
        merged["stopwords"] = {"languages": [merged.get("language", DEFAULT_LANGUAGE)], "words": legacy_words}
    try:
        new = Bm25Config.model_validate(merged)
    except ValidationError as exc:
        raise bad_request_from(exc, "bm25") from None
    if not new.fields:
        raise BadRequest("bm25.fields", "a rebuild needs at least one field (the BM25 vector stays)")
    return new


async def scan(db: Db, store: Store, name: str, fields: list[str],
               visit: Callable[[list[PointRecord]], Awaitable[None]]) -> int:
    """Call ``visit`` on every page of the collection's objects (properties ``fields`` only); the count."""
    cursor: str | None = None
    total = 0
    while True:
        page, cursor = await db(store.scroll, name, limit=PAGE, cursor=cursor, with_payload=list(fields))
        total += len(page)
        if page:
            await visit(page)
        if cursor is None:
            return total


def _lengths(encoder: Bm25Encoder, page: list[PointRecord]) -> tuple[int, int]:
    lengths = [encoder.length_from(p.payload) for p in page]
    return sum(lengths), sum(1 for n in lengths if n)


def _vectors(encoder: Bm25Encoder, page: list[PointRecord]) -> list[tuple[str, SparseVec]]:
    return [(p.id, encoder.document_from(p.payload)) for p in page]


async def reindex_bm25(db: Db, store: Store, stored: StoredCollection, request: ReindexBm25Request,
                       save: Callable[[StoredCollection], Awaitable[None]],
                       settle_s: float) -> dict[str, Any]:
    """Run the rebuild (see the module docstring); ``save`` stores a changed definition, ``settle_s`` is
    how long other gateways may keep using the old one."""
    started = time.perf_counter()
    name = stored.definition.name
    cfg = new_settings(stored, request)
    measuring = make_encoder(cfg.settings())
    terms = docs = 0

    async def measure(page: list[PointRecord]) -> None:
        nonlocal terms, docs
        t, d = await asyncio.to_thread(_lengths, measuring, page)
        terms += t
        docs += d

    if request.avg_len is None:
        objects = await scan(db, store, name, cfg.fields or [], measure)
        avg_len = terms / docs if docs else DEFAULT_AVG_LEN
    else:
        avg_len = float(request.avg_len)
    cfg = cfg.model_copy(update={"avg_len": avg_len})
    definition = stored.definition.model_copy(update={"bm25": cfg})
    # everything else of the record is kept (the sparse vectorizers' vocabularies and model names too)
    updated = dataclasses.replace(stored, definition=definition)
    await save(updated)
    if settle_s > 0:
        await asyncio.sleep(settle_s)
    encoder = make_encoder(cfg.settings())

    async def rewrite(page: list[PointRecord]) -> None:
        vectors = await asyncio.to_thread(_vectors, encoder, page)
        await db(store.update_sparse, name, BM25_VECTOR, vectors)

    objects = await scan(db, store, name, cfg.fields or [], rewrite)
    return {"collection": name, "objects": objects, "avg_len": avg_len,
            "bm25": cfg.model_dump(mode="json", exclude_none=True),
            "took_ms": round((time.perf_counter() - started) * 1000, 3)}
