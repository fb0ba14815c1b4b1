"""gRPC transport: carries one :class:`~polyvec_client._core.Op` over the gateway's ``polyvec.gateway.v1``
API (``Client("grpc://host:port")``; ``grpcs://`` for TLS). Needs the ``grpc`` extra (grpcio, protobuf).

The codec turns an operation's JSON body into the request message and the answer message back into the
HTTP API's JSON shape, so the core parses one shape whichever transport carried it. Status codes become
the same typed errors as HTTP statuses: INVALID_ARGUMENT is a 400 with the ``field`` trailer,
RESOURCE_EXHAUSTED with a ``retry-after`` trailer a 429 (retried the same way), without one a 413,
UNAVAILABLE from the gateway a 503 naming the ``service``; a channel that cannot connect is a
TransportError like a refused HTTP connection.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc  # type: ignore[import-untyped,unused-ignore]
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from polyvec_client import _json
from polyvec_client._core import Op
from polyvec_client._pb import gateway_pb2 as pb
from polyvec_client.errors import BadRequestError, PolyvecError, TransportError, error_from_response

SERVICE = "/polyvec.gateway.v1.Gateway/"
HEALTH = "/grpc.health.v1.Health/Check"
_SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}
CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]

_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}


def target_of(url: str) -> tuple[str, bool]:
    """``grpc://host:port`` -> ("host:port", tls)."""
    parts = urlsplit(url)
    if not parts.netloc:
        raise ValueError(f"a gRPC gateway URL is grpc://HOST:PORT, not {url!r}")
    return parts.netloc, parts.scheme.lower() == "grpcs"


