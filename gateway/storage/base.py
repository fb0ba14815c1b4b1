"""Backend-neutral, synchronous storage interface the gateway service layer talks to.

The service layer calls these methods through ``asyncio.to_thread``; adapters must be thread-safe.
Point ids are UUID strings. Named dense vectors and named sparse vectors live side by side in one point.
Collection definitions (the gateway's JSON description of a collection) are stored by the adapter in a
small system collection so that gateways hold no state.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

DISTANCES = ("cosine", "dot", "euclid")
FUSIONS = ("rrf", "relative_score")
PAYLOAD_INDEX_KINDS = ("keyword", "integer", "float", "bool", "datetime", "uuid", "text", "geo")
#: Index kinds a facet can count (match-capable) and order_by can sort on (range-capable).
FACET_KINDS = ("keyword", "integer", "bool", "uuid")
ORDER_KINDS = ("integer", "float", "datetime")
SYSTEM_COLLECTION = "_polyvec_definitions"

Fusion = Literal["rrf", "relative_score"]
WithPayload = bool | list[str]


class StoreError(Exception):
    """A storage operation failed (bad argument, backend error)."""


class StoreUnavailable(StoreError):
    """The storage backend did not answer (connection refused, timeout, 5xx): retry later."""


class CollectionNotFound(StoreError):
    """The named collection does not exist."""

    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} not found")
        self.name = name


@dataclass(frozen=True)
class DenseVectorConfig:
    """One named dense vector: its size and distance ("cosine" | "dot" | "euclid")."""

    size: int
    distance: str = "cosine"

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size <= 0:
            raise StoreError(f"size: must be a positive integer, got {self.size!r}")
        if self.distance not in DISTANCES:
            raise StoreError(f"distance: must be one of {', '.join(DISTANCES)}, got {self.distance!r}")


@dataclass(frozen=True)
class CollectionSchema:
    """What a collection stores: named dense vectors, named sparse vectors, index options.

    ``sparse`` vectors are scored with Qdrant's IDF modifier (BM25: the stored values are term weights,
    the IDF comes from the collection); ``sparse_plain`` vectors without it: their stored values are the
    whole weight (neural sparse models), and a search scores the plain dot product.

    ``shard_number`` / ``replication_factor`` are passed to a Qdrant server (ignored by the embedded store);
    ``hnsw_m`` / ``hnsw_ef_construct`` configure the HNSW index (None = backend default).
    """

    name: str
    dense: dict[str, DenseVectorConfig] = field(default_factory=dict)
    sparse: list[str] = field(default_factory=list)
    sparse_plain: list[str] = field(default_factory=list)
    shard_number: int | None = None
    replication_factor: int | None = None
    hnsw_m: int | None = None
    hnsw_ef_construct: int | None = None

    def __post_init__(self) -> None:
        validate_collection_name(self.name)
        overlap = set(self.dense) & set(self.sparse)
        if overlap:
            raise StoreError(f"sparse: names {sorted(overlap)} are also dense vector names")
        overlap = (set(self.dense) | set(self.sparse)) & set(self.sparse_plain)
        if overlap:
            raise StoreError(f"sparse_plain: names {sorted(overlap)} are also other vector names")
        if not self.dense and not self.sparse and not self.sparse_plain:
            raise StoreError("dense: a collection needs at least one dense or sparse vector")

    @property
    def sparse_names(self) -> list[str]:
        """Every sparse vector, with or without the IDF modifier."""
        return [*self.sparse, *self.sparse_plain]


@dataclass
class SparseVec:
    """A sparse vector: parallel lists of term indices (non-negative, unique) and values."""

    indices: list[int]
    values: list[float]

    def __post_init__(self) -> None:
        if len(self.indices) != len(self.values):
            raise StoreError(
                f"sparse vector: {len(self.indices)} indices but {len(self.values)} values"
            )


@dataclass
class PointRecord:
    """One stored object: UUID string id, JSON payload, named dense and sparse vectors."""

    id: str
    payload: dict[str, Any] = field(default_factory=dict)
    dense: dict[str, list[float]] = field(default_factory=dict)
    sparse: dict[str, SparseVec] = field(default_factory=dict)


@dataclass
class Hit:
    """One search result. ``score`` is the backend score (similarity, or fused score for hybrid)."""

    id: str
    score: float
    payload: dict[str, Any] | None = None


@dataclass(frozen=True)
class FieldMatch:
    """Payload ``key`` equals ``value``. Dotted keys address nested objects; an array field matches
    when any element equals ``value``. A float value is matched numerically (as the range [v, v])."""

    key: str
    value: str | int | bool | float


@dataclass(frozen=True)
class FieldAny:
    """Payload ``key`` equals any of ``values``."""

    key: str
    values: list[str] | list[int]


@dataclass(frozen=True)
class FieldRange:
    """Numeric range on payload ``key``; unset bounds are open."""

    key: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


@dataclass(frozen=True)
class FieldDatetimeRange:
    """Datetime range on payload ``key``: RFC 3339 bounds (``2024-01-31T12:00:00+00:00``); unset = open."""

    key: str
    gt: str | None = None
    gte: str | None = None
    lt: str | None = None
    lte: str | None = None


@dataclass(frozen=True)
class FieldText:
    """Full-text match on payload ``key``, tokenised by the field's text index (plain words without one).

    ``mode``: "any" (at least one of the terms), "all" (every term, any order), "phrase" (the terms
    consecutively, in order).
    """

    key: str
    text: str
    mode: Literal["any", "all", "phrase"] = "any"


@dataclass(frozen=True)
class FieldPrefix:
    """The string value of payload ``key`` starts with ``prefix`` (case-sensitive)."""

    key: str
    prefix: str


@dataclass(frozen=True)
class GeoPoint:
    lat: float
    lon: float


@dataclass(frozen=True)
class FieldGeoRadius:
    """The geo point ``{lat, lon}`` at payload ``key`` lies within ``meters`` of ``center``."""

    key: str
    center: GeoPoint
    meters: float


@dataclass(frozen=True)
class FieldGeoBox:
    """The geo point at payload ``key`` lies in the box from ``top_left`` to ``bottom_right``."""

    key: str
    top_left: GeoPoint
    bottom_right: GeoPoint


@dataclass(frozen=True)
class FieldIsEmpty:
    """Payload ``key`` is missing, null, or an empty list."""

    key: str


@dataclass(frozen=True)
class FieldIsNull:
    """Payload ``key`` is present and null (or a list holding a null)."""

    key: str


@dataclass(frozen=True)
class FieldValuesCount:
    """The number of values at payload ``key`` (a list's length; 1 for a scalar) is in the range."""

    key: str
    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None


@dataclass(frozen=True)
class Filter:
    """Boolean filter: all of ``must``, at least one of ``should`` (when non-empty), none of ``must_not``.

    A ``Filter`` may itself appear as a condition (nesting).
    """

    must: list[Condition] = field(default_factory=list)
    should: list[Condition] = field(default_factory=list)
    must_not: list[Condition] = field(default_factory=list)


Condition = (FieldMatch | FieldAny | FieldRange | FieldDatetimeRange | FieldText | FieldPrefix
             | FieldGeoRadius | FieldGeoBox | FieldIsEmpty | FieldIsNull | FieldValuesCount | Filter)



@dataclass(frozen=True)
class DenseQuery:
    """Nearest neighbours by the named dense vector."""

    vector_name: str
    vector: Sequence[float]


@dataclass(frozen=True)
class SparseQuery:
    """Sparse dot product (with the IDF modifier) by the named sparse vector."""

    vector_name: str
    vector: SparseVec


@dataclass(frozen=True)
class HybridQuery:
    """Dense + sparse fused (see :meth:`Store.search_hybrid`)."""

    dense_name: str
    dense_vector: Sequence[float]
    sparse_name: str
    sparse_vector: SparseVec
    alpha: float
    fusion: str = "rrf"
    prefetch_limit: int | None = None


@dataclass(frozen=True)
class FusedQuery:
    """Any number of dense / sparse lists fused by their weights (see :meth:`Store.search_fused`)."""

    parts: tuple[FusedPart, ...]
    fusion: str = "rrf"
    prefetch_limit: int | None = None


def as_fused(query: HybridQuery | FusedQuery) -> FusedQuery:
    """A hybrid query as the two weighted lists it stands for (alpha checked)."""
    if isinstance(query, FusedQuery):
        return query
    alpha = check_alpha(query.alpha)
    return FusedQuery((FusedPart(query.dense_name, query.dense_vector, alpha),
                       FusedPart(query.sparse_name, query.sparse_vector, 1.0 - alpha)),
                      query.fusion, query.prefetch_limit)


@dataclass(frozen=True)
class SearchSpec:
    """One search of a batch (:meth:`Store.search_batch`): a query plus filter, paging and payload choice."""

    query: DenseQuery | SparseQuery | HybridQuery | FusedQuery
    filter: Filter | None = None
    limit: int = 10
    offset: int = 0
    with_payload: WithPayload = True

@dataclass(frozen=True)
class PayloadIndex:
    """A payload index: its ``kind`` (one of PAYLOAD_INDEX_KINDS) and, for text, the ``language`` whose
    stopwords and Snowball stemmer its tokens go through (None: plain lowercased words)."""

    kind: str
    language: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in PAYLOAD_INDEX_KINDS:
            raise StoreError(f"kind: must be one of {', '.join(PAYLOAD_INDEX_KINDS)}, got {self.kind!r}")
        if self.language is not None and self.kind != "text":
            raise StoreError("language: only text indexes have a language")


@dataclass(frozen=True)
class IndexInfo:
    """An existing payload index: its kind and how many points it holds (None: the backend does not say)."""

    kind: str
    points: int | None = None


@dataclass(frozen=True)
class OrderBy:
    """Order by payload ``key`` (an integer, float or datetime index), ascending or descending."""

    key: str
    direction: Literal["asc", "desc"] = "asc"


@dataclass(frozen=True)
class Mmr:
    """Maximal marginal relevance over the ``candidates`` nearest: each next hit maximises
    ``lambda_ * sim(query, d) - (1 - lambda_) * max sim(d, already chosen)`` (1 = pure relevance)."""

    lambda_: float
    candidates: int


@dataclass(frozen=True)
class FacetValue:
    """One value of a facet and how many points have it."""

    value: str | int | bool
    count: int


def validate_collection_name(name: str) -> None:
    """Collection names: 1-128 chars of letters, digits, '_' and '-', not starting with '_' (reserved)."""
    if not isinstance(name, str) or not name:
        raise StoreError("name: collection name must be a non-empty string")
    if len(name) > 128:
        raise StoreError("name: collection name longer than 128 characters")
    if name.startswith("_"):
        raise StoreError("name: collection names starting with '_' are reserved")
    if not all(c.isascii() and (c.isalnum() or c in "_-") for c in name):
        raise StoreError(f"name: {name!r} may only contain letters, digits, '_' and '-'")


def normalize_id(point_id: str) -> str:
    """Canonical UUID string for ``point_id``; raises StoreError naming ``id`` when it is not a UUID."""
    try:
        return str(uuid.UUID(str(point_id)))
    except (ValueError, AttributeError, TypeError) as exc:
        raise StoreError(f"id: {point_id!r} is not a UUID") from exc


def check_alpha(alpha: float) -> float:
    if not isinstance(alpha, int | float) or not 0.0 <= float(alpha) <= 1.0:
        raise StoreError(f"alpha: must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def check_fusion(fusion: str) -> str:
    if fusion not in FUSIONS:
        raise StoreError(f"fusion: must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    return fusion


def check_paging(limit: int, offset: int) -> None:
    if not isinstance(limit, int) or limit < 1:
        raise StoreError(f"limit: must be a positive integer, got {limit!r}")
    if not isinstance(offset, int) or offset < 0:
        raise StoreError(f"offset: must be a non-negative integer, got {offset!r}")


def check_mmr(mmr: Mmr | None, limit: int, offset: int) -> None:
    if mmr is None:
        return
    if not isinstance(mmr.lambda_, int | float) or not 0.0 <= float(mmr.lambda_) <= 1.0:
        raise StoreError(f"mmr.lambda: must be a number in [0, 1], got {mmr.lambda_!r}")
    if not isinstance(mmr.candidates, int) or mmr.candidates < limit + offset:
        raise StoreError(f"mmr.candidates: must be an integer >= limit + offset ({limit + offset}), "
                         f"got {mmr.candidates!r}")


def check_order_by(order_by: OrderBy | None) -> None:
    if order_by is not None and order_by.direction not in ("asc", "desc"):
        raise StoreError(f"order_by.direction: must be asc or desc, got {order_by.direction!r}")


def index_spec(kind: str | PayloadIndex) -> PayloadIndex:
    """A PayloadIndex from a kind name or a PayloadIndex (errors name ``kind``)."""
    return kind if isinstance(kind, PayloadIndex) else PayloadIndex(kind)


class Store(ABC):
    """Storage for collections of points plus the gateway's collection definitions.

    All methods raise ``CollectionNotFound`` for an unknown collection (except ``collection_exists``,
    ``delete_collection`` which returns False, and the definition methods) and ``StoreError`` for bad input.
    """

    # -- collections -------------------------------------------------------------------------
    @abstractmethod
    def create_collection(self, schema: CollectionSchema) -> None:
        """Create the collection; StoreError if it already exists."""

    @abstractmethod
    def delete_collection(self, name: str) -> bool:
        """Delete the collection; True if it existed."""

    @abstractmethod
    def collection_exists(self, name: str) -> bool: ...

    # -- points ------------------------------------------------------------------------------
    @abstractmethod
    def upsert(self, name: str, points: Sequence[PointRecord]) -> None:
        """Insert or replace points (whole point: payload and all vectors)."""

    @abstractmethod
    def retrieve(self, name: str, ids: Sequence[str], with_vectors: bool = False) -> list[PointRecord]:
        """Points with these ids, in the order given; missing ids are skipped."""

    @abstractmethod
    def delete_points(self, name: str, ids: Sequence[str]) -> None: ...

    @abstractmethod
    def count(self, name: str, filter: Filter | None = None, exact: bool = True) -> int:
        """Number of points (matching ``filter``); ``exact=False`` allows the backend's fast estimate."""

    @abstractmethod
    def delete_by_filter(self, name: str, filter: Filter | None) -> int:
        """Delete every point matching ``filter`` (None: every point) in one operation.

        Returns how many points matched, counted just before the delete with the same filter.
        """

    @abstractmethod
    def search_batch(self, name: str, searches: Sequence[SearchSpec]) -> list[list[Hit]]:
        """Run several searches as one batch query; one hit list per search, in order.

        Each search gives the same hits as the single-search method of its kind.
        """

    # -- search ------------------------------------------------------------------------------
    @abstractmethod
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
        """Nearest neighbours by the named dense vector, best first.

        Score: cosine similarity / dot product (higher is better) or euclidean distance (lower is better;
        results still come nearest first). With ``mmr`` the hits are chosen for diversity among the
        ``mmr.candidates`` nearest (see :class:`Mmr`); scores stay the similarity to the query.
        """

    @abstractmethod
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
        """Sparse dot-product search (with the IDF modifier: BM25 when vectors come from gateway.bm25)."""

    def search_hybrid(
        self,
        name: str,
        dense_name: str,
        dense_vector: Sequence[float],
        sparse_name: str,
        sparse_vector: SparseVec,
        *,
        alpha: float,
        fusion: Fusion = "rrf",
        filter: Filter | None = None,
        limit: int = 10,
        offset: int = 0,
        with_payload: WithPayload = True,
        prefetch_limit: int | None = None,
    ) -> list[Hit]:
        """Dense + sparse fused; alpha weights the dense list, 1-alpha the sparse list (see storage.fusion).

        alpha=1 gives exactly the dense ranking, alpha=0 exactly the sparse ranking.
        ``prefetch_limit``: how many candidates each list contributes (default max(50, 3*(limit+offset))).
        """
        alpha = check_alpha(alpha)
        parts = [FusedPart(dense_name, dense_vector, alpha),
                 FusedPart(sparse_name, sparse_vector, 1.0 - alpha)]
        return self.search_fused(name, parts, fusion=fusion, filter=filter, limit=limit, offset=offset,
                                 with_payload=with_payload, prefetch_limit=prefetch_limit)

    @abstractmethod
    def search_fused(
        self,
        name: str,
        parts: Sequence[FusedPart],
        *,
        fusion: Fusion = "rrf",
        filter: Filter | None = None,
        limit: int = 10,
        offset: int = 0,
        with_payload: WithPayload = True,
        prefetch_limit: int | None = None,
    ) -> list[Hit]:
        """Several result lists (dense or sparse queries on named vectors) fused by their weights.

        A list whose weight is 0 takes no part; the formulas are gateway.storage.fusion's (n lists).
        ``prefetch_limit``: how many candidates each list contributes (default max(50, 3*(limit+offset))).
        """

    @abstractmethod
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
        """Points matching ``filter`` without a query: ordered by ``order_by`` (its field needs an integer,
        float or datetime index), else by point id. Scores are 0."""

    @abstractmethod
    def facet(self, name: str, key: str, *, filter: Filter | None = None, limit: int = 10,
              exact: bool = False) -> list[FacetValue]:
        """The most frequent values of payload ``key`` among points matching ``filter``, most frequent first
        (ties by value). The field needs a keyword, integer, bool or uuid index. ``exact``: exact counts
        (else the engine may estimate them on large collections)."""

    # -- payload indexes ---------------------------------------------------------------------
    @abstractmethod
    def create_payload_index(self, name: str, key: str, kind: str | PayloadIndex) -> None:
        """Index payload field ``key`` (kind: one of PAYLOAD_INDEX_KINDS, or a PayloadIndex); returns once
        the index is in use. Creating the same index again changes nothing."""

    @abstractmethod
    def payload_indexes(self, name: str) -> dict[str, IndexInfo]:
        """The collection's payload indexes by field."""

    # -- bulk reads and sparse rewrites --------------------------------------------------------
    @abstractmethod
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
        """One page of points in id order from ``cursor`` (None = the start), and the next page's cursor
        (None after the last page)."""

    @abstractmethod
    def update_sparse(self, name: str, vector_name: str, vectors: Sequence[tuple[str, SparseVec]]) -> None:
        """Replace one named sparse vector of existing points (payload and other vectors unchanged); an empty
        SparseVec removes that vector from the point."""

    def optimize(self, name: str) -> None:  # noqa: B027
        """Build pending vector indexes now (embedded store); servers index on their own. Default: nothing."""

    # -- collection definitions (system collection) -----------------------------------------
    @abstractmethod
    def save_definition(self, name: str, definition: dict[str, Any]) -> None:
        """Store (replace) the JSON definition of collection ``name``."""

    @abstractmethod
    def load_definition(self, name: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def list_definitions(self) -> list[dict[str, Any]]:
        """All stored definitions, sorted by collection name."""

    @abstractmethod
    def delete_definition(self, name: str) -> None:
        """Remove the definition (no error if absent)."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_prefetch_limit(limit: int, offset: int, prefetch_limit: int | None) -> int:
    if prefetch_limit is None:
        return max(50, 3 * (limit + offset))
    if not isinstance(prefetch_limit, int) or prefetch_limit < 1:
        raise StoreError(f"prefetch_limit: must be a positive integer, got {prefetch_limit!r}")
    return max(prefetch_limit, limit + offset)


@dataclass(frozen=True)
class FusedPart:
    """One list of a fused search: a dense (list of floats) or sparse query on a named vector, its weight."""

    vector_name: str
    vector: Sequence[float] | SparseVec
    weight: float

    @property
    def sparse(self) -> bool:
        return isinstance(self.vector, SparseVec)


@dataclass(frozen=True)
class FusedPlan:
    """Checked fused-search arguments: candidates per list, the lists that take part and their weights."""

    candidates: int  # how many hits each list brings to the fusion
    parts: list[FusedPart]  # weight > 0 only, in the order given
    rrf_weights: list[float]  # Qdrant's weighted-RRF weights of those parts (the heaviest is 1)


def plan_fused(parts: Sequence[FusedPart], fusion: str, limit: int, offset: int,
               prefetch_limit: int | None) -> FusedPlan:
    """Check a fused search's arguments (errors name the field) and work out what to fetch."""
    from gateway.storage.fusion import rrf_list_weights

    check_fusion(fusion)
    check_paging(limit, offset)
    if not parts:
        raise StoreError("parts: a fused search needs at least one list")
    for part in parts:
        w = part.weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0.0 <= float(w) < float("inf"):
            raise StoreError(f"weights: {part.vector_name!r} has weight {w!r}; weights are finite numbers "
                             ">= 0")
    taking = [p for p in parts if p.weight > 0.0]
    if not taking:
        raise StoreError("weights: at least one list needs a weight above 0")
    candidates = default_prefetch_limit(limit, offset, prefetch_limit)
    return FusedPlan(candidates, taking, rrf_list_weights([p.weight for p in taking]))


def definition_point_id(name: str) -> str:
    """Stable UUID of the system-collection point holding collection ``name``'s definition."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"polyvec:definition:{name}"))


def to_point_record(rec: Any, with_vectors: bool, sparse_type: type) -> PointRecord:
    """An engine record (``.id``, ``.payload``, ``.vector``) as a PointRecord (sparse_type -> SparseVec)."""
    dense: dict[str, list[float]] = {}
    sparse: dict[str, SparseVec] = {}
    if with_vectors and isinstance(rec.vector, dict):
        for vname, vec in rec.vector.items():
            if isinstance(vec, sparse_type):
                sv: Any = vec
                sparse[vname] = SparseVec(list(sv.indices), [float(v) for v in sv.values])
            else:
                dense[vname] = [float(v) for v in vec]
    return PointRecord(str(rec.id), dict(rec.payload or {}), dense, sparse)


def records_in_order(
    ids: Sequence[str], records: Sequence[Any], with_vectors: bool, sparse_type: type
) -> list[PointRecord]:
    """Engine records (``.id``, ``.payload``, ``.vector``) as PointRecords in the order of ``ids``.

    Ids with no record are skipped; with ``with_vectors``, vectors of ``sparse_type`` become
    :class:`SparseVec` and the rest dense lists.
    """
    by_id = {str(r.id): r for r in records}
    return [to_point_record(by_id[pid], with_vectors, sparse_type) for pid in ids if pid in by_id]


def narrow_payload(payload: dict[str, Any], with_payload: WithPayload) -> dict[str, Any] | None:
    """The part of a full payload that ``with_payload`` asks for (top-level keys of a list)."""
    if with_payload is False:
        return None
    if with_payload is True:
        return payload
    keys = set(with_payload)
    return {k: v for k, v in payload.items() if k in keys}
