"""BM25 as Qdrant sparse vectors (scored inside Qdrant with the IDF modifier).

Two analyzers turn text into terms:

- ``qdrant`` (every collection created since analyzers exist): Qdrant's own BM25 embedder,
  ``qdrant_edge.Bm25``, which computes exactly what a Qdrant server's ``qdrant/bm25`` inference computes:
  a tokenizer (``word`` by default), lowercasing, optional ASCII folding, the language's stopwords and
  Snowball stemmer (English by default), and a 31-bit murmur3 term index. So "Running shoes for the road"
  becomes the terms run, shoe, road, and "sneakers for jogging" no longer matches on "for".
- ``legacy``: the tokenizer polyvec used before, kept so collections written with it keep answering
  queries the same way until they are rebuilt (``polyvec reindex-bm25``). Case-folded runs of Unicode
  letters/digits, no stemming, stopwords only when listed, terms hashed with BLAKE2b to 31 bits.

Scores (Qdrant computes the sum of query_value * document_value * idf over shared term indices)::

    document value  w(t, d) = tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avg_len))
    query value     1 for each unique query term
    idf (Qdrant)    idf(t)  = ln(1 + (N - n(t) + 0.5) / (n(t) + 0.5))
    score(q, d)     = sum over unique t in q and d of idf(t) * w(t, d)

tf = occurrences of term t in d after analysis, dl = number of terms of d after analysis (stopwords
removed), N = points of the collection that have a BM25 vector (objects without any BM25 text get none
and do not count), n(t) = points containing t.

avg_len: a stateless gateway cannot know the corpus average length when a document is inserted.
``avg_len`` is therefore a setting of the collection (default 256 terms, Qdrant's own default);
``reindex-bm25`` measures the corpus mean (:meth:`Bm25Encoder.length`) and rewrites the stored vectors
with it, after which the scores are exactly Okapi BM25 over the analysed corpus.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import qdrant_edge as qe

from gateway.storage.base import SparseVec

ANALYZERS = ("qdrant", "legacy")
DEFAULT_ANALYZER = "qdrant"
DEFAULT_LANGUAGE = "english"
DEFAULT_AVG_LEN = 256.0
TOKENIZERS = {
    "word": qe.TokenizerType.Word,
    "whitespace": qe.TokenizerType.Whitespace,
    "multilingual": qe.TokenizerType.Multilingual,
}
#: Languages with stopword sets (and, for most, a Snowball stemmer): what ``language`` accepts.
STOPWORD_LANGUAGES = {name.lower(): getattr(qe.Language, name) for name in dir(qe.Language)
                      if not name.startswith("_")}
#: Languages with a Snowball stemmer: what ``stemmer`` accepts.
STEMMER_LANGUAGES = {name.lower(): getattr(qe.SnowballLanguage, name) for name in dir(qe.SnowballLanguage)
                     if not name.startswith("_")}
LANGUAGES = tuple(sorted(STOPWORD_LANGUAGES))

# A BM25 with b = 0 and a huge k1 gives each term the value tf * (k1 + 1) / (tf + k1) ~ tf, from which
# tf is recovered exactly: the term counts of the very same analyzer (used to measure lengths).
_COUNT_K = 1e6

_LEGACY_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)
INDEX_BITS = 31
_INDEX_MASK = (1 << INDEX_BITS) - 1


class Bm25SettingsError(ValueError):
    """Invalid BM25 settings; the message starts with the field (``bm25.language: ...``)."""


@dataclass(frozen=True)
class Stopwords:
    """Stopwords: the sets of ``languages`` plus the ``words`` given (both empty: none at all)."""

    languages: tuple[str, ...] = ()
    words: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bm25Settings:
    """BM25 configuration of a collection: indexed fields, analyzer and the BM25 parameters.

    ``stemmer``: True = the language's Snowball stemmer (none for a language without one), False = off,
    a language name = that Snowball stemmer. ``stopwords``: None = the language's set, else
    :class:`Stopwords`. The legacy analyzer uses only ``stopwords.words`` (and k1, b, avg_len).
    """

    fields: list[str] = field(default_factory=list)
    analyzer: str = DEFAULT_ANALYZER
    language: str = DEFAULT_LANGUAGE
    tokenizer: str = "word"
    stemmer: bool | str = True
    stopwords: Stopwords | None = None
    ascii_folding: bool = False
    k1: float = 1.2
    b: float = 0.75
    avg_len: float = DEFAULT_AVG_LEN

    def __post_init__(self) -> None:
        if self.analyzer not in ANALYZERS:
            raise Bm25SettingsError(f"bm25.analyzer: must be one of {', '.join(ANALYZERS)}, "
                                    f"got {self.analyzer!r}")
        if not isinstance(self.k1, int | float) or isinstance(self.k1, bool) or self.k1 < 0:
            raise Bm25SettingsError(f"bm25.k1: must be a number >= 0, got {self.k1!r}")
        if not isinstance(self.b, int | float) or isinstance(self.b, bool) or not 0.0 <= self.b <= 1.0:
            raise Bm25SettingsError(f"bm25.b: must be a number in [0, 1], got {self.b!r}")
        if not isinstance(self.avg_len, int | float) or isinstance(self.avg_len, bool) or self.avg_len <= 0:
            raise Bm25SettingsError(f"bm25.avg_len: must be a number > 0, got {self.avg_len!r}")
        if not all(isinstance(f, str) and f for f in self.fields):
            raise Bm25SettingsError("bm25.fields: must be a list of non-empty field names")
        if self.language not in STOPWORD_LANGUAGES:
            raise Bm25SettingsError(f"bm25.language: unknown language {self.language!r}; one of "
                                    f"{', '.join(LANGUAGES)}")
        if self.tokenizer not in TOKENIZERS:
            raise Bm25SettingsError(f"bm25.tokenizer: must be one of {', '.join(TOKENIZERS)}, "
                                    f"got {self.tokenizer!r}")
        if isinstance(self.stemmer, str) and self.stemmer not in STEMMER_LANGUAGES:
            raise Bm25SettingsError(f"bm25.stemmer: no Snowball stemmer for {self.stemmer!r}; one of "
                                    f"{', '.join(sorted(STEMMER_LANGUAGES))} (or true / false)")
        if self.stopwords is not None:
            for lang in self.stopwords.languages:
                if lang not in STOPWORD_LANGUAGES:
                    raise Bm25SettingsError(f"bm25.stopwords: no stopword set for {lang!r}; one of "
                                            f"{', '.join(LANGUAGES)}")


def qdrant_config(settings: Bm25Settings, *, k1: float | None = None,
                  b: float | None = None) -> qe.Bm25Config:
    """The ``qdrant_edge.Bm25Config`` of these settings (``k1``/``b`` override the scoring parameters)."""
    s = settings
    kwargs: dict[str, Any] = {
        "k": s.k1 if k1 is None else k1, "b": s.b if b is None else b, "avg_len": float(s.avg_len),
        "tokenizer": TOKENIZERS[s.tokenizer], "language": s.language, "lowercase": True,
        "ascii_folding": bool(s.ascii_folding),
    }
    if s.stemmer is False:
        kwargs["stemmer"] = qe.DisabledStemmer()
    elif isinstance(s.stemmer, str):
        kwargs["stemmer"] = qe.SnowballParams(STEMMER_LANGUAGES[s.stemmer])
    if s.stopwords is not None:
        kwargs["stopwords"] = qe.StopwordsSet(
            languages={STOPWORD_LANGUAGES[lang] for lang in s.stopwords.languages},
            custom=set(s.stopwords.words))
    return qe.Bm25Config(**kwargs)


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
    """Turns documents and queries into sparse vectors for a Qdrant sparse vector with ``Modifier.IDF``.

    Use :func:`make_encoder`, which picks the analyzer of the settings.
    """

    def __init__(self, settings: Bm25Settings) -> None:
        self.settings = settings

    def term_counts(self, text: str) -> dict[int, int]:
        """Term index -> occurrences in ``text`` after analysis (stopwords dropped, stems merged)."""
        raise NotImplementedError

    def document(self, text: str) -> SparseVec:
        raise NotImplementedError

    def query(self, text: str) -> SparseVec:
        raise NotImplementedError

    def length(self, text: str) -> int:
        """Number of terms of ``text`` after analysis (BM25's document length)."""
        return sum(self.term_counts(text).values())

    def document_from(self, properties: Mapping[str, Any]) -> SparseVec:
        """Document vector of the configured ``fields`` of an object's properties."""
        return self.document(field_text(properties, self.settings.fields))

    def length_from(self, properties: Mapping[str, Any]) -> int:
        return self.length(field_text(properties, self.settings.fields))


class QdrantBm25Encoder(Bm25Encoder):
    """Qdrant's BM25 embedder (``qdrant_edge.Bm25``): the same vectors as a Qdrant server's qdrant/bm25."""

    def __init__(self, settings: Bm25Settings) -> None:
        super().__init__(settings)
        try:
            self._model = qe.Bm25(qdrant_config(settings))
            self._counter = qe.Bm25(qdrant_config(settings, k1=_COUNT_K, b=0.0))
        except ValueError as exc:
            raise Bm25SettingsError(f"bm25: {exc}") from None

    def document(self, text: str) -> SparseVec:
        return _from_qdrant(self._model.embed_document(text))

    def query(self, text: str) -> SparseVec:
        return _from_qdrant(self._model.embed_query(text))

    def term_counts(self, text: str) -> dict[int, int]:
        vec = self._counter.embed_document(text)
        # w = tf (k + 1) / (tf + k)  =>  tf = w k / (k + 1 - w)
        return {int(i): round(w * _COUNT_K / (_COUNT_K + 1.0 - w))
                for i, w in zip(vec.indices, vec.values, strict=True)}


def _from_qdrant(vec: qe.SparseVector) -> SparseVec:
    pairs = sorted(zip(vec.indices, vec.values, strict=True))
    return SparseVec(indices=[int(i) for i, _ in pairs], values=[float(v) for _, v in pairs])


def legacy_tokenize(text: str, stopwords: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """The legacy analyzer: case-folded runs of Unicode letters/digits, in order, stopwords dropped."""
    tokens = _LEGACY_TOKEN_RE.findall(text.casefold())
    if stopwords:
        tokens = [t for t in tokens if t not in stopwords]
    return tokens


def legacy_term_index(term: str) -> int:
    """The legacy analyzer's stable 31-bit index of ``term`` (blake2b)."""
    digest = hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest[:4], "big") & _INDEX_MASK


class LegacyBm25Encoder(Bm25Encoder):
    """The analyzer of collections created before analyzers existed (see the module docstring)."""

    def __init__(self, settings: Bm25Settings) -> None:
        super().__init__(settings)
        words = settings.stopwords.words if settings.stopwords is not None else ()
        self._stopwords = frozenset(w.casefold() for w in words)

    def term_counts(self, text: str) -> dict[int, int]:
        counts: dict[int, int] = {}
        for term, tf in Counter(legacy_tokenize(text, self._stopwords)).items():
            idx = legacy_term_index(term)
            counts[idx] = counts.get(idx, 0) + tf
        return counts

    def document(self, text: str) -> SparseVec:
        tokens = legacy_tokenize(text, self._stopwords)
        s = self.settings
        norm = s.k1 * (1.0 - s.b + s.b * len(tokens) / s.avg_len)
        weights: dict[int, float] = {}
        for term, tf in Counter(tokens).items():
            idx = legacy_term_index(term)
            weights[idx] = weights.get(idx, 0.0) + tf * (s.k1 + 1.0) / (tf + norm)
        return _sparse(weights)

    def query(self, text: str) -> SparseVec:
        return _sparse({legacy_term_index(t): 1.0 for t in set(legacy_tokenize(text, self._stopwords))})


def _sparse(weights: dict[int, float]) -> SparseVec:
    indices = sorted(weights)
    return SparseVec(indices=indices, values=[weights[i] for i in indices])


def make_encoder(settings: Bm25Settings | None = None) -> Bm25Encoder:
    """The encoder of ``settings``' analyzer (default: Qdrant's, English)."""
    settings = settings or Bm25Settings()
    if settings.analyzer == "legacy":
        return LegacyBm25Encoder(settings)
    return QdrantBm25Encoder(settings)


def mean_length(encoder: Bm25Encoder, texts: Iterable[str]) -> float | None:
    """Mean analysed length of the ``texts`` that have at least one term (None when none has)."""
    total = count = 0
    for text in texts:
        n = encoder.length(text)
        if n:
            total += n
            count += 1
    return total / count if count else None
