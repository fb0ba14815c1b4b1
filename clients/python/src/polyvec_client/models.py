"""Typed results of the gateway API (dataclasses built from its JSON answers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


@dataclass(frozen=True)
class Limits:
    """What the gateway accepts per request (``GET /v1/limits``)."""

    import_batch_size: int = 1000
    max_page_size: int = 1000
    search_batch_size: int = 64
    max_request_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Limits:
        known = {k: int(v) for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class Vectorizer:
    model: str | None = None
    inference_url: str | None = None
    text_fields: list[str] = field(default_factory=list)
    image_fields: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    dimensions: int | None = None
    distance: str | None = None
    modalities: list[str] = field(default_factory=list)
    model_name: str | None = None


@dataclass(frozen=True)
class CollectionInfo:
    """A collection as the gateway describes it; ``raw`` is the whole JSON answer."""

    name: str
    vectorizers: dict[str, Vectorizer]
    bm25: dict[str, Any] | None
    distance: str | None
    created_at: float | None
    count: int | None
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CollectionInfo:
        vectorizers = {}
        for name, vec in (data.get("vectorizers") or {}).items():
            known = {k: v for k, v in vec.items() if k in Vectorizer.__dataclass_fields__}
            vectorizers[name] = Vectorizer(**known)
        return cls(name=data["name"], vectorizers=vectorizers, bm25=data.get("bm25"),
                   distance=data.get("distance"), created_at=data.get("created_at"),
                   count=data.get("count"), raw=data)


@dataclass(frozen=True)
class Object:
    """A stored object: your id, its UUID, properties, and its vectors when asked for."""

    id: str
    uuid: str
    properties: dict[str, Any]
    vectors: dict[str, list[float]] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Object:
        return cls(id=data["id"], uuid=data.get("uuid", ""), properties=data.get("properties") or {},
                   vectors=data.get("vectors"))

    def to_import(self) -> dict[str, Any]:
        """This object in the shape the import takes (``{id, properties, vectors?}``)."""
        out: dict[str, Any] = {"id": self.id, "properties": self.properties}
        if self.vectors:
            out["vectors"] = self.vectors
        return out


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    properties: dict[str, Any]


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    took_ms: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchResult:
        return cls(hits=[Hit(h["id"], float(h["score"]), h.get("properties") or {}) for h in data["hits"]],
                   took_ms=float(data.get("took_ms", 0.0)))


@dataclass(frozen=True)
class SearchError:
    """One search of a batch that failed (the others still have their results)."""

    error: str
    field: str | None


class Failure(NamedTuple):
    """One object an import could not store: its position in your input, id, field and the reason."""

    index: int
    id: str | None
    field: str | None
    error: str


@dataclass
class ImportReport:
    """What an ``insert_many`` did: ``ok`` objects stored, ``failed`` ones with their reasons.

    ``interrupted``: stopped early (Ctrl-C); everything counted was acknowledged by the gateway, and
    ``sent`` says how many input objects were handed to it (the rest were never sent).
    """

    ok: int = 0
    failed: list[Failure] = field(default_factory=list)
    elapsed: float = 0.0
    sent: int = 0
    skipped: int = 0
    interrupted: bool = False
    unsent_from: int | None = None  # after an interruption: the first input position not sent

    @property
    def objects_per_second(self) -> float:
        return (self.ok + len(self.failed)) / self.elapsed if self.elapsed > 0 else 0.0
