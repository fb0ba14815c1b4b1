"""The gateway's OpenAPI document (``/openapi.json``) and its Swagger UI (``/docs``), served offline.

FastAPI derives the request bodies from the pydantic models of the routes; this module completes the
document with what the routes really answer:

* a response model for every route (``RESPONSES``; routes without one fail tests/test_openapi.py);
* the errors each route really returns, as ``{error, field}`` (400, 401, 404, 409, 413, 429) or
  ``{error, service}`` (503: the inference service or Qdrant that did not answer), and no phantom 422
  (bad input is a 400 naming the field);
* the API keys as security schemes (``Authorization: Bearer KEY`` and ``x-api-key``);
* the README's quick-start requests and answers as examples.

``/docs`` loads Swagger UI's script and style from the gateway itself (the swagger-ui-py package ships
them with their Apache-2.0 license), so it works without internet access.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import GatewayError

DOCS_STATIC = "/docs/static"


# -- what the routes answer ------------------------------------------------------------------------

class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Error(BaseModel):
    """A request the gateway refuses; ``field`` names the offending part of the request when there is one."""

    error: str = Field(examples=["filter.price.gte: must be a number"])
    field: str | None = Field(default=None, examples=["filter.price.gte"])


class ServiceError(BaseModel):
    """A service the request needs did not answer in time: an inference service or Qdrant."""

    error: str = Field(examples=["inference service 10.0.0.7:50051 is unavailable: DEADLINE_EXCEEDED"])
    service: str = Field(examples=["10.0.0.7:50051"])


class OverloadedError(BaseModel):
    """Too much work for a model now; nothing was written, the same request may be sent again after
    ``retry_after_s`` seconds (also in the ``Retry-After`` header)."""

    error: str = Field(examples=["inference service for model 'clip' at 10.0.0.7:50051 is overloaded: 68 "
                                 "requests are already using or waiting for it (INFERENCE_MAX_WAITING); "
                                 "retry in 1 s"])
    service: str = Field(examples=["inference service for model 'clip' at 10.0.0.7:50051"])
    retry_after_s: int = Field(examples=[1])


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(_Open):
    """Whether the gateway can serve: its storage reachable, and the state of every model it knows."""

    ready: bool
    storage: str
    models: dict[str, str] = Field(default_factory=dict)


class Collection(_Open):
    """A collection's definition as stored, with each vectorizer's dimensions and modalities (and each
    sparse vectorizer's vocabulary size and models) filled in."""

    name: str
    vectorizers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    sparse_vectorizers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    bm25: dict[str, Any] | None = None
    distance: str | None = None
    shard_number: int | None = None
    replication_factor: int | None = None
    created_at: float | None = None
    count: int | None = None


class CollectionList(BaseModel):
    collections: list[Collection]


class CollectionDeleted(BaseModel):
    name: str
    deleted: bool


class ObjectResult(_Open):
    """One object of an import: written (``ok``), not (``error``, with the reason and field), or
    ``replaced`` by a later object of the same request with the same id (``message`` names it)."""

    index: int
    id: str | None = None
    uuid: str | None = None
    status: Literal["ok", "error", "replaced"]
    error: str | None = None
    field: str | None = None
    message: str | None = None


class ImportResult(BaseModel):
    results: list[ObjectResult]
    ok: int
    errors: int
    replaced: int = 0


class StoredObject(_Open):
    id: str
    uuid: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    vectors: dict[str, Any] | None = None
    sparse_vectors: dict[str, Any] | None = Field(
        None, description="with_vectors: each sparse vectorizer's vector as {indices, values}")


class ObjectWritten(_Open):
    id: str
    uuid: str
    status: str


class ObjectDeleted(BaseModel):
    id: str
    deleted: bool


class SearchHit(_Open):
    id: str
    score: float
    properties: dict[str, Any] | None = None


class SearchResult(_Open):
    hits: list[SearchHit]
    took_ms: float


class FacetValue(_Open):
    value: Any
    count: int


class FacetsResult(_Open):
    values: list[FacetValue]


class Limits(_Open):
    """The limits a client sizes its requests by."""

    import_batch_size: int | None = None
    max_page_size: int | None = None


class ObjectPage(_Open):
    """One page of objects; pass ``next_cursor`` back for the next one (null: this was the last)."""

    objects: list[StoredObject]
    next_cursor: str | None = None


class Count(_Open):
    count: int


class ObjectsDeleted(_Open):
    deleted: int


class BatchSearchResult(_Open):
    """One answer per search, in order: its hits, or the error that search alone got."""

    results: list[dict[str, Any]]
    took_ms: float | None = None


class EvalRun(_Open):
    """One search configuration: its measures (null when every search failed) and latency."""

    name: str = Field(examples=["hybrid alpha=0.5 rrf"])
    kind: str
    alpha: float | None = None
    fusion: str | None = None
    queries: int
    errors: int
    metrics: dict[str, float] | None = Field(examples=[{"R@1": 0.41, "R@10": 0.83, "MRR@10": 0.55,
                                                        "nDCG@10": 0.6, "MAP": 0.52, "AvgRecall": 0.62}])
    latency_ms: dict[str, float] | None = Field(examples=[{"p50": 4.1, "p99": 9.7, "mean": 4.5}])
    error: str | None = None


class EvalReport(_Open):
    """Retrieval quality per search kind and hybrid alpha (the JSON of `polyvec eval --json`)."""

    collection: str
    k: list[int]
    depth: int = Field(description="hits asked for per search: the largest K, at least 10")
    measures: list[str]
    queries: dict[str, int]
    latency: str
    runs: list[EvalRun]


class ReindexResult(_Open):
    collection: str
    objects: int
    avg_len: float | None = None


#: (method, path) -> (success status, its model, the error statuses the route can answer)
RESPONSES: dict[tuple[str, str], tuple[int, type[BaseModel], tuple[int, ...]]] = {
    ("get", "/healthz"): (200, Health, ()),
    ("get", "/readyz"): (200, Readiness, (503,)),
    ("post", "/v1/collections"): (201, Collection, (400, 401, 409, 413, 503)),
    ("get", "/v1/collections"): (200, CollectionList, (401, 503)),
    ("get", "/v1/collections/{name}"): (200, Collection, (401, 404, 503)),
    ("patch", "/v1/collections/{name}"): (200, Collection, (400, 401, 404, 413, 503)),
    ("delete", "/v1/collections/{name}"): (200, CollectionDeleted, (401, 404, 503)),
    ("post", "/v1/collections/{name}/bm25/reindex"): (200, ReindexResult, (400, 401, 404, 413, 503)),
    ("post", "/v1/collections/{name}/objects"): (200, ImportResult, (400, 401, 404, 413, 503)),
    ("get", "/v1/collections/{name}/objects/{object_id}"): (200, StoredObject, (400, 401, 404, 503)),
    ("put", "/v1/collections/{name}/objects/{object_id}"): (200, ObjectWritten, (400, 401, 404, 413, 503)),
    ("delete", "/v1/collections/{name}/objects/{object_id}"): (200, ObjectDeleted, (401, 404, 503)),
    ("post", "/v1/collections/{name}/search"): (200, SearchResult, (400, 401, 404, 413, 503)),
    ("post", "/v1/collections/{name}/facets"): (200, FacetsResult, (400, 401, 404, 413, 503)),
    ("get", "/v1/limits"): (200, Limits, (401,)),
    ("post", "/v1/collections/{name}/objects/scroll"): (200, ObjectPage, (400, 401, 404, 413, 503)),
    ("get", "/v1/collections/{name}/objects"): (200, ObjectPage, (400, 401, 404, 503)),
    ("post", "/v1/collections/{name}/objects/delete"): (200, ObjectsDeleted, (400, 401, 404, 413, 503)),
    ("post", "/v1/collections/{name}/count"): (200, Count, (400, 401, 404, 413, 503)),
    ("post", "/v1/collections/{name}/search/batch"): (200, BatchSearchResult, (400, 401, 404, 413, 503)),
    ("post", "/v1/collections/{name}/evaluate"): (200, EvalReport, (400, 401, 404, 413, 501, 503)),
}
#: routes outside the JSON API: Prometheus text, and the documentation itself
NOT_JSON = {("get", "/metrics"), ("get", "/docs"), ("get", "/docs/oauth2-redirect"), ("get", "/openapi.json")}

ERROR_TEXT = {
    400: "Bad input; `field` names the offending part of the request.",
    401: "No API key, or not one of API_KEYS (send `Authorization: Bearer KEY` or `x-api-key: KEY`).",
    404: "No such collection or object.",
    409: "A collection with this name exists already.",
    413: "The request body is larger than MAX_REQUEST_BYTES.",
    501: "This gateway was installed without the packages the route needs; `error` names the extra.",
    429: "A model has more work than it can take now: the gateway already has INFERENCE_MAX_WAITING "
         "requests waiting for it, or its queue stayed full for the whole retry budget. Nothing was "
         "written; retry after the seconds in Retry-After.",
    503: "An inference service or Qdrant did not answer in time; `service` names it.",
}

# -- the README's quick start, as examples -----------------------------------------------------------

QUICK_START: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/collections"): {
        "request": {"name": "products",
                    "vectorizers": {"main": {"model": "default", "text_fields": ["title", "description"],
                                             "weights": {"title": 2, "description": 1}}},
                    "bm25": {"fields": ["title", "description"]}},
    },
    ("post", "/v1/collections/{name}/objects"): {
        "request": {"objects": [
            {"id": "sku-1", "properties": {"title": "Red running shoes",
                                           "description": "Lightweight trainers for road running",
                                           "price": 89, "brand": "Fleet"}},
            {"id": "sku-2", "properties": {"title": "Leather office shoes",
                                           "description": "Black oxford shoes for work",
                                           "price": 129, "brand": "Oxley"}}]},
        "response": {"results": [{"index": 0, "id": "sku-1", "uuid": "0b8bd0f8-5f5c-5d4c-8a4c-2f8f5c1c3e21",
                                  "status": "ok"},
                                 {"index": 1, "id": "sku-2", "uuid": "5d1c7e0a-2d4b-5b2b-9d0e-6c3a1f6b8e42",
                                  "status": "ok"}],
                     "ok": 2, "errors": 0},
    },
    ("post", "/v1/collections/{name}/search"): {
        "request": {"hybrid": {"query": "sneakers for jogging", "alpha": 0.7, "fusion": "relative_score"},
                    "filter": {"price": {"lte": 100}}, "limit": 3, "properties": ["title", "price"]},
        "response": {"hits": [{"id": "sku-1", "score": 0.7,
                               "properties": {"title": "Red running shoes", "price": 89}}],
                     "took_ms": 16.7},
    },
}


