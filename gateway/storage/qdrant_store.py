"""QdrantStore: the storage interface on qdrant-client, against a Qdrant server / cluster or ``:memory:``.

``QdrantStore(url="https://qdrant:6333", api_key=..., verify="/path/ca.pem")`` talks to a server (REST, or
gRPC with ``prefer_grpc=True``); ``QdrantStore(location=":memory:")`` runs qdrant-client's local mode
(used by the tests: the same client calls, no server). Collections are created with the schema's
shard_number / replication_factor / HNSW parameters passed through, sparse vectors with
``Modifier.IDF``. Definitions live in the system collection ``_polyvec_definitions``.

Hybrid search: RRF runs inside Qdrant (``query_points`` with two prefetches and a weighted ``RrfQuery``;
a server too old for RRF weights falls back to the same formula in ``gateway.storage.fusion``);
relative-score fusion fetches both lists in one ``query_batch_points`` call and fuses them in
``gateway.storage.fusion`` (min-max normalisation needs each list's best and worst score).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from gateway.storage.base import (
    SYSTEM_COLLECTION,
    CollectionNotFound,
    CollectionSchema,
    Condition,
    DenseQuery,
    FacetValue,
    FieldAny,
    FieldDatetimeRange,
    FieldGeoBox,
    FieldGeoRadius,
    FieldIsEmpty,
    FieldIsNull,
    FieldMatch,
    FieldPrefix,
    FieldRange,
    FieldText,
    FieldValuesCount,
    Filter,
    FusedPart,
    FusedPlan,
    FusedQuery,
    GeoPoint,
    Hit,
    HybridQuery,
    IndexInfo,
    Mmr,
    OrderBy,
    PayloadIndex,
    PointRecord,
    SearchSpec,
    SparseQuery,
    SparseVec,
    Store,
    StoreError,
    StoreUnavailable,
    WithPayload,
    as_fused,
    check_mmr,
    check_order_by,
    check_paging,
    definition_point_id,
    index_spec,
    narrow_payload,
    normalize_id,
    plan_fused,
    records_in_order,
    to_point_record,
    validate_collection_name,
)
from gateway.storage.fusion import RRF_K, Fused, Ranked, fuse_lists
from services.logging_setup import redact

T = TypeVar("T")
_LOCAL_NOT_FOUND = re.compile(r"^Collection .* not found", re.IGNORECASE)

_DISTANCE = {
    "cosine": models.Distance.COSINE,
    "dot": models.Distance.DOT,
    "euclid": models.Distance.EUCLID,
}
_INDEX_KINDS = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "integer": models.PayloadSchemaType.INTEGER,
    "float": models.PayloadSchemaType.FLOAT,
    "bool": models.PayloadSchemaType.BOOL,
    "datetime": models.PayloadSchemaType.DATETIME,
    "uuid": models.PayloadSchemaType.UUID,
    "text": models.PayloadSchemaType.TEXT,
    "geo": models.PayloadSchemaType.GEO,
}
_KIND_OF = {v.value: k for k, v in _INDEX_KINDS.items()}
_STOPWORDS = {v.value: v for v in models.Language}
_STEMMERS = {v.value: v for v in models.SnowballLanguage}
_DIRECTION = {"asc": models.Direction.ASC, "desc": models.Direction.DESC}


def index_schema(spec: PayloadIndex) -> Any:
    """The qdrant-client schema of a payload index: a type, or TextIndexParams for text (word tokens,
    lowercased, phrase matching on; with a language, its stopwords and Snowball stemmer)."""
    if spec.kind != "text":
        return _INDEX_KINDS[spec.kind]
    kwargs: dict[str, Any] = {"type": models.TextIndexType.TEXT, "tokenizer": models.TokenizerType.WORD,
                              "lowercase": True, "phrase_matching": True}
    if spec.language is not None:
        if spec.language not in _STOPWORDS and spec.language not in _STEMMERS:
            raise StoreError(f"language: unknown language {spec.language!r}")
        if spec.language in _STOPWORDS:
            kwargs["stopwords"] = _STOPWORDS[spec.language]
        if spec.language in _STEMMERS:
            kwargs["stemmer"] = models.SnowballParams(type=models.Snowball.SNOWBALL,
                                                      language=_STEMMERS[spec.language])
    return models.TextIndexParams(**kwargs)


@dataclass
class _Planned:
    """One search of a batch: its Qdrant requests, and the fused plan when the lists are fused here."""

    spec: SearchSpec
    requests: list[Any]
    fused: FusedPlan | None = None
    fusion: str = "rrf"


def convert_filter(flt: Filter | None) -> models.Filter | None:
    """gateway Filter -> qdrant-client Filter (None for no filter)."""
    return None if flt is None else _filter(flt)


def _filter(flt: Filter) -> models.Filter:
    return models.Filter(
        must=[_condition(c) for c in flt.must] or None,
        should=[_condition(c) for c in flt.should] or None,
        must_not=[_condition(c) for c in flt.must_not] or None,
    )


def _condition(cond: Condition) -> Any:
    if isinstance(cond, Filter):
        return _filter(cond)
    if isinstance(cond, FieldMatch):
        if isinstance(cond.value, float):  # Qdrant matches str/int/bool; a float equality is a closed range
            return models.FieldCondition(key=cond.key, range=models.Range(gte=cond.value, lte=cond.value))
        return models.FieldCondition(key=cond.key, match=models.MatchValue(value=cond.value))
    if isinstance(cond, FieldAny):
        return models.FieldCondition(key=cond.key, match=models.MatchAny(any=cast(Any, list(cond.values))))
    if isinstance(cond, FieldRange):
        return models.FieldCondition(
            key=cond.key, range=models.Range(gt=cond.gt, gte=cond.gte, lt=cond.lt, lte=cond.lte)
        )
    if isinstance(cond, FieldDatetimeRange):
        return models.FieldCondition(
            key=cond.key, range=models.DatetimeRange(gt=cond.gt, gte=cond.gte, lt=cond.lt, lte=cond.lte)
        )
    if isinstance(cond, FieldText):
        if cond.mode == "any":
            match: Any = models.MatchTextAny(text_any=cond.text)
        elif cond.mode == "all":
            match = models.MatchText(text=cond.text)
        else:
            match = models.MatchPhrase(phrase=cond.text)
        return models.FieldCondition(key=cond.key, match=match)
    if isinstance(cond, FieldPrefix):
        return models.FieldCondition(key=cond.key, match=models.MatchPrefix(prefix=cond.prefix))
    if isinstance(cond, FieldGeoRadius):
        return models.FieldCondition(
            key=cond.key, geo_radius=models.GeoRadius(center=_geo(cond.center), radius=float(cond.meters))
        )
    if isinstance(cond, FieldGeoBox):
        return models.FieldCondition(key=cond.key, geo_bounding_box=models.GeoBoundingBox(
            top_left=_geo(cond.top_left), bottom_right=_geo(cond.bottom_right)))
    if isinstance(cond, FieldIsEmpty):
        return models.IsEmptyCondition(is_empty=models.PayloadField(key=cond.key))
    if isinstance(cond, FieldIsNull):
        return models.IsNullCondition(is_null=models.PayloadField(key=cond.key))
    if isinstance(cond, FieldValuesCount):
        return models.FieldCondition(
            key=cond.key, values_count=models.ValuesCount(gt=cond.gt, gte=cond.gte, lt=cond.lt, lte=cond.lte)
        )
    raise StoreError(f"filter: unsupported condition {cond!r}")


def _geo(point: GeoPoint) -> models.GeoPoint:
    return models.GeoPoint(lat=float(point.lat), lon=float(point.lon))


def _with_payload(with_payload: WithPayload) -> Any:
    return with_payload if isinstance(with_payload, bool) else [str(k) for k in with_payload]


def _is_not_found(exc: Exception) -> bool:
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code == 404
    code = getattr(exc, "code", None)
    if callable(code):  # grpc.RpcError
        try:
            return getattr(code(), "name", "") == "NOT_FOUND"
        except Exception:  # pragma: no cover - defensive
            return False
    # qdrant-client local mode: ValueError("Collection NAME not found")
    return isinstance(exc, ValueError) and bool(_LOCAL_NOT_FOUND.match(str(exc)))


_UNAVAILABLE_GRPC = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}


def _causes(exc: BaseException):
    """``exc`` and everything it wraps (``__cause__``/``__context__``, qdrant-client's ``.source``)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        cur = todo.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        source = getattr(cur, "source", None)
        todo.extend([cur.__cause__, cur.__context__, source if isinstance(source, BaseException) else None])


def _is_unavailable(exc: BaseException) -> bool:
    """Connection refused / reset, timeouts, gRPC UNAVAILABLE-like codes, HTTP 5xx."""
    for cur in _causes(exc):
        if isinstance(cur, httpx.TransportError | ConnectionError | TimeoutError):
            return True
        if isinstance(cur, UnexpectedResponse) and cur.status_code is not None and cur.status_code >= 500:
            return True
        code = getattr(cur, "code", None)
        if callable(code):
            try:
                if getattr(code(), "name", "") in _UNAVAILABLE_GRPC:
                    return True
            except Exception:  # noqa: BLE001 - not a grpc error after all
                pass
    return False


def _root(exc: BaseException) -> str:
    """The innermost message, e.g. "[Errno 111] Connection refused"."""
    last = exc
    for cur in _causes(exc):
        last = cur
    return str(last) or type(last).__name__


class QdrantStore(Store):
    """qdrant-client adapter.

    Args:
        url: Qdrant server URL (``http(s)://host:6333``); or ``location=":memory:"`` for local mode.
        api_key: Qdrant API key (sent as the ``api-key`` header).
        https: force TLS on/off (default: from the URL scheme).
        verify: TLS verification for REST: True, False, or a CA bundle path.
        timeout: request timeout in seconds.
        prefer_grpc / grpc_port: talk gRPC instead of REST.
        hnsw_ef: HNSW candidate list size at search time (default: the server's).
        check_compatibility: ask the server's version on connect and warn on a client/server mismatch.
    """

    def __init__(
        self,
        url: str | None = None,
        location: str | None = None,
        api_key: str | None = None,
        *,
        https: bool | None = None,
        verify: bool | str = True,
        timeout: int = 30,
        prefer_grpc: bool = False,
        grpc_port: int = 6334,
        client: QdrantClient | None = None,
        hnsw_ef: int | None = None,
        check_compatibility: bool = True,
    ) -> None:
        self._params = models.SearchParams(hnsw_ef=hnsw_ef) if hnsw_ef else None
        if client is not None:
            self.client = client
        elif location is not None:
            self.client = QdrantClient(location=location)
        elif url:
            kwargs: dict[str, Any] = {}
            if verify is not True:
                kwargs["verify"] = verify
            self.client = QdrantClient(
                url=url,
                api_key=api_key,
                https=https,
                timeout=timeout,
                prefer_grpc=prefer_grpc,
                grpc_port=grpc_port,
                check_compatibility=check_compatibility,
                **kwargs,
            )
        else:
            raise StoreError("url: a Qdrant URL or location=':memory:' is required")
        self._local = location is not None
        self._where = redact(location or url or "the given client")  # errors never show a password
        # qdrant-client's local mode is not thread-safe; a server client is.
        self._lock = threading.RLock() if self._local else None
        self._system_ready = False
        self._engine_rrf = True  # weighted RRF inside Qdrant (falls back to gateway.storage.fusion)
        # name -> ({dense name: size}, {sparse names}); refreshed when a check fails (another gateway
        # may have re-created the collection)
        self._vectors_cache: dict[str, tuple[dict[str, int], set[str]]] = {}
        # local mode has no payload indexes (filters scan): the indexes asked for, kept to report them
        self._local_indexes: dict[str, dict[str, str]] = {}

    # -- internals ---------------------------------------------------------------------------
    def _call(self, name: str | None, fn: Callable[[], T]) -> T:
        try:
            if self._lock is not None:
                with self._lock:
                    return fn()
            return fn()
        except (StoreError, CollectionNotFound):
            raise
        except Exception as exc:
            if name is not None and _is_not_found(exc):
                raise CollectionNotFound(name) from exc
            if _is_unavailable(exc):
                raise StoreUnavailable(f"Qdrant at {self._where} did not answer: {_root(exc)}") from exc
            raise StoreError(f"{name or 'qdrant'}: {exc}") from exc

    def _require(self, name: str) -> None:
        if not isinstance(name, str) or name.startswith("_"):
            raise CollectionNotFound(str(name))

    def _vector_config(self, name: str, refresh: bool = False) -> tuple[dict[str, int], set[str]]:
        cached = None if refresh else self._vectors_cache.get(name)
        if cached is not None:
            return cached
        info = self._call(name, lambda: self.client.get_collection(name))
        vectors = info.config.params.vectors
        dense: dict[str, int] = {}
        if isinstance(vectors, dict):
            dense = {k: int(v.size) for k, v in vectors.items()}
        elif vectors is not None:
            dense = {"": int(vectors.size)}
        sparse = set((info.config.params.sparse_vectors or {}).keys())
        self._vectors_cache[name] = (dense, sparse)
        return dense, sparse

    def _check_dense(self, name: str, vector_name: str, vector: Sequence[float]) -> list[float]:
        for refresh in (False, True):
            dense, _ = self._vector_config(name, refresh)
            if vector_name in dense and dense[vector_name] == len(vector):
                return [float(x) for x in vector]
        if vector_name not in dense:
            raise StoreError(f"vector: {vector_name!r} is not a dense vector of collection {name!r}")
        raise StoreError(f"vector: {vector_name!r} needs {dense[vector_name]} dimensions, got {len(vector)}")

    def _check_sparse(self, name: str, vector_name: str, sparse: SparseVec) -> models.SparseVector:
        for refresh in (False, True):
            _, names = self._vector_config(name, refresh)
            if vector_name in names:
                return models.SparseVector(
                    indices=[int(i) for i in sparse.indices], values=[float(v) for v in sparse.values]
                )
        raise StoreError(f"vector: {vector_name!r} is not a sparse vector of collection {name!r}")

    def _ensure_system(self) -> None:
        if self._system_ready:
            return

        def create() -> None:
            if not self.client.collection_exists(SYSTEM_COLLECTION):
                try:
                    self.client.create_collection(SYSTEM_COLLECTION, vectors_config={})
                except Exception:
                    # another gateway may have created it in the meantime
                    if not self.client.collection_exists(SYSTEM_COLLECTION):
                        raise

        self._call(None, create)
        self._system_ready = True

    def _vectors(self, name: str, rec: PointRecord) -> dict[str, Any]:
        vectors: dict[str, Any] = {k: self._check_dense(name, k, v) for k, v in rec.dense.items()}
        for k, sv in rec.sparse.items():
            checked = self._check_sparse(name, k, sv)
            if sv.indices:  # an empty sparse vector is stored as "no vector" (keeps BM25's N exact)
                vectors[k] = checked
        return vectors

    @staticmethod
    def _hits(points: Sequence[Any], with_payload: WithPayload) -> list[Hit]:
        return [
            Hit(str(p.id), float(p.score), None if with_payload is False else dict(p.payload or {}))
            for p in points
        ]

    # -- collections -------------------------------------------------------------------------
    def create_collection(self, schema: CollectionSchema) -> None:
        hnsw = None
        if schema.hnsw_m is not None or schema.hnsw_ef_construct is not None:
            hnsw = models.HnswConfigDiff(m=schema.hnsw_m, ef_construct=schema.hnsw_ef_construct)
        vectors = {
            n: models.VectorParams(size=c.size, distance=_DISTANCE[c.distance])
            for n, c in schema.dense.items()
        }
        sparse = {n: models.SparseVectorParams(modifier=models.Modifier.IDF) for n in schema.sparse}
        sparse.update({n: models.SparseVectorParams() for n in schema.sparse_plain})  # no IDF modifier

        def create() -> None:
            if self.client.collection_exists(schema.name):
                raise StoreError(f"name: collection {schema.name!r} already exists")
            self.client.create_collection(
                schema.name,
                vectors_config=vectors,
                sparse_vectors_config=sparse or None,
                shard_number=schema.shard_number,
                replication_factor=schema.replication_factor,
                hnsw_config=hnsw,
            )

        self._vectors_cache.pop(schema.name, None)
        self._local_indexes.pop(schema.name, None)
        self._call(schema.name, create)

    def delete_collection(self, name: str) -> bool:
        self._vectors_cache.pop(name, None)
        self._local_indexes.pop(name, None)
        if not self.collection_exists(name):
            return False
        return bool(self._call(name, lambda: self.client.delete_collection(name)))

    def collection_exists(self, name: str) -> bool:
        if not isinstance(name, str) or name.startswith("_"):
            return False
        return bool(self._call(name, lambda: self.client.collection_exists(name)))

    def create_payload_index(self, name: str, key: str, kind: str | PayloadIndex) -> None:
        """Index payload field ``key`` for fast filtering (waits until the server applied it). Local mode
        has no payload indexes: the request is only recorded, for :meth:`payload_indexes`."""
        self._require(name)
        spec = index_spec(kind)
        if not isinstance(key, str) or not key:
            raise StoreError("key: must be a non-empty field name")
        schema = index_schema(spec)
        if self._local:
            if not self.collection_exists(name):
                raise CollectionNotFound(name)
            self._local_indexes.setdefault(name, {})[key] = spec.kind
            return
        self._call(name, lambda: self.client.create_payload_index(name, key, field_schema=schema, wait=True))

    def payload_indexes(self, name: str) -> dict[str, IndexInfo]:
        self._require(name)
        info = self._call(name, lambda: self.client.get_collection(name))
        if self._local:
            return {k: IndexInfo(kind) for k, kind in self._local_indexes.get(name, {}).items()}
        out: dict[str, IndexInfo] = {}
        for key, schema in (info.payload_schema or {}).items():
            kind = schema.data_type.value if hasattr(schema.data_type, "value") else str(schema.data_type)
            points = None if schema.points is None else int(schema.points)
            out[key] = IndexInfo(_KIND_OF.get(kind, kind), points)
        return out

    def optimize(self, name: str) -> None:
        """Qdrant servers build indexes themselves; only checks the collection exists."""
        if not self.collection_exists(name):
            raise CollectionNotFound(name)

    # -- points ------------------------------------------------------------------------------
    def upsert(self, name: str, points: Sequence[PointRecord]) -> None:
        self._require(name)
        structs = [
            models.PointStruct(id=normalize_id(p.id), vector=self._vectors(name, p), payload=dict(p.payload))
            for p in points
        ]
        if not structs:
            if not self.collection_exists(name):
                raise CollectionNotFound(name)
            return
        self._call(name, lambda: self.client.upsert(name, points=structs, wait=True))

    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[PointRecord]:
        self._require(name)
        norm = [normalize_id(i) for i in ids]
        records = self._call(
            name, lambda: self.client.retrieve(name, ids=norm, with_payload=True, with_vectors=with_vectors)
        )
        return records_in_order(norm, records, with_vectors, models.SparseVector)

    def delete_points(self, name: str, ids: Sequence[str]) -> None:
        self._require(name)
        norm = [normalize_id(i) for i in ids]
        self._call(
            name,
            lambda: self.client.delete(name, points_selector=models.PointIdsList(points=cast(Any, norm)),
                                       wait=True),
        )

    def count(self, name: str, filter: Filter | None = None, exact: bool = True) -> int:
        self._require(name)
        qfilter = convert_filter(filter)
        return int(self._call(
            name, lambda: self.client.count(name, count_filter=qfilter, exact=bool(exact)).count))

    def delete_by_filter(self, name: str, filter: Filter | None) -> int:
        """Count, then delete with the same filter (a Qdrant server has no count-and-delete in one call:
        a write from another client between the two is deleted without being counted)."""
        self._require(name)
        qfilter = convert_filter(filter) or models.Filter()
        matched = int(self._call(
            name, lambda: self.client.count(name, count_filter=qfilter, exact=True).count))
        if matched:
            selector = models.FilterSelector(filter=qfilter)
            self._call(name, lambda: self.client.delete(name, points_selector=selector, wait=True))
        return matched

    def scroll(
        self,
        name: str,
        *,
        filter: Filter | None = None,
        limit: int = 256,
        cursor: str | None = None,
        with_payload: WithPayload = True,
        with_vectors: bool = False,
    ) -> tuple[list[PointRecord], str | None]:
        self._require(name)
        check_paging(limit, 0)
        start = None if cursor is None else normalize_id(cursor)
        qfilter = convert_filter(filter)
        records, nxt = self._call(name, lambda: self.client.scroll(
            name, scroll_filter=qfilter, limit=limit, offset=start, with_payload=_with_payload(with_payload),
            with_vectors=with_vectors))
        page = [to_point_record(r, with_vectors, models.SparseVector) for r in records]
        return page, None if nxt is None else str(nxt)

    def update_sparse(self, name: str, vector_name: str, vectors: Sequence[tuple[str, SparseVec]]) -> None:
        self._require(name)
        updates, removed = [], []
        for pid, sv in vectors:
            checked = self._check_sparse(name, vector_name, sv)
            if sv.indices:
                updates.append(models.PointVectors(id=normalize_id(pid), vector={vector_name: checked}))
            else:
                removed.append(normalize_id(pid))
        if updates:
            self._call(name, lambda: self.client.update_vectors(name, points=updates, wait=True))
        if removed:
            self._call(name, lambda: self.client.delete_vectors(
                name, vectors=[vector_name], points=models.PointIdsList(points=removed), wait=True))

    # -- search ------------------------------------------------------------------------------
    def _query(
        self,
        name: str,
        query: Any,
        using: str | None,
        *,
        filter: Filter | None,
        limit: int,
        offset: int,
        with_payload: WithPayload,
    ) -> list[Hit]:
        self._require(name)
        check_paging(limit, offset)
        qfilter = convert_filter(filter)
        response = self._call(
            name,
            lambda: self.client.query_points(
                name,
                query=query,
                using=using,
                query_filter=qfilter,
                search_params=self._params,
                limit=limit,
                offset=offset,
                with_payload=_with_payload(with_payload),
                with_vectors=False,
            ),
        )
        return self._hits(response.points, with_payload)

    def search_dense(
        self,
        name: str,
        vector_name: str,
        vector: Sequence[float],
        *,
        filter: Filter | None = None,
        limit: int = 10,
        offset: int = 0,
        with_payload: WithPayload = True,
        mmr: Mmr | None = None,
    ) -> list[Hit]:
        self._require(name)
        values = self._check_dense(name, vector_name, vector)
        check_mmr(mmr, limit, offset)
        query: Any = values
        if mmr is not None:
            query = models.NearestQuery(nearest=values, mmr=models.Mmr(
                diversity=1.0 - float(mmr.lambda_), candidates_limit=mmr.candidates))
        return self._query(
            name, query, vector_name, filter=filter, limit=limit, offset=offset, with_payload=with_payload
        )

    def browse(
        self,
        name: str,
        *,
        filter: Filter | None = None,
        order_by: OrderBy | None = None,
        limit: int = 10,
        offset: int = 0,
        with_payload: WithPayload = True,
    ) -> list[Hit]:
        self._require(name)
        check_order_by(order_by)
        query = None if order_by is None else models.OrderByQuery(
            order_by=models.OrderBy(key=order_by.key, direction=_DIRECTION[order_by.direction]))
        hits = self._query(name, query, None, filter=filter, limit=limit, offset=offset,
                           with_payload=with_payload)
        return [Hit(h.id, 0.0, h.payload) for h in hits]

    def facet(self, name: str, key: str, *, filter: Filter | None = None, limit: int = 10,
              exact: bool = False) -> list[FacetValue]:
        self._require(name)
        check_paging(limit, 0)
        qfilter = convert_filter(filter)
        response = self._call(name, lambda: self.client.facet(
            name, key, facet_filter=qfilter, limit=limit, exact=bool(exact)))
        return [FacetValue(h.value if isinstance(h.value, bool | int | str) else str(h.value), int(h.count))
                for h in response.hits]

    def search_sparse(
        self,
        name: str,
        vector_name: str,
        sparse: SparseVec,
        *,
        filter: Filter | None = None,
        limit: int = 10,
        offset: int = 0,
        with_payload: WithPayload = True,
    ) -> list[Hit]:
        self._require(name)
        query = self._check_sparse(name, vector_name, sparse)
        return self._query(
            name, query, vector_name, filter=filter, limit=limit, offset=offset, with_payload=with_payload
        )

    def search_fused(
        self,
        name: str,
        parts: Sequence[FusedPart],
        *,
        fusion: str = "rrf",
        filter: Filter | None = None,
        limit: int = 10,
        offset: int = 0,
        with_payload: WithPayload = True,
        prefetch_limit: int | None = None,
    ) -> list[Hit]:
        self._require(name)
        plan = plan_fused(parts, fusion, limit, offset, prefetch_limit)
        candidates = plan.candidates
        qfilter = convert_filter(filter)
        queries: list[tuple[Any, str]] = [
            (self._check_sparse(name, p.vector_name, p.vector) if isinstance(p.vector, SparseVec)
             else self._check_dense(name, p.vector_name, p.vector), p.vector_name)
            for p in plan.parts
        ]
        if fusion == "rrf" and self._engine_rrf:
            prefetch = [
                models.Prefetch(query=q, using=using, filter=qfilter, params=self._params, limit=candidates)
                for q, using in queries
            ]
            rrf_query = models.RrfQuery(rrf=models.Rrf(k=RRF_K, weights=plan.rrf_weights))
            try:
                response = self._call(
                    name,
                    lambda: self.client.query_points(
                        name,
                        prefetch=prefetch,
                        query=rrf_query,
                        limit=limit,
                        offset=offset,
                        with_payload=_with_payload(with_payload),
                        with_vectors=False,
                    ),
                )
                return self._hits(response.points, with_payload)
            except CollectionNotFound:
                raise
            except StoreError as exc:
                if "weights" not in str(exc).lower():
                    raise
                # a Qdrant server older than weighted RRF: same formula, fused here from now on
                self._engine_rrf = False
        requests = [
            models.QueryRequest(
                query=q,
                using=using,
                filter=qfilter,
                params=self._params,
                limit=candidates,
                with_payload=False,
            )
            for q, using in queries
        ]
        responses = self._call(name, lambda: self.client.query_batch_points(name, requests=requests))
        lists = [(p.weight, [Ranked(str(h.id), float(h.score)) for h in r.points])
                 for p, r in zip(plan.parts, responses, strict=True)]
        fused = fuse_lists(fusion, lists, top=offset + limit)[offset:]
        return self._with_payloads(name, fused, with_payload)

    def _with_payloads(self, name: str, fused: list[Fused], with_payload: WithPayload) -> list[Hit]:
        if with_payload is False or not fused:
            return [Hit(str(f.id), f.score, None) for f in fused]
        ids = [str(f.id) for f in fused]
        selector = _with_payload(with_payload)
        records = self._call(
            name, lambda: self.client.retrieve(name, ids=ids, with_payload=selector, with_vectors=False)
        )
        payloads = {str(r.id): dict(r.payload or {}) for r in records}
        return [Hit(str(f.id), f.score, payloads.get(str(f.id), {})) for f in fused]

    def search_batch(self, name: str, searches: Sequence[SearchSpec]) -> list[list[Hit]]:
        """Every search's requests go to Qdrant in one ``query_batch_points`` call.

        RRF hybrid runs inside Qdrant (two prefetches and a weighted ``RrfQuery``; a server too old for
        RRF weights falls back to the same formula in ``gateway.storage.fusion``); relative-score hybrid
        fetches both lists in the same batch and fuses them here (min-max normalisation needs each
        list's best and worst score).
        """
        self._require(name)
        if not searches:
            if not self.collection_exists(name):
                raise CollectionNotFound(name)
            return []
        engine_rrf = self._engine_rrf
        planned = [self._plan(name, spec, engine_rrf) for spec in searches]
        requests = [r for p in planned for r in p.requests]
        try:
            responses = self._call(name, lambda: self.client.query_batch_points(name, requests=requests))
        except CollectionNotFound:
            raise
        except StoreError as exc:
            if not engine_rrf or "weights" not in str(exc).lower():
                raise
            # a Qdrant server older than weighted RRF: same formula, fused here from now on
            self._engine_rrf = False
            return self.search_batch(name, searches)
        out: list[list[Hit]] = []
        fused: list[int] = []  # searches whose hits still need their payloads
        at = 0
        for i, p in enumerate(planned):
            lists = [r.points for r in responses[at:at + len(p.requests)]]
            at += len(p.requests)
            spec = p.spec
            if p.fused is None:
                out.append(self._hits(lists[0], spec.with_payload))
                continue
            ranked = [(part.weight, [Ranked(str(pt.id), float(pt.score)) for pt in res])
                      for part, res in zip(p.fused.parts, lists, strict=True)]
            page = fuse_lists(p.fusion, ranked, top=spec.offset + spec.limit)[spec.offset:]
            out.append([Hit(str(f.id), f.score, None) for f in page])
            if spec.with_payload is not False and page:
                fused.append(i)
        if fused:
            self._fill_payloads(name, [(out[i], searches[i].with_payload) for i in fused])
        return out

    def _plan(self, name: str, spec: SearchSpec, engine_rrf: bool) -> _Planned:
        """The Qdrant requests of one search (checked), and the hybrid plan when it is fused here."""
        check_paging(spec.limit, spec.offset)
        query = spec.query
        qfilter = convert_filter(spec.filter)
        payload = _with_payload(spec.with_payload)

        def page(q: Any, using: str) -> models.QueryRequest:
            return models.QueryRequest(query=q, using=using, filter=qfilter, params=self._params,
                                       limit=spec.limit, offset=spec.offset, with_payload=payload,
                                       with_vector=False)

        if isinstance(query, DenseQuery):
            vector = self._check_dense(name, query.vector_name, query.vector)
            return _Planned(spec, [page(vector, query.vector_name)])
        if isinstance(query, SparseQuery):
            sparse = self._check_sparse(name, query.vector_name, query.vector)
            return _Planned(spec, [page(sparse, query.vector_name)])
        if not isinstance(query, HybridQuery | FusedQuery):
            raise StoreError(f"query: unsupported query {query!r}")
        fq = as_fused(query)
        plan = plan_fused(fq.parts, fq.fusion, spec.limit, spec.offset, fq.prefetch_limit)
        parts = [(self._check_sparse(name, part.vector_name, part.vector)
                  if isinstance(part.vector, SparseVec)
                  else self._check_dense(name, part.vector_name, part.vector), part.vector_name)
                 for part in plan.parts]
        if fq.fusion == "rrf" and engine_rrf:
            prefetch = [models.Prefetch(query=q, using=using, filter=qfilter, params=self._params,
                                        limit=plan.candidates) for q, using in parts]
            rrf_query = models.RrfQuery(rrf=models.Rrf(k=RRF_K, weights=plan.rrf_weights))
            request = models.QueryRequest(prefetch=prefetch, query=rrf_query, limit=spec.limit,
                                          offset=spec.offset, with_payload=payload, with_vector=False)
            return _Planned(spec, [request])
        requests = [models.QueryRequest(query=q, using=using, filter=qfilter, params=self._params,
                                        limit=plan.candidates, with_payload=False)
                    for q, using in parts]
        return _Planned(spec, requests, plan, fq.fusion)

    def _fill_payloads(self, name: str, pages: list[tuple[list[Hit], WithPayload]]) -> None:
        """Fetch the payloads of fused hits, one retrieve for all of them."""
        ids = list(dict.fromkeys(h.id for hits, _ in pages for h in hits))
        records = self._call(
            name, lambda: self.client.retrieve(name, ids=ids, with_payload=True, with_vectors=False)
        )
        payloads = {str(r.id): dict(r.payload or {}) for r in records}
        for hits, with_payload in pages:
            for hit in hits:
                hit.payload = narrow_payload(payloads.get(hit.id, {}), with_payload)

    # -- definitions -------------------------------------------------------------------------
    def save_definition(self, name: str, definition: dict[str, Any]) -> None:
        validate_collection_name(name)
        self._ensure_system()
        point = models.PointStruct(
            id=definition_point_id(name),
            vector={},
            payload={"name": name, "definition": json.dumps(definition, sort_keys=True)},
        )
        self._call(None, lambda: self.client.upsert(SYSTEM_COLLECTION, points=[point], wait=True))

    def load_definition(self, name: str) -> dict[str, Any] | None:
        if not isinstance(name, str):
            return None
        self._ensure_system()
        pid = definition_point_id(name)
        records = self._call(
            None, lambda: self.client.retrieve(SYSTEM_COLLECTION, ids=[pid], with_payload=True)
        )
        return json.loads((records[0].payload or {})["definition"]) if records else None

    def list_definitions(self) -> list[dict[str, Any]]:
        self._ensure_system()
        out: list[tuple[str, dict[str, Any]]] = []
        offset: Any = None
        while True:
            def page(o: Any = offset) -> tuple[list[models.Record], Any]:
                return self.client.scroll(SYSTEM_COLLECTION, limit=256, offset=o, with_payload=True,
                                          with_vectors=False)

            records, offset = self._call(None, page)
            for r in records:
                payload = r.payload or {}
                out.append((payload["name"], json.loads(payload["definition"])))
            if offset is None:
                break
        return [d for _, d in sorted(out, key=lambda x: x[0])]

    def delete_definition(self, name: str) -> None:
        if not isinstance(name, str):
            return
        self._ensure_system()
        selector = models.PointIdsList(points=[definition_point_id(name)])
        self._call(None, lambda: self.client.delete(SYSTEM_COLLECTION, points_selector=selector, wait=True))

    def close(self) -> None:
        self.client.close()
