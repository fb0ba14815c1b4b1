"""Storage interface (``base``) and its adapters: ``EdgeStore`` (embedded qdrant-edge) and ``QdrantStore``."""

from gateway.storage.base import (
    CollectionNotFound,
    CollectionSchema,
    Condition,
    DenseVectorConfig,
    FieldAny,
    FieldMatch,
    FieldRange,
    Filter,
    Hit,
    PointRecord,
    SparseVec,
    Store,
    StoreError,
)

__all__ = [
    "CollectionNotFound",
    "CollectionSchema",
    "Condition",
    "DenseVectorConfig",
    "FieldAny",
    "FieldMatch",
    "FieldRange",
    "Filter",
    "Hit",
    "PointRecord",
    "SparseVec",
    "Store",
    "StoreError",
]