def _error_statuses() -> set[int]:
    """Every status a GatewayError can carry (a 429 exists once overload shedding does)."""
    found: set[int] = set()
    pending: list[type] = [GatewayError]
    while pending:
        cls = pending.pop()
        found.add(int(getattr(cls, "http_status", 500)))
        pending += cls.__subclasses__()
    return found


def _schema_ref(schema: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    generated = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in generated.pop("$defs", {}).items():
        components.setdefault(name, definition)
    components[model.__name__] = generated
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes, tags=app.openapi_tags)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "one of the gateway's API_KEYS"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key",
                   "description": "one of the gateway's API_KEYS"},
    }
    error_ref = _schema_ref(schema, Error)
    service_ref = _schema_ref(schema, ServiceError)
    overloaded_ref = _schema_ref(schema, OverloadedError)
    shed = 429 in _error_statuses()
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # bad input is a 400 {error, field}, never FastAPI's 422
            key = (method, path)
            if key in NOT_JSON:
                continue
            status, model, errors = RESPONSES.get(key, (200, _Open, _default_errors(method, path, operation)))
            ok = responses.pop(str(status), None) or responses.pop("200", None) or {}
            ok.setdefault("description", "Successful Response")
            ok["content"] = {"application/json": {"schema": _schema_ref(schema, model)}}
            responses[str(status)] = ok
            codes = set(errors)
            if path.startswith("/v1/"):
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
                if shed:
                    codes.add(429)
            for code in sorted(codes):
                ref = service_ref if code == 503 else overloaded_ref if code == 429 else error_ref
                if key == ("get", "/readyz"):
                    ref = _schema_ref(schema, Readiness)
                responses[str(code)] = {"description": ERROR_TEXT.get(code, "Error"),
                                        "content": {"application/json": {"schema": ref}}}
                if code == 429:
                    responses[str(code)]["headers"] = {"Retry-After": {
                        "description": "seconds to wait before sending the request again",
                        "schema": {"type": "integer", "minimum": 1}}}
            example = QUICK_START.get(key)
            if example:
                body = operation.get("requestBody", {}).get("content", {}).get("application/json")
                if body is not None and "request" in example:
                    body["example"] = example["request"]
                if "response" in example:
                    responses[str(status)]["content"]["application/json"]["example"] = example["response"]
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)
    return schema


def _default_errors(method: str, path: str, operation: dict[str, Any]) -> tuple[int, ...]:
    """A route missing from RESPONSES still documents the errors any such route answers."""
    codes = {401, 503} if path.startswith("/v1/") else set()
    if "{" in path:
        codes.add(404)
    if "requestBody" in operation or operation.get("parameters"):
        codes.add(400)
    if "requestBody" in operation:
        codes.add(413)
    return tuple(sorted(codes))


def install(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json and Swagger UI at /docs, from local assets."""
    cached: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if "schema" not in cached:
            cached["schema"] = build_openapi(app)
        return copy.deepcopy(cached["schema"])

    app.openapi = openapi  # type: ignore[method-assign]
    import swagger_ui  # type: ignore[import-untyped]

    static = Path(swagger_ui.__file__).resolve().parent / "static"
    app.mount(DOCS_STATIC, StaticFiles(directory=static), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - API",
                                   swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_STATIC}/favicon-32x32.png",
                                   oauth2_redirect_url="/docs/oauth2-redirect")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
