"""Collection definitions: what a collection stores and which inference service vectorizes it.

```json
{
  "name": "products",
  "vectorizers": {
    "clip": {"model": "clip", "text_fields": ["title"], "image_fields": ["photo"],
             "weights": {"title": 1, "photo": 2}}
  },
  "sparse_vectorizers": {
    "splade": {"model": "splade", "text_fields": ["title", "description"]}
  },
  "bm25": {"fields": ["title", "description"], "k1": 1.2, "b": 0.75},
  "distance": "cosine"
}
```

Each vectorizer is a named dense vector; its ``model`` is a name the gateway resolves
through ``MODELS``, or ``inference_url`` is a gRPC address given directly (only one the
gateway's INFERENCE_URL_HOSTS allows).  A vectorizer with neither (only ``dimensions``)
holds vectors the user sends.  Unless ``bm25.fields`` is given, BM25 indexes every text
field the vectorizers read (also when other BM25 settings are given, e.g.
``"bm25": {"avg_len": 8}``); only an explicit ``"bm25": {"fields": []}`` turns BM25 off.

Each sparse vectorizer is a named sparse vector computed by a sparse model (neural sparse /
SPLADE) from its text fields, stored without Qdrant's IDF modifier (the weights are the
model's); with ``query_model`` (doc-only mode) queries go through that model instead,
typically an OpenSearch SPARSE_TOKENIZE model over the same vocabulary.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from gateway.bm25 import (
    DEFAULT_AVG_LEN,
    DEFAULT_LANGUAGE,
    STEMMER_LANGUAGES,
    STOPWORD_LANGUAGES,
    Bm25Settings,
    Bm25SettingsError,
    Stopwords,
    make_encoder,
)
from gateway.errors import BadRequest
from gateway.fields import TYPE_NAMES, FieldType, unknown_type
from services.input_rules import find_invalid_text

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}(\.[A-Za-z_][A-Za-z0-9_-]{0,127})*$")
#: Name of the sparse (BM25) vector in storage; no dense vector may use it.
BM25_VECTOR = "bm25"
#: Prefix reserved for the gateway's own collections and payload keys.
RESERVED_PREFIX = "_polyvec"
Distance = Literal["cosine", "dot", "euclid"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def invalid(model: str, loc: tuple[str | int, ...], message: str, value: Any = None) -> ValidationError:
    """A validation error of a whole-model check, placed at the field it is about (``loc``), so the
    caller is told which field to fix rather than "body"."""
    return ValidationError.from_exception_data(model, [InitErrorDetails(
        type=PydanticCustomError("value_error", "{message}", {"message": message}), loc=loc, input=value)])


def _check_field_names(names: list[str]) -> list[str]:
    seen = set()
    for name in names:
        if not FIELD_RE.match(name):
            raise ValueError(f"{name!r} is not a valid field name (letters, digits, _ and -, not starting "
                             "with a digit; dots address nested objects)")
        if name.lower().startswith(RESERVED_PREFIX):
            raise ValueError(f"field names starting with {RESERVED_PREFIX!r} are reserved")
        if name in seen:
            raise ValueError(f"field {name!r} is listed twice")
        seen.add(name)
    return names


def grpc_address(url: str | None) -> str | None:
    """An inference service's gRPC address ``host:port`` (a grpc:// or http:// prefix is dropped)."""
    if url is None:
        return None
    url = url.strip()
    for scheme in ("grpc://", "http://"):
        if url.startswith(scheme):
            url = url[len(scheme):]
    host, sep, port = url.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be a gRPC address host:port, not {url!r}")
    return url


