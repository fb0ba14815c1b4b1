"""The gateway's gRPC front (``polyvec.gateway.v1.Gateway``): a thin servicer over GatewayService.

Messages are converted to the HTTP API's JSON shapes and back; errors map to status codes
(INVALID_ARGUMENT with the field in the message and in trailing metadata ``field``, NOT_FOUND,
ALREADY_EXISTS, UNAVAILABLE, RESOURCE_EXHAUSTED with trailing metadata ``retry-after``,
UNAUTHENTICATED). Bytes that do not decode as the method's request message answer INVALID_ARGUMENT on
every method (services.grpc_decoding). Standard health checking and reflection are served too.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.api_keys import check_api_key
from gateway.errors import BadRequest, GatewayError
from gateway.service import GatewayService
from protos import gateway_pb2, gateway_pb2_grpc
from services import tracing
from services.grpc_decoding import RejectUndecodable

log = logging.getLogger(__name__)

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
_OUTPUT_ONLY = ("modalities", "model_name")
_SPARSE_OUTPUT_ONLY = ("vocab_size", "model_name", "function_name", "query_model_name", "query_function_name")


def _plain(value: struct_pb2.Value, where: str) -> Any:
    """A Struct value as JSON: integral numbers are ints again (Struct numbers are doubles; JSON has one
    number type); NaN and Infinity, which JSON cannot hold, are refused naming where they are."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        n = value.number_value
        if not math.isfinite(n):
            raise BadRequest(where, f"{n} is not a JSON number (NaN and Infinity are refused)")
        return int(n) if n.is_integer() and abs(n) < 2**53 else n
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: _plain(v, f"{where}.{k}") for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(v, f"{where}.{i}") for i, v in enumerate(value.list_value.values)]
    return None


def struct_to_dict(msg: struct_pb2.Struct, where: str = "") -> dict[str, Any]:
    """A Struct as the JSON the HTTP API reads (~8x faster than json_format: import's hot path);
    ``where`` prefixes the field named by an error."""
    prefix = f"{where}." if where else ""
    return {k: _plain(v, prefix + k) for k, v in msg.fields.items()}


def dict_to_struct(data: dict[str, Any] | None) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if data:
        out.update(data)
    return out


def _vectors_to_dict(vectors) -> dict[str, list[float]]:
    return {name: list(fl.values) for name, fl in vectors.items()}


def _definition_to_dict(msg: gateway_pb2.CollectionDefinition) -> dict[str, Any]:
    data = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    for vec in data.get("vectorizers", {}).values():
        for key in _OUTPUT_ONLY:
            vec.pop(key, None)
    for sparse in data.get("sparse_vectorizers", {}).values():
        for key in _SPARSE_OUTPUT_ONLY:
            sparse.pop(key, None)
    bm25 = data.get("bm25")
    if bm25 is not None and bm25.pop("off", False):
        if bm25.get("fields"):
            raise BadRequest("bm25.off", "give fields or off, not both")
        bm25["fields"] = []  # repeated fields cannot say "empty on purpose": off does
    return data


def _collection_message(public: dict[str, Any]) -> gateway_pb2.Collection:
    data = dict(public)
    count = data.pop("count", None)
    created_at = data.pop("created_at", 0.0)
    indexes = data.pop("indexes", {})
    definition = json_format.ParseDict(data, gateway_pb2.CollectionDefinition(), ignore_unknown_fields=True)
    if "bm25" in data and not (data["bm25"] or {}).get("fields"):
        definition.bm25.off = True
    msg = gateway_pb2.Collection(definition=definition, created_at=float(created_at or 0.0))
    for key, state in indexes.items():
        msg.indexes[key].CopyFrom(json_format.ParseDict(state, gateway_pb2.IndexState()))
    if count is not None:
        msg.count = int(count)
    return msg


def _value(value: Any) -> struct_pb2.Value:
    holder = struct_pb2.Struct()
    holder.update({"v": value})
    return holder.fields["v"]


def _abort_code(exc: GatewayError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)