# -- JSON <-> messages -----------------------------------------------------------------------------------
def _plain(value: struct_pb2.Value) -> Any:
    """A Struct value as the HTTP API's JSON: integral numbers are ints again (Struct numbers are
    doubles). Several times faster than json_format, which matters for iterate and export."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        n = value.number_value
        return int(n) if n.is_integer() and abs(n) < 2**53 else n
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _dict(value.struct_value)
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    return None


def _struct(data: dict[str, Any] | None) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    if data:
        out.update(data)
    return out


def _dict(msg: struct_pb2.Struct) -> dict[str, Any]:
    return {k: _plain(v) for k, v in msg.fields.items()}


def _float_lists(vectors: dict[str, Any] | None) -> dict[str, pb.FloatList]:
    return {k: pb.FloatList(values=v) for k, v in (vectors or {}).items()}


def _object(msg: pb.Object) -> dict[str, Any]:
    out: dict[str, Any] = {"id": msg.id, "uuid": msg.uuid, "properties": _dict(msg.properties)}
    if msg.vectors:
        out["vectors"] = {k: list(v.values) for k, v in msg.vectors.items()}
    if msg.sparse_vectors:
        out["sparse_vectors"] = {k: {"indices": list(v.indices), "values": list(v.values)}
                                 for k, v in msg.sparse_vectors.items()}
    return out


def _collection(msg: pb.Collection) -> dict[str, Any]:
    data = json_format.MessageToDict(msg.definition, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)  # empty maps, as HTTP
    bm25 = data.get("bm25")
    if bm25 is not None and bm25.pop("off", False):
        bm25["fields"] = []
    if msg.HasField("count"):
        data["count"] = msg.count
    data["created_at"] = msg.created_at
    if msg.indexes:
        data["indexes"] = {k: json_format.MessageToDict(v, preserving_proto_field_name=True)
                           for k, v in msg.indexes.items()}
    return data


def _definition(body: dict[str, Any]) -> pb.CollectionDefinition:
    data = dict(body)
    off = "bm25" in data and data["bm25"] is not None and not (data["bm25"] or {}).get("fields", True)
    if off:
        data["bm25"] = {k: v for k, v in data["bm25"].items() if k != "fields"}
    msg = json_format.ParseDict(data, pb.CollectionDefinition())
    if off:
        msg.bm25.off = True
    return msg


def _search_request(body: dict[str, Any], collection: str = "") -> pb.SearchRequest:
    """A search body of the HTTP API as a SearchRequest (the inverse of the gateway's _search_body)."""
    msg = pb.SearchRequest(collection=collection)
    for kind in ("near_text", "bm25"):
        if kind in body:
            getattr(msg, kind).query = body[kind]["query"]
    if "near_image" in body:
        image = body["near_image"]["image"]
        if isinstance(image, str) and image.startswith(("http://", "https://")):
            msg.near_image.url = image  # the gateway fetches it, as over HTTP
        else:
            msg.near_image.image = base64.b64decode(image)
    if "near_vector" in body:
        msg.near_vector.vector.extend(body["near_vector"]["vector"])
    if "neural_sparse" in body:
        msg.neural_sparse.query = body["neural_sparse"]["query"]
        if body["neural_sparse"].get("vector") is not None:
            msg.neural_sparse.vector = body["neural_sparse"]["vector"]
    if "hybrid" in body:
        h = body["hybrid"]
        msg.hybrid.query = h["query"]
        if h.get("alpha") is not None:
            msg.hybrid.alpha = h["alpha"]
        if h.get("fusion") is not None:
            msg.hybrid.fusion = h["fusion"]
        for name, weight in (h.get("weights") or {}).items():
            msg.hybrid.weights[name] = weight
    for key in ("vector", "limit", "offset"):
        if body.get(key) is not None:
            setattr(msg, key, body[key])
    if body.get("filter") is not None:
        msg.filter.CopyFrom(_struct(body["filter"]))
    if body.get("properties") is not None:
        msg.properties.CopyFrom(pb.PropertyList(names=body["properties"]))
    if body.get("order_by") is not None:
        msg.order_by.CopyFrom(json_format.ParseDict(body["order_by"], pb.OrderBy()))
    if body.get("diversity") is not None:
        msg.diversity.CopyFrom(json_format.ParseDict(body["diversity"], pb.Diversity()))
    return msg


def _search_response(msg: pb.SearchResponse) -> dict[str, Any]:
    return {"hits": [{"id": h.id, "score": h.score, "properties": _dict(h.properties)} for h in msg.hits],
            "took_ms": msg.took_ms}


def _import_request(op: Op) -> pb.ImportObjectsRequest:
    """Built in place (``objects.add``, ``update``): several times faster than messages copied in."""
    body = op.body if op.body is not None else _json.loads(op.content or b"{}")
    msg = pb.ImportObjectsRequest(collection=op.collection)
    for item in body["objects"]:
        obj = msg.objects.add()
        if item.get("id") is not None:
            obj.id = str(item["id"])
        obj.properties.update(item.get("properties") or {})
        for name, values in (item.get("vectors") or {}).items():
            obj.vectors[name].values.extend(values)
    return msg


def _import_response(msg: pb.ImportObjectsResponse) -> dict[str, Any]:
    results = []
    for r in msg.results:
        result: dict[str, Any] = {"index": r.index, "id": r.id or None, "uuid": r.uuid or None,
                                  "status": r.status}
        for key in ("error", "field", "message"):
            if getattr(r, key):
                result[key] = getattr(r, key)
        results.append(result)
    return {"results": results, "ok": msg.ok, "errors": msg.errors, "replaced": msg.replaced}


def _scroll_request(op: Op) -> pb.ScrollObjectsRequest:
    body = op.body
    msg = pb.ScrollObjectsRequest(collection=op.collection, with_vectors=bool(body.get("with_vectors")),
                                  limit=body["limit"])
    if body.get("filter") is not None:
        msg.filter.CopyFrom(_struct(body["filter"]))
    if body.get("cursor") is not None:
        msg.cursor = body["cursor"]
    if body.get("properties") is not None:
        msg.properties.CopyFrom(pb.PropertyList(names=body["properties"]))
    return msg


def _count_request(op: Op) -> pb.CountObjectsRequest:
    msg = pb.CountObjectsRequest(collection=op.collection, exact=op.body.get("exact", True))
    if op.body.get("filter") is not None:
        msg.filter.CopyFrom(_struct(op.body["filter"]))
    return msg


def _delete_request(op: Op) -> pb.DeleteObjectsRequest:
    msg = pb.DeleteObjectsRequest(collection=op.collection, ids=op.body.get("ids") or [],
                                  all=bool(op.body.get("all")))
    if op.body.get("filter") is not None:
        msg.filter.CopyFrom(_struct(op.body["filter"]))
    return msg


def _batch_response(msg: pb.SearchBatchResponse) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for r in msg.results:
        if r.WhichOneof("outcome") == "error":
            results.append({"error": r.error.message, "field": r.error.field or None})
        else:
            results.append(_search_response(r.response))
    return {"results": results, "took_ms": msg.took_ms}


@dataclass(frozen=True)
class Rpc:
    method: str
    request: Callable[[Op], Message]
    response_type: type[Message]
    answer: Callable[[Any], Any]


LIMIT_FIELDS = ("import_batch_size", "max_page_size", "search_batch_size", "max_request_bytes")

CODEC: dict[str, Rpc] = {
    "limits": Rpc("GetLimits", lambda op: pb.GetLimitsRequest(), pb.Limits,
                  lambda m: {k: getattr(m, k) for k in LIMIT_FIELDS}),
    "create_collection": Rpc("CreateCollection", lambda op: _definition(op.body), pb.Collection, _collection),
    "get_collection": Rpc("GetCollection", lambda op: pb.GetCollectionRequest(name=op.key), pb.Collection,
                          _collection),
    "list_collections": Rpc("ListCollections", lambda op: pb.ListCollectionsRequest(),
                            pb.ListCollectionsResponse,
                            lambda m: {"collections": [_collection(c) for c in m.collections]}),
    "delete_collection": Rpc("DeleteCollection", lambda op: pb.DeleteCollectionRequest(name=op.key),
                             pb.DeleteCollectionResponse, lambda m: {"name": m.name, "deleted": m.deleted}),
    "import": Rpc("ImportObjects", _import_request, pb.ImportObjectsResponse, _import_response),
    "get_object": Rpc("GetObject", lambda op: pb.GetObjectRequest(
        collection=op.collection, id=op.key, with_vectors=bool(op.params)), pb.Object, _object),
    "put_object": Rpc("PutObject", lambda op: pb.PutObjectRequest(
        collection=op.collection, id=op.key, properties=_struct(op.body["properties"]),
        vectors=_float_lists(op.body.get("vectors"))), pb.PutObjectResponse,
        lambda m: {"id": m.id or None, "uuid": m.uuid, "status": m.status, "created": m.created,
                   "vectorized": list(m.vectorized)}),
    "delete_object": Rpc("DeleteObject", lambda op: pb.DeleteObjectRequest(
        collection=op.collection, id=op.key), pb.DeleteObjectResponse,
        lambda m: {"id": m.id, "deleted": m.deleted}),
    "count": Rpc("CountObjects", _count_request, pb.CountObjectsResponse, lambda m: {"count": m.count}),
    "delete_objects": Rpc("DeleteObjects", _delete_request, pb.DeleteObjectsResponse,
                          lambda m: {"deleted": m.deleted}),
    "scroll": Rpc("ScrollObjects", _scroll_request, pb.ScrollObjectsResponse,
                  lambda m: {"objects": [_object(o) for o in m.objects],
                             "next_cursor": m.next_cursor if m.HasField("next_cursor") else None}),
    "search": Rpc("Search", lambda op: _search_request(op.body, op.collection or ""), pb.SearchResponse,
                  _search_response),
    "search_batch": Rpc("SearchBatch", lambda op: pb.SearchBatchRequest(
        collection=op.collection, searches=[_search_request(s) for s in op.body["searches"]]),
        pb.SearchBatchResponse, _batch_response),
}


def encode(op: Op) -> tuple[Rpc, Message]:
    """The RPC and request message of an operation; a body the messages cannot hold is a 400."""
    rpc = CODEC.get(op.name)
    if rpc is None:
        raise PolyvecError(f"{op.method} {op.path} is a raw HTTP request: it has no gRPC method "
                           "(use an http:// URL, or the client's methods)")
    try:
        return rpc, rpc.request(op)
    except PolyvecError:
        raise
    except (json_format.ParseError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise BadRequestError(f"the request does not fit the gRPC message: {exc}", status=400) from None


def error_from_rpc(exc: grpc.RpcError, op: Op) -> PolyvecError:
    """The typed error of a failed call, as the HTTP front would have answered it."""
    code = exc.code()
    details = exc.details() or code.name
    trailers = {k.lower(): v for k, v in (exc.trailing_metadata() or ())}
    if code == grpc.StatusCode.UNAVAILABLE and "service" not in trailers:  # the channel, not the gateway
        never_sent = "failed to connect" in details.lower() or "connection refused" in details.lower()
        return TransportError(f"{rpc_name(op)}: UNAVAILABLE: {details}", may_have_run=not never_sent)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:  # the client's timeout, as an HTTP read timeout
        return TransportError(f"{rpc_name(op)}: DEADLINE_EXCEEDED: {details}", may_have_run=True)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        status = 429 if "retry-after" in trailers else 413
    else:
        status = _STATUS.get(code, 500)
    body = {"error": details, "field": trailers.get("field"), "service": trailers.get("service")}
    return error_from_response(status, body, trailers.get("retry-after"))


def rpc_name(op: Op) -> str:
    rpc = CODEC.get(op.name)
    return SERVICE + (rpc.method if rpc else op.name)


class _Channel:
    """What the sync and async transports share: target, credentials, metadata, method handles."""

    def __init__(self, url: str, *, api_key: str | None, timeout: float) -> None:
        self.target, self.tls = target_of(url)
        self.timeout = timeout
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._methods: dict[str, Any] = {}

    def method(self, channel: Any, op: Op) -> tuple[Any, Message, Callable[[Any], Any]]:
        rpc, request = encode(op)
        handle = self._methods.get(rpc.method)
        if handle is None:
            handle = channel.unary_unary(SERVICE + rpc.method, request_serializer=_serialize,
                                         response_deserializer=rpc.response_type.FromString)
            self._methods[rpc.method] = handle
        return handle, request, rpc.answer


def _serialize(msg: Message) -> bytes:
    return msg.SerializeToString()


def _health(data: bytes) -> dict[str, Any]:
    return {"status": "ready" if data == _SERVING else "not ready", "transport": "grpc"}


class SyncGRPC(_Channel):
    def __init__(self, url: str, *, api_key: str | None, timeout: float) -> None:
        super().__init__(url, api_key=api_key, timeout=timeout)
        if self.tls:
            self.channel = grpc.secure_channel(self.target, grpc.ssl_channel_credentials(), CHANNEL_OPTIONS)
        else:
            self.channel = grpc.insecure_channel(self.target, CHANNEL_OPTIONS)

    def send(self, op: Op) -> Any:
        try:
            if op.name == "ready":
                return _health(self.channel.unary_unary(HEALTH)(b"", timeout=self.timeout))
            handle, request, answer = self.method(self.channel, op)
            return answer(handle(request, timeout=self.timeout, metadata=self.metadata))
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, op) from None

    def close(self) -> None:
        self.channel.close()


class AsyncGRPC(_Channel):
    def __init__(self, url: str, *, api_key: str | None, timeout: float) -> None:
        super().__init__(url, api_key=api_key, timeout=timeout)
        self.channel: Any = None  # made in the event loop that uses it

    def _open(self) -> Any:
        if self.channel is None:
            if self.tls:
                self.channel = grpc.aio.secure_channel(self.target, grpc.ssl_channel_credentials(),
                                                       CHANNEL_OPTIONS)
            else:
                self.channel = grpc.aio.insecure_channel(self.target, CHANNEL_OPTIONS)
        return self.channel

    async def send(self, op: Op) -> Any:
        channel = self._open()
        try:
            if op.name == "ready":
                return _health(await channel.unary_unary(HEALTH)(b"", timeout=self.timeout))
            handle, request, answer = self.method(channel, op)
            return answer(await handle(request, timeout=self.timeout, metadata=self.metadata))
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, op) from None

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
