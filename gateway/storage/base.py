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
PAYLOAD_INDEX_KINDS = ("keyword", "integer", "float", "bool")
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
    """What a collection stores: named dense vectors, named sparse vectors (IDF modifier), index options.

    ``shard_number`` / ``replication_factor`` are passed to a Qdrant server (ignored by the embedded store);
    ``hnsw_m`` / ``hnsw_ef_construct`` configure the HNSW index (None = backend default).
    """

    name: str
    dense: dict[str, DenseVectorConfig] = field(default_factory=dict)
    sparse: list[str] = field(default_factory=list)
    shard_number: int | None = None
    replication_factor: int | None = None
    hnsw_m: int | None = None
    hnsw_ef_construct: int | None = None

    def __post_init__(self) -> None:
        validate_collection_name(self.name)
        overlap = set(self.dense) & set(self.sparse)
        if overlap:
            raise StoreError(f"sparse: names {sorted(overlap)} are also dense vector names")
        if not self.dense and not self.sparse:
            raise StoreError("dense: a collection needs at least one dense or sparse vector")


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
class Filter:
    """Boolean filter: all of ``must``, at least one of ``should`` (when non-empty), none of ``must_not``.

    A ``Filter`` may itself appear as a condition (nesting).
    """

    must: list[Condition] = field(default_factory=list)
    should: list[Condition] = field(default_factory=list)
    must_not: list[Condition] = field(default_factory=list)


Condition = FieldMatch | FieldAny | FieldRange | Filter


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
    def count(self, name: str, filter: Filter | None = None) -> int:
        """Exact number of points (matching ``filter``)."""

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
    ) -> list[Hit]:
        """Nearest neighbours by the named dense vector, best first.

        Score: cosine similarity / dot product (higher is better) or euclidean distance (lower is better;
        results still come nearest first).
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

    @abstractmethod
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

    def create_payload_index(self, name: str, key: str, kind: str) -> None:  # noqa: B027
        """Index payload field ``key`` ("keyword" | "integer" | "float" | "bool") for faster filtering.

        Optional: filters work without it. Default: nothing.
        """

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
class HybridPlan:
    """Checked hybrid-search arguments: candidates per list and which lists take part, with weights."""

    alpha: float
    candidates: int  # how many hits each list brings to the fusion
    dense_weight: float  # RRF weights (gateway.storage.fusion.rrf_weights); 0 = the list takes no part
    sparse_weight: float

    def parts(self, dense: Any, sparse: Any) -> list[tuple[Any, float]]:
        """``(dense, weight)`` and ``(sparse, weight)`` for the lists that take part, dense first."""
        pairs = ((dense, self.dense_weight), (sparse, self.sparse_weight))
        return [(part, w) for part, w in pairs if w > 0.0]

    def split(self, lists: Sequence[Any]) -> tuple[Any, Any]:
        """Result lists fetched in :meth:`parts` order, as (vector list, BM25 list); an absent one is []."""
        rest = list(lists)
        vec = rest.pop(0) if self.dense_weight > 0.0 else []
        bm25 = rest.pop(0) if self.sparse_weight > 0.0 else []
        return vec, bm25


def plan_hybrid(alpha: float, fusion: str, limit: int, offset: int, prefetch_limit: int | None) -> HybridPlan:
    """Check a hybrid search's arguments (errors name the field) and work out what to fetch."""
    from gateway.storage.fusion import rrf_weights

    alpha = check_alpha(alpha)
    check_fusion(fusion)
    check_paging(limit, offset)
    dense_weight, sparse_weight = rrf_weights(alpha)
    candidates = default_prefetch_limit(limit, offset, prefetch_limit)
    return HybridPlan(alpha, candidates, dense_weight, sparse_weight)


def definition_point_id(name: str) -> str:
    """Stable UUID of the system-collection point holding collection ``name``'s definition."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"polyvec:definition:{name}"))


def records_in_order(
    ids: Sequence[str], records: Sequence[Any], with_vectors: bool, sparse_type: type
) -> list[PointRecord]:
    """Engine records (``.id``, ``.payload``, ``.vector``) as PointRecords in the order of ``ids``.

    Ids with no record are skipped; with ``with_vectors``, vectors of ``sparse_type`` become
    :class:`SparseVec` and the rest dense lists.
    """
    by_id = {str(r.id): r for r in records}
    out: list[PointRecord] = []
    for pid in ids:
        rec = by_id.get(pid)
        if rec is None:
            continue
        dense: dict[str, list[float]] = {}
        sparse: dict[str, SparseVec] = {}
        if with_vectors and isinstance(rec.vector, dict):
            for vname, vec in rec.vector.items():
                if isinstance(vec, sparse_type):
                    sparse[vname] = SparseVec(list(vec.indices), [float(v) for v in vec.values])
                else:
                    dense[vname] = [float(v) for v in vec]
        out.append(PointRecord(pid, dict(rec.payload or {}), dense, sparse))
    return out