def _rpc(method):
    """Check the API key, run the method, map gateway errors to status codes (no stack traces); count
    the call and its status code in the gateway's metrics."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: GatewayServicer, request, context: grpc.aio.ServicerContext):
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        span = tracing.tracer().start_span(
            f"{SERVICE_NAME}/{name}", kind=SpanKind.SERVER, attributes={"rpc.system": "grpc"},
            context=tracing.extract_metadata(context.invocation_metadata()))
        try:
            self.check_key(context)
            with trace.use_span(span):
                return await method(self, request, context)
        except GatewayError as exc:
            code = _abort_code(exc)
            trailers = [(k.lower(), v) for k, v in exc.headers().items()]
            if exc.field:
                trailers.append(("field", exc.field))
            service = getattr(exc, "service", None)
            if service:  # which dependency did not answer (as the HTTP body's "service")
                trailers.append(("service", str(service)))
            if trailers:
                context.set_trailing_metadata(tuple(trailers))
            await context.abort(code, exc.message)
        except grpc.aio.AbortError:
            code = _context_code(context)
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("unhandled error in %s", name)
            await context.abort(code, "internal error (see the gateway log)")
        finally:
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code != grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()
            metrics = self.service.metrics
            metrics.grpc_requests.labels(name, code.name).inc()
            metrics.grpc_latency.labels(name).observe(time.perf_counter() - started)

    return wrapper


def _context_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    code = getattr(context, "code", lambda: None)()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, service: GatewayService, api_keys: Sequence[str] = ()) -> None:
        self.service = service
        self.api_keys = tuple(api_keys)

    def check_key(self, context: grpc.aio.ServicerContext) -> None:
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        check_api_key(metadata, self.api_keys, "metadata authorization: Bearer KEY or x-api-key")

    # -- collections ----------------------------------------------------------------------------------------
    @_rpc
    async def CreateCollection(self, request, context):  # noqa: N802 (gRPC method names)
        return _collection_message(await self.service.create_collection(_definition_to_dict(request)))

    @_rpc
    async def GetCollection(self, request, context):  # noqa: N802
        return _collection_message(await self.service.get_collection(request.name))

    @_rpc
    async def ListCollections(self, request, context):  # noqa: N802
        items = await self.service.list_collections()
        return gateway_pb2.ListCollectionsResponse(collections=[_collection_message(c) for c in items])

    @_rpc
    async def DeleteCollection(self, request, context):  # noqa: N802
        out = await self.service.delete_collection(request.name)
        return gateway_pb2.DeleteCollectionResponse(name=out["name"], deleted=out["deleted"])

    # -- objects --------------------------------------------------------------------------------------------
    @_rpc
    async def ImportObjects(self, request, context):  # noqa: N802
        objects = []
        for i, o in enumerate(request.objects):
            item: dict[str, Any] = {"properties": struct_to_dict(o.properties, f"objects.{i}.properties")}
            if o.HasField("id"):
                item["id"] = o.id
            if o.vectors:
                item["vectors"] = _vectors_to_dict(o.vectors)
            objects.append(item)
        out = await self.service.import_objects(request.collection, {"objects": objects})
        return gateway_pb2.ImportObjectsResponse(
            results=[gateway_pb2.ObjectResult(index=r["index"], id=r.get("id") or "",
                                              uuid=r.get("uuid") or "", status=r["status"],
                                              error=r.get("error", ""), field=r.get("field", ""),
                                              message=r.get("message", ""))
                     for r in out["results"]],
            ok=out["ok"], errors=out["errors"], replaced=out["replaced"])

    @_rpc
    async def GetObject(self, request, context):  # noqa: N802
        out = await self.service.get_object(request.collection, request.id, with_vectors=request.with_vectors)
        return _object_message(out)

    @_rpc
    async def PutObject(self, request, context):  # noqa: N802
        body: dict[str, Any] = {"properties": struct_to_dict(request.properties, "properties")}
        if request.vectors:
            body["vectors"] = _vectors_to_dict(request.vectors)
        out = await self.service.put_object(request.collection, request.id, body)
        return gateway_pb2.PutObjectResponse(id=out["id"] or "", uuid=out["uuid"], status=out["status"],
                                             created=out["created"], vectorized=out["vectorized"])

    @_rpc
    async def DeleteObject(self, request, context):  # noqa: N802
        out = await self.service.delete_object(request.collection, request.id)
        return gateway_pb2.DeleteObjectResponse(id=out["id"], deleted=out["deleted"])

    # -- search ---------------------------------------------------------------------------------------------
    @_rpc
    async def Search(self, request, context):  # noqa: N802
        out = await self.service.search(request.collection, _search_body(request))
        return _search_response(out)

    @_rpc
    async def SearchBatch(self, request, context):  # noqa: N802
        out = await self.service.search_batch(request.collection,
                                              {"searches": [_search_body(s) for s in request.searches]})
        results = []
        for r in out["results"]:
            if "error" in r:
                error = gateway_pb2.SearchError(message=r["error"], field=r.get("field") or "")
                results.append(gateway_pb2.SearchResult(error=error))
            else:
                results.append(gateway_pb2.SearchResult(response=_search_response(r)))
        return gateway_pb2.SearchBatchResponse(results=results, took_ms=out["took_ms"])

    @_rpc
    async def ScrollObjects(self, request, context):  # noqa: N802
        body: dict[str, Any] = {"with_vectors": request.with_vectors}
        if request.HasField("filter"):
            body["filter"] = struct_to_dict(request.filter, "filter")
        if request.HasField("limit"):
            body["limit"] = request.limit
        if request.HasField("cursor"):
            body["cursor"] = request.cursor
        if request.HasField("properties"):
            body["properties"] = list(request.properties.names)
        out = await self.service.scroll_objects(request.collection, body)
        response = gateway_pb2.ScrollObjectsResponse(objects=[_object_message(o) for o in out["objects"]])
        if out["next_cursor"] is not None:
            response.next_cursor = out["next_cursor"]
        return response

    @_rpc
    async def CountObjects(self, request, context):  # noqa: N802
        body: dict[str, Any] = {}
        if request.HasField("filter"):
            body["filter"] = struct_to_dict(request.filter, "filter")
        if request.HasField("exact"):
            body["exact"] = request.exact
        out = await self.service.count_objects(request.collection, body)
        return gateway_pb2.CountObjectsResponse(count=out["count"])

    @_rpc
    async def DeleteObjects(self, request, context):  # noqa: N802
        body: dict[str, Any] = {"all": request.all}
        if request.HasField("filter"):
            body["filter"] = struct_to_dict(request.filter, "filter")
        if request.ids:
            body["ids"] = list(request.ids)
        out = await self.service.delete_objects(request.collection, body)
        return gateway_pb2.DeleteObjectsResponse(deleted=out["deleted"])

    @_rpc
    async def GetLimits(self, request, context):  # noqa: N802
        return gateway_pb2.Limits(**self.service.limits())


    @_rpc
    async def Evaluate(self, request, context):  # noqa: N802
        body: dict[str, Any] = {"queries": request.queries, "qrels": request.qrels}
        for name in ("kinds", "alphas", "fusion", "k"):
            if getattr(request, name):
                body[name] = list(getattr(request, name))
        if request.HasField("vector"):
            body["vector"] = request.vector
        if request.HasField("filter"):
            body["filter"] = struct_to_dict(request.filter, "filter")
        report = await self.service.evaluate(request.collection, body)
        return gateway_pb2.EvaluateResponse(report=dict_to_struct(report))

    @_rpc
    async def UpdateCollection(self, request, context):  # noqa: N802
        fields = {k: json_format.MessageToDict(v, preserving_proto_field_name=True)
                  for k, v in request.fields.items()}
        return _collection_message(await self.service.update_collection(request.name, {"fields": fields}))

    @_rpc
    async def Facets(self, request, context):  # noqa: N802
        body: dict[str, Any] = {"field": request.field}
        if request.HasField("filter"):
            body["filter"] = struct_to_dict(request.filter, "filter")
        if request.HasField("limit"):
            body["limit"] = request.limit
        if request.HasField("exact"):
            body["exact"] = request.exact
        out = await self.service.facets(request.collection, body)
        return gateway_pb2.FacetsResponse(
            values=[gateway_pb2.FacetValue(value=_value(v["value"]), count=v["count"])
                    for v in out["values"]],
            took_ms=out["took_ms"])

    @_rpc
    async def ReindexBm25(self, request, context):  # noqa: N802
        body: dict[str, Any] = {}
        if request.HasField("avg_len"):
            body["avg_len"] = request.avg_len
        if request.HasField("bm25"):
            body["bm25"] = json_format.MessageToDict(request.bm25, preserving_proto_field_name=True)
        out = await self.service.reindex_bm25(request.collection, body)
        return gateway_pb2.ReindexBm25Response(
            collection=out["collection"], objects=out["objects"], avg_len=out["avg_len"],
            bm25=json_format.ParseDict(out["bm25"], gateway_pb2.Bm25()), took_ms=out["took_ms"])


def _object_message(out: dict[str, Any]) -> gateway_pb2.Object:
    return gateway_pb2.Object(
        id=out["id"], uuid=out["uuid"], properties=dict_to_struct(out["properties"]),
        vectors={k: gateway_pb2.FloatList(values=v) for k, v in out.get("vectors", {}).items()},
        sparse_vectors={k: gateway_pb2.SparseVector(indices=v["indices"], values=v["values"])
                        for k, v in out.get("sparse_vectors", {}).items()})


def _search_body(request: gateway_pb2.SearchRequest) -> dict[str, Any]:
    """A SearchRequest message as the HTTP API's JSON body."""
    body: dict[str, Any] = {}
    kind = request.WhichOneof("query")
    if kind == "near_text":
        body["near_text"] = {"query": request.near_text.query}
    elif kind == "near_image":
        image, url = request.near_image.image, request.near_image.url
        if image and url:
            raise BadRequest("near_image", "give image or url, not both")
        body["near_image"] = {"image": url or base64.b64encode(image).decode()}
    elif kind == "near_vector":
        body["near_vector"] = {"vector": list(request.near_vector.vector)}
    elif kind == "bm25":
        body["bm25"] = {"query": request.bm25.query}
    elif kind == "hybrid":
        h = request.hybrid
        body["hybrid"] = {"query": h.query}
        if h.HasField("alpha"):
            body["hybrid"]["alpha"] = h.alpha
        if h.HasField("fusion"):
            body["hybrid"]["fusion"] = h.fusion
        if h.weights:
            body["hybrid"]["weights"] = dict(h.weights)
    elif kind == "neural_sparse":
        body["neural_sparse"] = {"query": request.neural_sparse.query}
        if request.neural_sparse.HasField("vector"):
            body["neural_sparse"]["vector"] = request.neural_sparse.vector
    if request.HasField("vector"):
        body["vector"] = request.vector
    if request.HasField("filter"):
        body["filter"] = struct_to_dict(request.filter, "filter")
    if request.HasField("limit"):
        body["limit"] = request.limit
    if request.HasField("offset"):
        body["offset"] = request.offset
    if request.HasField("properties"):
        body["properties"] = list(request.properties.names)
    if request.HasField("order_by"):
        body["order_by"] = {"field": request.order_by.field}
        if request.order_by.HasField("direction"):
            body["order_by"]["direction"] = request.order_by.direction
    if request.HasField("diversity"):
        mmr: dict[str, Any] = {}
        if request.diversity.mmr.HasField("lambda"):
            mmr["lambda"] = getattr(request.diversity.mmr, "lambda")
        if request.diversity.mmr.HasField("candidates"):
            mmr["candidates"] = request.diversity.mmr.candidates
        body["diversity"] = {"mmr": mmr}
    return body


def _search_response(out: dict[str, Any]) -> gateway_pb2.SearchResponse:
    return gateway_pb2.SearchResponse(
        hits=[gateway_pb2.Hit(id=h["id"], score=h["score"], properties=dict_to_struct(h["properties"]))
              for h in out["hits"]],
        took_ms=out["took_ms"])


async def start_grpc_server(service: GatewayService, host: str, port: int, *,
                            api_keys: Sequence[str] = (),
                            max_message_bytes: int = 64 * 1024 * 1024) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server (gateway + health + reflection); returns (server, bound port)."""
    server = grpc.aio.server(interceptors=[RejectUndecodable()],  # bytes no request: INVALID_ARGUMENT
                             options=[("grpc.max_receive_message_length", max_message_bytes),
                                      ("grpc.max_send_message_length", max_message_bytes)])
    gateway_pb2_grpc.add_GatewayServicer_to_server(GatewayServicer(service, api_keys), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the gRPC port {host}:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    return server, bound
