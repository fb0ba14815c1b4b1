"""The gateway's HTTP front (FastAPI): thin routes over GatewayService, JSON errors, API keys, metrics.

Errors are JSON ``{"error": message, "field": dotted.path}`` (4xx) or ``{"error", "service"}`` (503);
never a stack trace. With API keys configured every /v1 route needs ``Authorization: Bearer KEY`` or
``x-api-key: KEY`` (checked before the body is read); /healthz, /readyz, /metrics, /docs and the search
page /ui stay open.

Request bodies are read here, not by the framework: the bytes are counted as they stream in (chunked
bodies too) and the request is answered 413 as soon as MAX_REQUEST_BYTES is passed, without reading the
rest; the JSON is parsed under MAX_JSON_DEPTH (:mod:`gateway.json_body`), so a body nested too deeply is
a 400 naming the path where it went too deep.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import MutableMapping, Sequence
from importlib import metadata
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, SpanKind, Status, StatusCode
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import json_body, openapi, ui
from gateway.api_keys import check_api_key
from gateway.definitions import CollectionDefinition, loc_to_field
from gateway.errors import BadRequest, GatewayError, PayloadTooLarge
from gateway.service import GatewayService
from gateway.service.evaluate import EvaluateRequest
from gateway.service.requests import (
    BatchSearchRequest,
    CollectionPatch,
    CountRequest,
    DeleteRequest,
    FacetsRequest,
    ImportRequest,
    ObjectPut,
    ReindexBm25Request,
    ScrollRequest,
    SearchRequest,
)
from services import tracing

log = logging.getLogger(__name__)

try:
    __version__ = metadata.version("polyvec")  # pyproject.toml's version, like the images' tags
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"


#: probes and scrapes are not traced (they would drown the traces people look for)
UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})


def route_template(app: FastAPI, scope: MutableMapping[str, Any]) -> str:
    """The template of the route serving this request (``/v1/collections/{name}``, ``/docs``): never the
    raw path (unbounded label values). "unmatched" only for paths no route serves (404s)."""
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return route.path
    for candidate in app.router.routes:  # routes FastAPI does not mark in the scope (/docs, /openapi.json)
        match, _ = candidate.matches(scope)
        path = getattr(candidate, "path", None)
        if match == Match.FULL and path:
            return str(path)
    return "unmatched"


def fast_json(body: dict[str, Any]) -> Any:
    """``body`` written by orjson: for answers of many objects (a page of 1,000 is ~4x faster to write
    than through FastAPI's pydantic path). Falls back to that path for what orjson refuses (an integer
    beyond 64 bits). Typed ``Any`` so the route keeps its declared answer in the OpenAPI document."""
    try:
        return Response(orjson.dumps(body), media_type="application/json")
    except orjson.JSONEncodeError:
        return body


def _error(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body, headers=headers)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"body: request body larger than {limit} bytes (MAX_REQUEST_BYTES)", field="body")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, counted as it streams in: PayloadTooLarge once more than ``limit`` bytes came."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_body(raw: bytes, max_depth: int) -> Any:
    """The parsed body; BadRequest naming ``body`` (not JSON) or the path where it nests too deeply."""
    try:
        return json_body.loads(raw, max_depth)
    except json_body.TooDeep as exc:
        raise BadRequest(exc.path or "body",
                         f"nested more than {exc.limit} levels deep (MAX_JSON_DEPTH)") from None
    except json.JSONDecodeError as exc:
        raise BadRequest("body", f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") \
            from None
    except ValueError:  # bytes that are not UTF-8/16/32 text
        raise BadRequest("body", "is not valid JSON (not UTF-8 text)") from None


class _ParsedRequest(Request):
    """A request whose body was already read and parsed by the route (see :func:`_route_class`)."""

    def __init__(self, request: Request, raw: bytes, parsed: Any) -> None:
        super().__init__(request.scope, request.receive)
        self._raw, self._parsed = raw, parsed

    async def body(self) -> bytes:
        return self._raw

    async def json(self) -> Any:
        return self._parsed


def _route_class(max_request_bytes: int, max_json_depth: int) -> type[APIRoute]:
    """Routes with a JSON body read it under the byte limit and parse it under the depth limit first."""

    class JsonBodyRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()
            if self.body_field is None:
                return handler

            async def read_then_handle(request: Request) -> Response:
                raw = await read_body(request, max_request_bytes)
                parsed = parse_json_body(raw, max_json_depth) if raw.strip() else None
                return await handler(_ParsedRequest(request, raw if parsed is not None else b"", parsed))

            return read_then_handle

    return JsonBodyRoute


_JSON_CONTENT_TYPE = (b"content-type", b"application/json")


def gateway_error_response(exc: GatewayError) -> JSONResponse:
    """The JSON answer of a GatewayError (413s also close the connection: the rest of the body is unread)."""
    response = _error(exc.http_status, exc.to_dict(), exc.headers())
    if isinstance(exc, PayloadTooLarge):
        response.headers["connection"] = "close"
    return response


class LimitsAndMetrics:
    """Every HTTP request: bodies taken as JSON, the server span, the API key of /v1 routes and the declared
    body size checked before the body is read, and the request counted and timed in the metrics."""

    def __init__(self, app: ASGIApp, *, app_ref: FastAPI, keys: tuple[str, ...], max_request_bytes: int,
                 metrics: Any) -> None:
        self.app, self.app_ref, self.keys = app, app_ref, keys
        self.max_request_bytes, self.metrics = max_request_bytes, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        method: str = scope["method"]
        url_path: str = scope["path"]
        if method in ("POST", "PUT", "PATCH") and "json" not in headers.get("content-type", ""):
            # bodies are always JSON (curl -d sends form encoding by default)
            scope["headers"] = [*(h for h in scope["headers"] if h[0] != b"content-type"), _JSON_CONTENT_TYPE]
        # Recent FastAPI releases trace every request themselves (a server span from the incoming
        # traceparent); with older ones this middleware opens that span.
        traced = url_path not in UNTRACED and not trace.get_current_span().get_span_context().is_valid
        span = tracing.tracer().start_span(
            method, kind=SpanKind.SERVER, context=tracing.extract_metadata(headers.items()),
            attributes={"http.request.method": method}) if traced else INVALID_SPAN
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with trace.use_span(span, end_on_exit=True) if traced else contextlib.nullcontext():
            try:
                if url_path.startswith("/v1/"):
                    check_api_key(headers, self.keys, "send Authorization: Bearer KEY or x-api-key: KEY")
                length = headers.get("content-length", "")
                if length.isdigit() and int(length) > self.max_request_bytes:
                    raise _too_large(self.max_request_bytes)
            except GatewayError as exc:
                await gateway_error_response(exc)(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
            path = route_template(self.app_ref, scope)
            if traced:
                span.update_name(f"{method} {path}")
                span.set_attributes({"http.route": path, "http.response.status_code": status})
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
        if path != "/metrics":
            self.metrics.requests.labels(method, path, str(status)).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - started)



def create_app(service: GatewayService, *, api_keys: Sequence[str] = (),
               max_request_bytes: int = 64 * 1024 * 1024, max_json_depth: int | None = None) -> FastAPI:
    """The FastAPI app over a ready GatewayService (the caller owns and closes it).

    ``max_json_depth`` defaults to the service's MAX_JSON_DEPTH setting.
    """
    keys = tuple(api_keys)
    depth = max_json_depth if max_json_depth is not None else service.settings.max_json_depth
    metrics = service.metrics
    app = FastAPI(title="polyvec gateway", version=__version__, docs_url=None, redoc_url=None,
                  generate_unique_id_function=lambda route: route.name,  # operationId: create_collection
                  description="Multimodal vector search: collections, import, near-text / near-image / "
                              "near-vector / BM25 / hybrid search. With API keys configured, every /v1 "
                              "call needs `Authorization: Bearer KEY` or `x-api-key: KEY`.")
    app.router.route_class = _route_class(max_request_bytes, depth)
    app.state.service = service

    def svc(request: Request) -> GatewayService:
        return request.app.state.service

    # -- errors ---------------------------------------------------------------------------------------------
    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return gateway_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = tuple(first.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path"):
            loc = loc[1:]
        field = loc_to_field(loc, "")
        message = str(first.get("msg", "invalid request"))
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        kind = first.get("type")
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "json_invalid":
            field, message = "body", "is not valid JSON"
        elif kind == "missing" and not loc:
            field, message = "body", "a JSON body is required"
        return _error(400, {"error": f"{field}: {message}", "field": field})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, {"error": str(exc.detail)})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, {"error": "internal error (see the gateway log)"})

    # -- middleware: size limit + metrics --------------------------------------------------------------------
    # A plain ASGI middleware (not @app.middleware("http"), whose BaseHTTPMiddleware runs every request
    # through an extra task and memory stream: a third of the CPU of a refused search).
    app.add_middleware(LimitsAndMetrics, app_ref=app, keys=keys, max_request_bytes=max_request_bytes,
                       metrics=metrics)

    # -- health ---------------------------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> JSONResponse:
        state = await svc(request).ready()
        return JSONResponse(status_code=200 if state["ready"] else 503, content=state)

    @app.get("/metrics", tags=["health"])
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    # -- collections ----------------------------------------------------------------------------------------
    # (the API key of every /v1 route is checked by the middleware, before the body is read)

    @app.get("/v1/limits", tags=["collections"])
    async def limits(request: Request) -> dict[str, int]:
        """The limits a client sizes its requests by (IMPORT_BATCH_SIZE, MAX_PAGE_SIZE, ...)."""
        return svc(request).limits()

    @app.post("/v1/collections", status_code=201, tags=["collections"])
    async def create_collection(body: CollectionDefinition, request: Request) -> dict[str, Any]:
        return await svc(request).create_collection(body)

    @app.get("/v1/collections", tags=["collections"])
    async def list_collections(request: Request) -> dict[str, Any]:
        return {"collections": await svc(request).list_collections()}

    @app.get("/v1/collections/{name}", tags=["collections"])
    async def get_collection(name: str, request: Request) -> dict[str, Any]:
        return await svc(request).get_collection(name)

    @app.patch("/v1/collections/{name}", tags=["collections"])
    async def update_collection(name: str, body: CollectionPatch, request: Request) -> dict[str, Any]:
        return await svc(request).update_collection(name, body)

    @app.post("/v1/collections/{name}/bm25/reindex", tags=["collections"])
    async def reindex_bm25(name: str, request: Request,
                           body: ReindexBm25Request | None = None) -> dict[str, Any]:
        return await svc(request).reindex_bm25(name, body)

    @app.delete("/v1/collections/{name}", tags=["collections"])
    async def delete_collection(name: str, request: Request) -> dict[str, Any]:
        return await svc(request).delete_collection(name)

    # -- objects --------------------------------------------------------------------------------------------
    @app.post("/v1/collections/{name}/objects", tags=["objects"])
    async def import_objects(name: str, body: ImportRequest, request: Request) -> dict[str, Any]:
        return await svc(request).import_objects(name, body)

    @app.post("/v1/collections/{name}/objects/scroll", tags=["objects"])
    async def scroll_objects(name: str, body: ScrollRequest, request: Request) -> dict[str, Any]:
        """One page of objects (matching a filter); pass next_cursor back for the next page."""
        return fast_json(await svc(request).scroll_objects(name, body))

    @app.get("/v1/collections/{name}/objects", tags=["objects"])
    async def list_objects(name: str, request: Request, limit: int = 100, cursor: str | None = None,
                           with_vectors: bool = False) -> dict[str, Any]:
        """One page of objects, like POST .../objects/scroll without a filter."""
        return fast_json(await svc(request).scroll_objects(
            name, {"limit": limit, "cursor": cursor, "with_vectors": with_vectors}))

    @app.post("/v1/collections/{name}/objects/delete", tags=["objects"])
    async def delete_objects(name: str, body: DeleteRequest, request: Request) -> dict[str, Any]:
        """Delete by filter or ids; a delete matching every object needs "all": true."""
        return await svc(request).delete_objects(name, body)

    @app.post("/v1/collections/{name}/count", tags=["objects"])
    async def count_objects(name: str, request: Request, body: CountRequest | None = None) -> dict[str, Any]:
        return await svc(request).count_objects(name, body)

    @app.get("/v1/collections/{name}/objects/{object_id}", tags=["objects"])
    async def get_object(name: str, object_id: str, request: Request, with_vectors: bool = False) -> dict:
        return await svc(request).get_object(name, object_id, with_vectors=with_vectors)

    @app.put("/v1/collections/{name}/objects/{object_id}", tags=["objects"])
    async def put_object(name: str, object_id: str, body: ObjectPut, request: Request) -> dict[str, Any]:
        return await svc(request).put_object(name, object_id, body)

    @app.delete("/v1/collections/{name}/objects/{object_id}", tags=["objects"])
    async def delete_object(name: str, object_id: str, request: Request) -> dict[str, Any]:
        return await svc(request).delete_object(name, object_id)

    # -- search ---------------------------------------------------------------------------------------------
    @app.post("/v1/collections/{name}/search", tags=["search"])
    async def search(name: str, body: SearchRequest, request: Request) -> dict[str, Any]:
        return await svc(request).search(name, body)

    @app.post("/v1/collections/{name}/facets", tags=["search"])
    async def facets(name: str, body: FacetsRequest, request: Request) -> dict[str, Any]:
        return await svc(request).facets(name, body)

    @app.post("/v1/collections/{name}/search/batch", tags=["search"])
    async def search_batch(name: str, body: BatchSearchRequest, request: Request) -> dict[str, Any]:
        """Several searches in one call: {results: [{hits, took_ms} | {error, field}]}, in order."""
        return await svc(request).search_batch(name, body)

    @app.post("/v1/collections/{name}/evaluate", tags=["search"])
    async def evaluate(name: str, body: EvaluateRequest, request: Request) -> dict[str, Any]:
        """Recall@K, P@K, MRR@10, nDCG@10, MAP, AvgRecall and latency per search kind and hybrid alpha,
        from BEIR queries and qrels (what `polyvec eval` computes; the search page's Evaluate tab)."""
        return await svc(request).evaluate(name, body)

    openapi.install(app)  # the completed /openapi.json, and /docs from local assets
    ui.install(app)  # the search page, /ui
    return app
