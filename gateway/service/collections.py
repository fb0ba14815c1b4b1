"""Stored collection records: the validated definition plus what was learned from the inference services."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from gateway.bm25 import Bm25Encoder, make_encoder
from gateway.definitions import BM25_VECTOR, CollectionDefinition
from gateway.fields import FieldType
from gateway.storage.base import CollectionSchema, DenseVectorConfig


@dataclass
class VectorInfo:
    """What a named vector turned out to be when the collection was created."""

    dimensions: int
    modalities: list[str] = field(default_factory=list)
    model_name: str | None = None  # the name the inference service reported


@dataclass
class SparseInfo:
    """What a sparse vectorizer's models turned out to be when the collection was created."""

    vocab_size: int
    model_name: str | None = None  # the document model, as its inference service reported it
    function_name: str | None = None  # SPARSE_ENCODING | SPARSE_TOKENIZE
    query_model_name: str | None = None  # doc-only mode: the query model
    query_function_name: str | None = None


#: Definition maps whose order means something: the first dense / sparse vectorizer is the default.
_ORDERED = ("vectorizers", "sparse_vectorizers")


@dataclass
class StoredCollection:
    definition: CollectionDefinition
    vectors: dict[str, VectorInfo]
    created_at: float = field(default_factory=time.time)
    sparse: dict[str, SparseInfo] = field(default_factory=dict)
    # declared field -> why building its payload index failed (cleared when a build succeeds)
    index_errors: dict[str, str] = field(default_factory=dict)

    # -- persistence --------------------------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        return {
            "name": self.definition.name,
            "definition": self.definition.model_dump(mode="json"),
            "vectors": {k: asdict(v) for k, v in self.vectors.items()},
            "sparse_vectors": {k: asdict(v) for k, v in self.sparse.items()},
            "created_at": self.created_at,
            "index_errors": dict(self.index_errors),
            # the stores keep JSON with sorted keys: the declared order (which names the default
            # vector, "the collection's first") is kept here
            "order": {key: list(getattr(self.definition, key)) for key in _ORDERED},
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> StoredCollection:
        definition = dict(record["definition"])
        bm25 = definition.get("bm25")
        if isinstance(bm25, dict) and "analyzer" not in bm25:
            # written before analyzers existed: its BM25 vectors came from the legacy tokenizer
            definition["bm25"] = {**bm25, "analyzer": "legacy"}
        for key, names in (record.get("order") or {}).items():
            given = definition.get(key)
            if key in _ORDERED and isinstance(given, dict) and sorted(names) == sorted(given):
                definition[key] = {n: given[n] for n in names}
        return cls(
            definition=CollectionDefinition.model_validate(definition),
            vectors={k: VectorInfo(**v) for k, v in record.get("vectors", {}).items()},
            sparse={k: SparseInfo(**v) for k, v in (record.get("sparse_vectors") or {}).items()},
            created_at=float(record.get("created_at", 0.0)),
            index_errors=dict(record.get("index_errors") or {}),
        )

    # -- views --------------------------------------------------------------------------------------------
    def public(self) -> dict[str, Any]:
        """The collection as the API shows it: the definition with dimensions filled in, plus vector info."""
        out = self.definition.model_dump(mode="json", exclude_none=True)
        for name, vec in out.get("vectorizers", {}).items():
            info = self.vectors.get(name)
            if info is not None:
                vec["dimensions"] = info.dimensions
                vec["modalities"] = info.modalities
                if info.model_name:
                    vec["model_name"] = info.model_name
        for name, vec in out.get("sparse_vectorizers", {}).items():
            sinfo = self.sparse.get(name)
            if sinfo is not None:
                vec["vocab_size"] = sinfo.vocab_size
                for key in ("model_name", "function_name", "query_model_name", "query_function_name"):
                    if getattr(sinfo, key):
                        vec[key] = getattr(sinfo, key)
        out["created_at"] = self.created_at
        return out

    def schema(self) -> CollectionSchema:
        d = self.definition
        return CollectionSchema(
            name=d.name,
            dense={name: DenseVectorConfig(size=self.vectors[name].dimensions,
                                           distance=d.vector_distance(name))
                   for name in d.vectorizers},
            sparse=[BM25_VECTOR] if d.has_bm25 else [],
            sparse_plain=list(d.sparse_vectorizers),
            shard_number=d.shard_number,
            replication_factor=d.replication_factor,
            hnsw_m=d.hnsw_m,
            hnsw_ef_construct=d.hnsw_ef_construct,
        )

    @cached_property
    def field_types(self) -> dict[str, FieldType]:
        """Declared fields and their types (empty when the collection declares none)."""
        return self.definition.field_types()

    @cached_property
    def bm25_encoder(self) -> Bm25Encoder | None:
        """The collection's BM25 encoder (built once per loaded definition), None without BM25 fields."""
        cfg = self.definition.bm25
        if cfg is None or not cfg.fields:
            return None
        return make_encoder(cfg.settings())