class SparseVectorizerConfig(_Strict):
    """One named sparse vector computed by a sparse model (``VectorizeSparse``) from text fields.

    Each field is encoded on its own; the object's vector keeps, per token, the largest weight any of
    its fields gave it (the max-pooling SPLADE applies over tokens, applied over fields). An object
    without any of the fields gets no sparse vector (and is not found by this vector's searches).
    """

    model: str | None = Field(None, description="sparse model name resolved through the gateway's MODELS")
    inference_url: str | None = Field(None, description="gRPC address host:port of a sparse model service")
    text_fields: list[str] = Field(..., min_length=1, description="text properties encoded")
    query_model: str | None = Field(
        None, description="doc-only mode: queries are encoded by this model (e.g. an OpenSearch "
                          "SPARSE_TOKENIZE model over the same vocabulary) instead of model")
    query_inference_url: str | None = Field(None, description="like query_model, by gRPC address")

    @field_validator("text_fields")
    @classmethod
    def _fields(cls, names: list[str]) -> list[str]:
        return _check_field_names(names)

    @field_validator("inference_url", "query_inference_url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        return grpc_address(url)

    @model_validator(mode="after")
    def _consistent(self) -> SparseVectorizerConfig:
        me = "SparseVectorizerConfig"
        if self.model is None and self.inference_url is None:
            raise invalid(me, ("model",), "give model or inference_url (the sparse model that encodes "
                                          "documents)")
        if self.model is not None and self.inference_url is not None:
            raise invalid(me, ("inference_url",), "give either model or inference_url, not both")
        if self.query_model is not None and self.query_inference_url is not None:
            raise invalid(me, ("query_inference_url",), "give either query_model or query_inference_url, "
                                                        "not both")
        return self

    @property
    def has_query_model(self) -> bool:
        return self.query_model is not None or self.query_inference_url is not None


class VectorizerConfig(_Strict):
    """One named dense vector and how it is computed."""

    model: str | None = Field(None, description="model name resolved through the gateway's MODELS setting")
    inference_url: str | None = Field(None, description="gRPC address host:port of an inference service")
    text_fields: list[str] = Field(default_factory=list, description="properties embedded as text")
    image_fields: list[str] = Field(default_factory=list, description="properties holding base64 images")
    weights: dict[str, Annotated[float, Field(strict=True)]] = Field(
        default_factory=dict, description="per-field weights of the mean (default 1 each)")
    dimensions: int | None = Field(None, ge=1, le=65536, strict=True,
                                   description="vector length (else learned from the inference service)")
    distance: Distance | None = Field(None, description="overrides the collection's distance for this vector")

    @field_validator("text_fields", "image_fields")
    @classmethod
    def _fields(cls, names: list[str]) -> list[str]:
        return _check_field_names(names)

    @field_validator("inference_url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        return grpc_address(url)

    @model_validator(mode="after")
    def _consistent(self) -> VectorizerConfig:
        me = "VectorizerConfig"
        if self.model is not None and self.inference_url is not None:
            raise invalid(me, ("inference_url",), "give either model or inference_url, not both")
        uses_service = self.model is not None or self.inference_url is not None
        if uses_service and not (self.text_fields or self.image_fields):
            raise invalid(me, ("text_fields",), "a vectorizer with a model needs text_fields or image_fields")
        if not uses_service:
            if self.text_fields or self.image_fields:
                where = "text_fields" if self.text_fields else "image_fields"
                raise invalid(me, (where,), "text_fields/image_fields need a model or inference_url to "
                                            "embed them")
            if self.dimensions is None:
                raise invalid(me, ("dimensions",), "a vectorizer without model or inference_url "
                                                   "(user-supplied vectors) needs dimensions")
        both = set(self.text_fields) & set(self.image_fields)
        if both:
            raise invalid(me, ("image_fields",), f"field(s) {sorted(both)} are listed as both text and image "
                                                 "fields")
        known = set(self.text_fields) | set(self.image_fields)
        for name, weight in self.weights.items():
            if name not in known:
                raise invalid(me, ("weights", name), f"{name!r} is not one of the text/image fields")
            if not (weight > 0 and math.isfinite(weight)):
                raise invalid(me, ("weights", name), f"must be a finite number > 0, not {weight}")
        return self

    @property
    def uses_service(self) -> bool:
        return self.model is not None or self.inference_url is not None

    def weight(self, field: str) -> float:
        return float(self.weights.get(field, 1.0))


class StopwordsConfig(_Strict):
    """Both kinds of stopwords: the sets of ``languages`` plus your own ``words``."""

    languages: list[str] = Field(default_factory=list, description="languages whose stopword sets apply")
    words: list[str] = Field(default_factory=list, description="more words to leave out")

    @field_validator("languages")
    @classmethod
    def _languages(cls, names: list[str]) -> list[str]:
        for name in names:
            _check_language(name, STOPWORD_LANGUAGES, "stopword set")
        return names


def _check_language(name: str, known: dict[str, Any], what: str) -> str:
    if name not in known:
        raise ValueError(f"no {what} for {name!r}; one of {', '.join(sorted(known))}")
    return name


class Bm25Config(_Strict):
    """BM25 over the concatenated text of ``fields`` (the README's BM25 section gives the analyzers and
    the formula)."""

    fields: list[str] | None = Field(None, description="text properties indexed for BM25 (default: every "
                                     "text field of the vectorizers; [] turns BM25 off)")
    analyzer: Literal["qdrant", "legacy"] = Field(
        "qdrant", description="qdrant: Qdrant's BM25 analyzer (language, stemming, stopwords); legacy: the "
                              "tokenizer of collections created before analyzers existed")
    language: str | None = Field(None, description="language of the text (default english): its stopwords "
                                                   "and Snowball stemmer")
    tokenizer: Literal["word", "whitespace", "multilingual"] | None = Field(
        None, description="word (default): split on non-alphanumerics; whitespace; multilingual (CJK...)")
    stemmer: bool | str | None = Field(None, description="true (default): the language's Snowball stemmer; "
                                                         "false: none; or a language name")
    stopwords: str | list[str] | StopwordsConfig | None = Field(
        None, description="a language name, a list of words, or {languages, words}; default: the "
                          "language's set; [] for none")
    ascii_folding: bool | None = Field(None, description="fold accents to ASCII (café = cafe)")
    k1: float = Field(1.2, ge=0, le=10, strict=True)
    b: float = Field(0.75, ge=0, le=1, strict=True)
    avg_len: float | None = Field(None, gt=0, strict=True, allow_inf_nan=False,
                                  description="mean document length in terms (BM25 length "
                                  "normalisation; default 256; reindex-bm25 measures it)")

    @field_validator("fields")
    @classmethod
    def _fields(cls, names: list[str] | None) -> list[str] | None:
        return None if names is None else _check_field_names(names)

    @field_validator("language", "tokenizer", "stemmer", "ascii_folding", "stopwords", mode="before")
    @classmethod
    def _analyzer_option(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name
        if value is None:
            return None
        if info.data.get("analyzer") == "legacy" and not (name == "stopwords" and isinstance(value, list)):
            what = "stopwords other than a list of words" if name == "stopwords" else name
            raise ValueError(f"the legacy analyzer has no {what}; use analyzer 'qdrant'")
        if name == "language":
            if not isinstance(value, str):
                raise ValueError("must be a language name")
            _check_language(value, STOPWORD_LANGUAGES, "analyzer")
        elif name == "stemmer":
            if isinstance(value, str):
                _check_language(value, STEMMER_LANGUAGES, "Snowball stemmer")
            elif not isinstance(value, bool):
                raise ValueError("must be true, false or a language name")
        elif name == "stopwords":
            if isinstance(value, str):
                _check_language(value, STOPWORD_LANGUAGES, "stopword set")
            elif isinstance(value, list):
                if not all(isinstance(w, str) and w for w in value):
                    raise ValueError("a list of stopwords holds non-empty strings")
            elif isinstance(value, dict):
                try:
                    return StopwordsConfig.model_validate(value)
                except ValidationError as exc:
                    err = bad_request_from(exc)
                    raise ValueError(f"{err.field}: {err.detail}") from None
            elif not isinstance(value, StopwordsConfig):
                raise ValueError("must be a language name, a list of words or {languages, words}")
        return value

    @model_validator(mode="after")
    def _default_language(self) -> Bm25Config:
        if self.analyzer == "qdrant" and self.language is None:
            self.language = DEFAULT_LANGUAGE
        try:
            make_encoder(self.settings())  # the analyzer accepts the combination
        except Bm25SettingsError as exc:
            raise ValueError(str(exc)) from None
        return self

    def settings(self) -> Bm25Settings:
        """The encoder settings of this configuration."""
        sw = self.stopwords
        stopwords: Stopwords | None
        if sw is None:
            stopwords = Stopwords() if self.analyzer == "legacy" else None
        elif isinstance(sw, str):
            stopwords = Stopwords(languages=(sw,))
        elif isinstance(sw, list):
            stopwords = Stopwords(words=tuple(sw))
        else:
            stopwords = Stopwords(languages=tuple(sw.languages), words=tuple(sw.words))
        return Bm25Settings(
            fields=list(self.fields or []), analyzer=self.analyzer,
            language=self.language or DEFAULT_LANGUAGE,
            tokenizer=self.tokenizer or "word", stemmer=True if self.stemmer is None else self.stemmer,
            stopwords=stopwords, ascii_folding=bool(self.ascii_folding), k1=self.k1, b=self.b,
            avg_len=DEFAULT_AVG_LEN if self.avg_len is None else self.avg_len)


class FieldDeclaration(_Strict):
    """A declared field: its type (``keyword``, ``float``, ``text``, ``keyword[]``, ...) and, for text, the
    language of its full-text index."""

    type: str = Field(..., description="keyword | integer | float | bool | datetime | uuid | text | geo, "
                                       "or T[] for a list of T")
    language: str | None = Field(None, description="text fields: stopwords and stemmer of this language")

    @field_validator("type")
    @classmethod
    def _type(cls, name: str) -> str:
        if name not in TYPE_NAMES:
            raise ValueError(unknown_type(name))
        return name

    @field_validator("language")
    @classmethod
    def _language(cls, name: str | None, info: ValidationInfo) -> str | None:
        if name is None:
            return None
        if not str(info.data.get("type", "")).startswith("text"):
            raise ValueError("only text fields take a language")
        if name not in STOPWORD_LANGUAGES and name not in STEMMER_LANGUAGES:
            known = sorted(set(STOPWORD_LANGUAGES) | set(STEMMER_LANGUAGES))
            raise ValueError(f"unknown language {name!r}; one of {', '.join(known)}")
        return name

    def field_type(self) -> FieldType:
        return FieldType.parse(self.type, self.language)


class FieldDeclarationError(ValueError):
    """A bad ``fields`` entry; ``key`` is the field it is about (None: the whole ``fields`` object)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    @property
    def where(self) -> str:
        """The request field to name: ``fields`` or ``fields.<key>``."""
        return "fields" if self.key is None else f"fields.{self.key}"


def parse_field_declarations(value: Any) -> Any:
    """``{"price": "float"}`` -> ``{"price": {"type": "float"}}``; checks the field names, and the type of
    the shorthand (a bad ``{"type": ...}`` is named by FieldDeclaration as ``fields.<key>.type``).

    Raises FieldDeclarationError naming the field it is about."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FieldDeclarationError('must be an object: {"field": "type" or {"type": ..., "language": ...}}')
    names = list(value)
    for name in names:
        try:
            _check_field_names([name])
        except ValueError as exc:
            raise FieldDeclarationError(str(exc)) from None  # the key itself is bad: name the object
        given = value[name]
        if not isinstance(given, str | dict):
            raise FieldDeclarationError('give a type name or {"type": ..., "language": ...}', name)
        if isinstance(given, str) and given not in TYPE_NAMES:
            raise FieldDeclarationError(unknown_type(given), name)
    for name in names:
        for other in names:
            if other.startswith(name + "."):
                raise FieldDeclarationError(f"{other!r} is inside {name!r}: a field cannot be both a value "
                                            "and an object", other)
    return {k: ({"type": v} if isinstance(v, str) else v) for k, v in value.items()}


class CollectionDefinition(_Strict):
    name: str = Field(..., description="letters, digits, _ and -, starting with a letter, at most 63 chars")
    vectorizers: dict[str, VectorizerConfig] = Field(default_factory=dict)
    sparse_vectorizers: dict[str, SparseVectorizerConfig] = Field(
        default_factory=dict, description="named sparse vectors computed by sparse models (neural sparse)")
    bm25: Bm25Config | None = None
    distance: Distance = "cosine"
    shard_number: int | None = Field(None, ge=1, le=1024, strict=True)
    replication_factor: int | None = Field(None, ge=1, le=64, strict=True)
    hnsw_m: int | None = Field(None, ge=0, le=512, strict=True)
    hnsw_ef_construct: int | None = Field(None, ge=4, le=4096, strict=True)
    fields: dict[str, FieldDeclaration] = Field(
        default_factory=dict, description="declared field types: each gets a payload index, imports check "
                                          "them, and filters may only name declared fields")

    @model_validator(mode="before")
    @classmethod
    def _valid_text(cls, data: Any) -> Any:
        # The one text rule (services.input_rules) for every name and string of a definition, before any
        # part of it reaches the BM25 analyzer or the engine (which answer a lone surrogate with codec text).
        bad = find_invalid_text(data) if isinstance(data, dict) else None
        if bad is not None:
            where, message = bad
            raise invalid("CollectionDefinition", tuple(where.split(".")), message)
        return data

    @field_validator("fields", mode="before")
    @classmethod
    def _declarations(cls, value: Any) -> Any:
        try:
            return parse_field_declarations(value)
        except FieldDeclarationError as exc:
            if exc.key is None:
                raise ValueError(str(exc)) from None
            raise invalid("CollectionDefinition", (exc.key,), str(exc), value) from None  # fields.<key>

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not NAME_RE.match(name):
            raise ValueError(f"{name!r} is not a valid collection name (letters, digits, _ and -, "
                             "starting with a letter, at most 63 characters)")
        if name.lower().startswith(RESERVED_PREFIX):
            raise ValueError(f"names starting with {RESERVED_PREFIX!r} are reserved")
        return name

    @field_validator("vectorizers", "sparse_vectorizers")
    @classmethod
    def _vector_names(cls, vectorizers: dict[str, Any]) -> dict[str, Any]:
        for name in vectorizers:
            if not NAME_RE.match(name):
                raise ValueError(f"{name!r} is not a valid vector name (letters, digits, _ and -, "
                                 "starting with a letter)")
            if name == BM25_VECTOR:
                raise ValueError(f"{BM25_VECTOR!r} is reserved for the sparse BM25 vector")
        return vectorizers

    @model_validator(mode="after")
    def _defaults(self) -> CollectionDefinition:
        for name in self.sparse_vectorizers:
            if name in self.vectorizers:
                raise invalid("CollectionDefinition", ("sparse_vectorizers", name),
                              f"{name!r} is also a dense vectorizer: vector names must be distinct")
        if self.bm25 is None:
            self.bm25 = Bm25Config()
        if self.bm25.fields is None:  # not given: every text field of the vectorizers, in order
            fields: list[str] = []
            text_fields = [v.text_fields for v in self.vectorizers.values()]
            text_fields += [v.text_fields for v in self.sparse_vectorizers.values()]
            for names in text_fields:
                fields += [f for f in names if f not in fields]
            self.bm25.fields = fields
        if not self.vectorizers and not self.sparse_vectorizers and not self.bm25.fields:
            raise invalid("CollectionDefinition", ("vectorizers",),
                          "a collection needs at least one vectorizer, sparse vectorizer or bm25 fields")
        return self

    # -- derived --------------------------------------------------------------------------------------------
    @property
    def has_bm25(self) -> bool:
        return bool(self.bm25 and self.bm25.fields)

    def default_vector(self) -> str | None:
        return next(iter(self.vectorizers), None)

    def default_sparse_vector(self) -> str | None:
        return next(iter(self.sparse_vectorizers), None)

    def vector_distance(self, vector: str) -> str:
        return self.vectorizers[vector].distance or self.distance

    def field_types(self) -> dict[str, FieldType]:
        """Declared fields and their types (empty: the collection declares none)."""
        return {name: decl.field_type() for name, decl in self.fields.items()}

    def vectorized_fields(self) -> set[str]:
        """Every property whose value feeds a vector (dense, sparse or BM25)."""
        out: set[str] = set(self.bm25.fields or [] if self.bm25 else [])
        for vec in self.vectorizers.values():
            out |= set(vec.text_fields) | set(vec.image_fields)
        for sparse in self.sparse_vectorizers.values():
            out |= set(sparse.text_fields)
        return out


def loc_to_field(loc: tuple[Any, ...], prefix: str = "") -> str:
    """Pydantic error location -> dotted field name (``vectorizers.clip.text_fields.0``)."""
    parts = [str(p) for p in loc if not (isinstance(p, str) and p.startswith(("function-", "literal[")))]
    path = ".".join(parts)
    if prefix:
        return f"{prefix}.{path}" if path else prefix
    return path or "body"


def bad_request_from(error: ValidationError, prefix: str = "") -> BadRequest:
    """The first pydantic error as a BadRequest naming its field."""
    first = error.errors()[0]
    message = first.get("msg", "invalid value")
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    return BadRequest(loc_to_field(tuple(first.get("loc", ())), prefix), message)


def parse_definition(data: CollectionDefinition | dict) -> CollectionDefinition:
    """Validate a definition; raises BadRequest naming the first bad field."""
    if isinstance(data, CollectionDefinition):
        return data
    if not isinstance(data, dict):
        raise BadRequest("body", "a collection definition must be a JSON object")
    try:
        return CollectionDefinition.model_validate(data)
    except ValidationError as exc:
        raise bad_request_from(exc) from None
