"""Request bodies of the object and search endpoints (validated here so both fronts share the rules)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.definitions import FIELD_RE, bad_request_from, invalid
from services.input_rules import check_text

MAX_LIMIT = 10_000
MAX_FACET_LIMIT = 1_000
DEFAULT_MMR_CANDIDATES = 100
QUERY_KINDS = ("near_text", "near_image", "near_vector", "bm25", "neural_sparse", "hybrid")
DENSE_KINDS = ("near_text", "near_image", "near_vector")
#: A JSON number: an int or a float, not a string or a boolean that happens to convert.
Number = Annotated[float, Field(strict=True)]


def _valid_text(value: Any) -> Any:
    if isinstance(value, str):
        check_text(value)  # the text rule both services share (InputError is a ValueError)
    return value


#: A query text: valid Unicode (no lone surrogate), by the rule the inference service applies too.
#: Checked before pydantic's own str check, which refuses a surrogate with a vaguer message.
Text = Annotated[str, BeforeValidator(_valid_text)]


def _property_names(model: str, names: list[str] | None) -> list[str] | None:
    """The properties to return: each a property name (an empty or odd one would reach the store)."""
    for i, name in enumerate(names or ()):
        if not FIELD_RE.match(name):
            raise invalid(model, (i,),  # placed under "properties" by pydantic
                          f"{name!r} is not a property name (letters, digits, _ and -; dots for nested)")
    return names


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ObjectIn(_Strict):
    id: Text | None = Field(None, description="your id (kept; a UUID is derived from it when it is not one)")
    properties: dict[str, Any] = Field(default_factory=dict)
    vectors: dict[str, list[Number]] | None = Field(None, description="your own vectors, by vector name")

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value


class ObjectPut(_Strict):
    properties: dict[str, Any] = Field(default_factory=dict)
    vectors: dict[str, list[Number]] | None = None


class ImportRequest(_Strict):
    objects: list[Any] = Field(..., description="objects: {id?, properties, vectors?} each")


class NearText(_Strict):
    query: Text = Field(..., min_length=1)


class NearImage(_Strict):
    image: str = Field(..., min_length=1,
                       description="base64 image (or a data: URL), or an http(s) URL the gateway fetches")


class NearVector(_Strict):
    vector: list[Number] = Field(..., min_length=1)


class Bm25Query(_Strict):
    query: Text = Field(..., min_length=1)


class NeuralSparseQuery(_Strict):
    query: Text = Field(..., min_length=1)
    vector: str | None = Field(None, description="which sparse vectorizer (default: the collection's first)")


class HybridQuery(_Strict):
    query: Text = Field(..., min_length=1)
    alpha: float | None = Field(None, strict=True, description="dense + BM25 shorthand: 1 = vector only, "
                                                               "0 = BM25 only (default 0.5)")
    weights: dict[str, Number] | None = Field(
        None, description="two or three lists by name: a dense vectorizer, bm25, a sparse vectorizer")
    fusion: Literal["rrf", "relative_score"] = "rrf"

    @field_validator("alpha", "weights", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:  # left out is fine; an explicit null is a mistake
            raise ValueError("must not be null (leave it out for the default)")
        return value

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if not 2 <= len(value) <= 3:
            raise ValueError(f"name two or three lists (a dense vectorizer, bm25, a sparse vectorizer), "
                             f"not {len(value)}")
        for name, weight in value.items():
            if not (weight >= 0.0) or weight == float("inf"):
                raise ValueError(f"the weight of {name!r} must be a finite number >= 0, not {weight}")
        if not any(w > 0 for w in value.values()):
            raise ValueError("at least one weight must be above 0")
        return value

    @model_validator(mode="after")
    def _alpha_or_weights(self) -> HybridQuery:
        if self.alpha is not None and self.weights is not None:
            raise ValueError("give alpha (the dense + BM25 shorthand) or weights, not both")
        return self

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, value: float | None) -> float | None:
        if value is None:
            return None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"must be in [0, 1], not {value}")
        return value


class OrderByIn(_Strict):
    field: str = Field(..., min_length=1, description="a declared integer, float or datetime field")
    direction: Literal["asc", "desc"] = "asc"


class MmrIn(_Strict):
    lambda_: float = Field(0.5, alias="lambda", ge=0, le=1, strict=True,
                           description="1 = pure relevance, 0 = pure diversity")
    candidates: int | None = Field(None, ge=1, le=MAX_LIMIT, strict=True,
                                   description="how many nearest hits to choose from (default: max(100, "
                                               "limit + offset))")


class Diversity(_Strict):
    mmr: MmrIn


class SearchRequest(_Strict):
    near_text: NearText | None = None
    near_image: NearImage | None = None
    near_vector: NearVector | None = None
    bm25: Bm25Query | None = None
    neural_sparse: NeuralSparseQuery | None = None
    hybrid: HybridQuery | None = None
    vector: str | None = Field(None, description="which named vector (default: the collection's first)")
    filter: dict[str, Any] | None = Field(None, description="payload filter (see docs)")
    limit: int = Field(10, ge=1, le=MAX_LIMIT, strict=True)
    offset: int = Field(0, ge=0, le=MAX_LIMIT, strict=True)
    properties: list[str] | None = Field(None, description="properties to return (default: all)")
    order_by: OrderByIn | None = Field(None, description="browse without a query: order by this field")
    diversity: Diversity | None = Field(None, description="near_text / near_image / near_vector: MMR")

    @field_validator("properties")
    @classmethod
    def _properties(cls, names: list[str] | None) -> list[str] | None:
        return _property_names("SearchRequest", names)

    @model_validator(mode="after")
    def _one_kind(self) -> SearchRequest:
        given = [k for k in QUERY_KINDS if getattr(self, k) is not None]
        if len(given) > 1:
            raise invalid("SearchRequest", ("|".join(QUERY_KINDS),),
                          f"give exactly one of {', '.join(QUERY_KINDS)} (got {', '.join(given)})")
        if not given and self.filter is None and self.order_by is None:
            raise invalid("SearchRequest", ("|".join(QUERY_KINDS),),
                          f"give exactly one of {', '.join(QUERY_KINDS)}, or browse with filter / order_by")
        return self

    @property
    def kind(self) -> str:
        """The query kind, or "browse" for a search without a query (filter and/or order_by only)."""
        return next((k for k in QUERY_KINDS if getattr(self, k) is not None), "browse")


class FacetsRequest(_Strict):
    field: str = Field(..., min_length=1, description="a declared keyword, integer, bool or uuid field")
    filter: dict[str, Any] | None = Field(None, description="count only objects matching this filter")
    limit: int = Field(10, ge=1, le=MAX_FACET_LIMIT, strict=True,
                       description="how many values (most frequent first)")
    exact: bool = Field(False, strict=True,
                        description="exact counts (else they may be estimated on large collections)")


class CollectionPatch(_Strict):
    fields: dict[str, Any] = Field(..., description="fields to declare (existing ones unchanged)")


class ReindexBm25Request(_Strict):
    avg_len: float | None = Field(None, gt=0, strict=True, allow_inf_nan=False,
                                  description="use this mean length (default: measured)")
    bm25: dict[str, Any] | None = Field(None, description="analyzer settings to change (language, stemmer, "
                                                          "stopwords, ...); the analyzer becomes qdrant")


class ScrollRequest(_Strict):
    filter: dict[str, Any] | None = Field(None, description="payload filter (see docs)")
    limit: int = Field(100, ge=1, strict=True, description="objects per page (at most MAX_PAGE_SIZE)")
    cursor: str | None = Field(None, description="next_cursor of the previous page; unset: the first page")
    properties: list[str] | None = Field(None, description="properties to return (default: all)")
    with_vectors: StrictBool = False

    @field_validator("properties")
    @classmethod
    def _properties(cls, names: list[str] | None) -> list[str] | None:
        return _property_names("ScrollRequest", names)


class CountRequest(_Strict):
    filter: dict[str, Any] | None = Field(None, description="payload filter (see docs); unset: every object")
    exact: StrictBool = Field(True, description="false: the store's fast estimate")


class DeleteRequest(_Strict):
    filter: dict[str, Any] | None = Field(None, description="delete the objects matching this filter")
    ids: list[Text] | None = Field(None, description="or delete these objects (your ids)")
    all: StrictBool = Field(False, description="confirms a delete that matches every object")

    @field_validator("ids")
    @classmethod
    def _ids(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("must not be empty")
            for i, item in enumerate(value):
                if not item.strip():
                    raise ValueError(f"ids[{i}] must not be empty")
        return value


class BatchSearchRequest(_Strict):
    searches: list[Any] = Field(..., min_length=1, description="search requests, each like POST .../search")


def parse(model: type[BaseModel], data: Any, prefix: str = "") -> Any:
    """Validate ``data`` (a dict or an instance) into ``model``; BadRequest naming the field otherwise."""
    if isinstance(data, model):
        return data
    from gateway.errors import BadRequest

    if not isinstance(data, dict):
        raise BadRequest(prefix or "body", "must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise bad_request_from(exc, prefix) from None
