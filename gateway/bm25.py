"""BM25 as Qdrant sparse vectors (scored inside Qdrant with the IDF modifier).

Tokenizer: Unicode-aware. The text is case-folded (``str.casefold``, a stronger ``lower``) and split on
every character that is not a Unicode letter or digit (so "Wi-Fi 6E" -> ["wi", "fi", "6e"], "Größe" ->
["grösse"], "東京" -> ["東京"]). No stemming; stopword removal is off by default (``stopwords`` lists
words to drop).

Term index: the first 4 bytes of ``blake2b(term, digest_size=8)`` as a big-endian integer, masked to 31
bits, so the same term always gets the same index in every process and gateway (no vocabulary to keep).
Collisions: for V distinct terms about V**2 / 2**32 pairs share an index (~2 pairs at V = 100k, ~230 at
V = 1M); two colliding terms are scored as one term.

Scores (Qdrant computes the sum of query_value * document_value * idf over shared indices)::

    document value  w(t, d) = tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))
    query value     1 for each unique query term
    idf (Qdrant)    idf(t)  = ln(1 + (N - n(t) + 0.5) / (n(t) + 0.5))
    score(q, d)     = sum over unique t in q and d of idf(t) * w(t, d)

tf = occurrences of t in d, dl = number of tokens in d, N = points of the collection that have a BM25
vector (objects without any BM25 text get none and do not count), n(t) = points containing t.

avgdl: a stateless gateway cannot know the corpus average length when a document is inserted, and
re-weighting every stored vector when it drifts is not an option. ``avg_len`` is therefore a setting of
the collection's BM25 configuration (default 256 tokens, Qdrant's own BM25 default); set it to the typical
token count of your documents (``estimate_avg_len`` computes it from a sample). It only scales length
normalisation: with avg_len equal to the corpus mean the scores are exactly Okapi BM25.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.storage.base import SparseVec

_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)
INDEX_BITS = 31
_INDEX_MASK = (1 << INDEX_BITS) - 1


class Bm25SettingsError(ValueError):
    """Invalid BM25 settings; the message names the field."""


@dataclass(frozen=True)
class Bm25Settings:
    """BM25 configuration of a collection: which payload fields are indexed and the BM25 parameters."""

    fields: list[str] = field(default_factory=list)
    k1: float = 1.2
    b: float = 0.75
    avg_len: float = 256.0
    stopwords: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.k1, int | float) or self.k1 < 0:
            raise Bm25SettingsError(f"bm25.k1: must be a number >= 0, got {self.k1!r}")
        if not isinstance(self.b, int | float) or not 0.0 <= self.b <= 1.0:
            raise Bm25SettingsError(f"bm25.b: must be a number in [0, 1], got {self.b!r}")
        if not isinstance(self.avg_len, int | float) or self.avg_len <= 0:
            raise Bm25SettingsError(f"bm25.avg_len: must be a number > 0, got {self.avg_len!r}")
        if not all(isinstance(f, str) and f for f in self.fields):
            raise Bm25SettingsError("bm25.fields: must be a list of non-empty field names")
        object.__setattr__(self, "stopwords", frozenset(w.casefold() for w in self.stopwords))


def tokenize(text: str, stopwords: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Case-folded runs of Unicode letters/digits, in order, duplicates kept, stopwords dropped."""
    tokens = _TOKEN_RE.findall(text.casefold())
    if stopwords:
        tokens = [t for t in tokens if t not in stopwords]
    return tokens


def term_index(term: str) -> int:
    """Stable 31-bit index of ``term`` (blake2b)."""
    digest = hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest[:4], "big") & _INDEX_MASK


def estimate_avg_len(texts: Iterable[str], stopwords: frozenset[str] = frozenset()) -> float:
    """Mean token count of ``texts`` (a good ``avg_len``); 1.0 for an empty sample."""
    lengths = [len(tokenize(t, stopwords)) for t in texts]
    return (sum(lengths) / len(lengths)) if lengths and sum(lengths) else 1.0


def field_text(properties: Mapping[str, Any], fields: Iterable[str]) -> str:
    """Concatenate the text of ``fields`` (strings, numbers, lists of them; dotted paths for nesting)."""
    parts: list[str] = []
    for name in fields:
        value: Any = properties
        for part in name.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        _collect(value, parts)
    return " ".join(parts)


def _collect(value: Any, parts: list[str]) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str | int | float):
        parts.append(str(value))
    elif isinstance(value, list | tuple):
        for v in value:
            _collect(v, parts)


class Bm25Encoder:
    """Turns documents and queries into sparse vectors for a Qdrant sparse vector with ``Modifier.IDF``."""

    def __init__(self, settings: Bm25Settings | None = None) -> None:
        self.settings = settings or Bm25Settings()

    def tokens(self, text: str) -> list[str]:
        return tokenize(text, self.settings.stopwords)

    def document(self, text: str) -> SparseVec:
        """Document side: tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avg_len)) per unique term."""
        tokens = self.tokens(text)
        s = self.settings
        norm = s.k1 * (1.0 - s.b + s.b * len(tokens) / s.avg_len)
        weights: dict[int, float] = {}
        for term, tf in Counter(tokens).items():
            idx = term_index(term)
            weights[idx] = weights.get(idx, 0.0) + tf * (s.k1 + 1.0) / (tf + norm)
        return _sparse(weights)

    def query(self, text: str) -> SparseVec:
        """Query side: 1.0 per unique term (Qdrant multiplies in the IDF)."""
        return _sparse({term_index(t): 1.0 for t in set(self.tokens(text))})

    def document_from(self, properties: Mapping[str, Any]) -> SparseVec:
        """Document vector of the configured ``fields`` of an object's properties."""
        return self.document(field_text(properties, self.settings.fields))


def _sparse(weights: dict[int, float]) -> SparseVec:
    indices = sorted(weights)
    return SparseVec(indices=indices, values=[weights[i] for i in indices])
