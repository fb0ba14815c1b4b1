"""Bad input to the inference service, table-driven, over HTTP and gRPC against the real servers.

Every request field of every route and method gets wrong types, nulls, empty and oversized values,
too many items, corrupt data and raw garbage. Each case checks the answer (a 4xx / INVALID_ARGUMENT,
or RESOURCE_EXHAUSTED where that is the rule) names the field or item, that nothing the case caused
was logged with a traceback, and that the service still answers a good request afterwards.

One server (the deterministic fake encoder, small limits) runs for the whole module in its own
thread and event loop; the cases are plain synchronous HTTP and gRPC calls.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from PIL import Image

from protos import inference_pb2, inference_pb2_grpc
from services.inference.config import InferenceSettings
from services.inference.grpc_server import SERVICE_NAME
from services.inference.main import start_servers
from tests.fake_encoders import FakeEncoder

MAX_ITEMS = 8
MAX_BYTES = 300_000
MAX_PIXELS = 64 * 64
GRPC_LIMIT = MAX_BYTES + 64 * 1024  # the gRPC front's receive limit: MAX_REQUEST_BYTES + framing headroom
DEEP = 1000


def _image(size=(16, 12), colour=(200, 30, 90), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def _noise(size=(48, 48)) -> bytes:
    """A PNG of random pixels (so its compressed data is long enough to cut short)."""
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _bomb() -> bytes:
    """A tiny PNG whose header declares 20000 x 20000 pixels."""
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _image()
PNG_B64 = base64.b64encode(PNG).decode()
BIG_PNG = _image(size=(100, 100))  # 10,000 pixels: over MAX_PIXELS
BOMB = _bomb()
TIFF = _image(fmt="TIFF")
TRUNCATED = _noise()[:3000]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class LiveServer:
    """The inference servers (gRPC + HTTP) running in a thread with their own event loop."""

    def __init__(self, encoder: FakeEncoder, **limits: Any) -> None:
        settings = InferenceSettings(model="fake", host="127.0.0.1", grpc_port=0, http_port=0,
                                     batch_wait_ms=1, **limits).validate()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bad-input-server", daemon=True)
        self.thread.start()
        self.running = self.call(start_servers(encoder, settings))
        self.http = httpx.Client(base_url=self.running.http_url, timeout=30)
        self.channel = grpc.insecure_channel(self.running.grpc_target)
        self.stub = inference_pb2_grpc.InferenceStub(self.channel)

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.http.close()
        self.channel.close()
        self.call(self.running.stop(grace=1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def server():
    live = LiveServer(FakeEncoder(), max_items_per_request=MAX_ITEMS, max_request_bytes=MAX_BYTES,
                      max_image_pixels=MAX_PIXELS)
    yield live
    live.close()


@pytest.fixture
def no_traceback(caplog, capfd):
    """Fails the test if the case logged a traceback or anything at ERROR, or printed a traceback."""
    caplog.set_level(logging.DEBUG)
    yield
    bad = [r for r in caplog.records
           if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()
           or "RecursionError" in r.getMessage()]
    assert not bad, [(r.name, r.levelname, r.getMessage()) for r in bad]
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "RecursionError" not in out + err, (out + err)[-3000:]


def good_http(server: LiveServer) -> None:
    resp = server.http.post("/vectorize", json={"texts": ["still alive"], "images": [PNG_B64]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["textVectors"]) == 1 and len(body["imageVectors"]) == 1


def good_grpc(server: LiveServer) -> None:
    resp = server.stub.Vectorize(inference_pb2.VectorizeRequest(texts=["still alive"], images=[PNG]))
    assert resp.text_vectors.count == 1 and resp.image_vectors.count == 1


# --------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------

@dataclass
class HttpCase:
    id: str
    status: int
    names: str  # the error text contains this (the field, item or limit it is about)
    body: Any = None  # JSON-encoded unless ``raw`` is given
    raw: bytes | None = None
    method: str = "POST"
    path: str = "/vectorize"
    headers: dict[str, str] = field(default_factory=dict)


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


HTTP_CASES = [
    # the body as a whole
    HttpCase("body-empty", 400, "body", raw=b""),
    HttpCase("body-not-json", 400, "body is not valid JSON", raw=b"{nope"),
    HttpCase("body-not-utf8", 400, "body is not valid JSON", raw=b'{"texts": ["\xff\xfe"]}'),
    HttpCase("body-array", 400, "body must be a JSON object", body=["a"]),
    HttpCase("body-string", 400, "body must be a JSON object", body="texts"),
    HttpCase("body-number", 400, "body must be a JSON object", body=5),
    HttpCase("body-null", 400, "body must be a JSON object", raw=b"null"),
    HttpCase("body-nested-1000", 400, "nested too deeply", raw=nested(DEEP).encode()),
    HttpCase("body-object-nested-1000", 400, "nested too deeply",
             raw=("{\"a\": " * DEEP + "1" + "}" * DEEP).encode()),
    HttpCase("texts-nested-1000", 400, "nested too deeply", raw=b'{"texts": ' + nested(DEEP).encode() + b"}"),
    HttpCase("body-over-limit", 413, "MAX_REQUEST_BYTES", body={"texts": ["w" * (MAX_BYTES + 10)]}),
    HttpCase("body-over-limit-declared", 413, "MAX_REQUEST_BYTES", raw=b"{}",
             headers={"content-length": str(MAX_BYTES + 1)}),
    HttpCase("nothing", 422, "texts: the request has no texts and no images", body={}),
    HttpCase("misnamed-key", 422, "'text'", body={"text": ["a"]}),
    # texts
    HttpCase("texts-string", 422, "texts: must be a list", body={"texts": "a"}),
    HttpCase("texts-number", 422, "texts: must be a list", body={"texts": 3}),
    HttpCase("texts-object", 422, "texts: must be a list", body={"texts": {"a": 1}}),
    HttpCase("texts-bool", 422, "texts: must be a list", body={"texts": True}),
    HttpCase("texts-item-null", 422, "texts[1]: must be a string", body={"texts": ["a", None]}),
    HttpCase("texts-item-number", 422, "texts[0]: must be a string", body={"texts": [1.5]}),
    HttpCase("texts-item-list", 422, "texts[2]: must be a string", body={"texts": ["a", "b", ["c"]]}),
    HttpCase("texts-item-object", 422, "texts[0]: must be a string", body={"texts": [{}]}),
    HttpCase("texts-lone-surrogate", 422, "texts[1]: holds a lone surrogate (U+D800) at character 3",
             raw=b'{"texts": ["ok", "abc\\ud800def"]}'),
    HttpCase("texts-lone-low-surrogate", 422, "texts[0]: holds a lone surrogate (U+DC00) at character 0",
             raw=b'{"texts": ["\\udc00"]}'),
    HttpCase("texts-empty-list", 422, "no texts and no images", body={"texts": [], "images": []}),
    HttpCase("texts-null-images-null", 422, "no texts and no images", body={"texts": None, "images": None}),
    HttpCase("texts-too-many", 422, "MAX_ITEMS_PER_REQUEST", body={"texts": ["t"] * (MAX_ITEMS + 1)}),
    HttpCase("items-too-many", 422, "MAX_ITEMS_PER_REQUEST",
             body={"texts": ["t"] * MAX_ITEMS, "images": [PNG_B64]}),
    # images
    HttpCase("images-string", 422, "images: must be a list", body={"images": PNG_B64}),
    HttpCase("images-object", 422, "images: must be a list", body={"images": {"0": PNG_B64}}),
    HttpCase("images-item-null", 422, "images[1]: must be a string", body={"images": [PNG_B64, None]}),
    HttpCase("images-item-number", 422, "images[0]: must be a string", body={"images": [7]}),
    HttpCase("images-item-bytes-list", 422, "images[0]: must be a string", body={"images": [[137, 80, 78]]}),
    HttpCase("images-empty-string", 422, "images[0]: ", body={"images": [""]}),
    HttpCase("images-blank-string", 422, "images[0]: ", body={"images": ["   "]}),
    HttpCase("images-bad-base64", 422, "images[1]: invalid base64", body={"images": [PNG_B64, "***"]}),
    HttpCase("images-bad-base64-length", 422, "images[0]: invalid base64", body={"images": ["abcde"]}),
    HttpCase("images-data-url-not-base64", 422, "images[0]: a data: URL must be base64",
             body={"images": ["data:image/png,abc"]}),
    HttpCase("images-data-url-empty", 422, "images[0]: is empty",
             body={"images": ["data:image/png;base64,"]}),
    HttpCase("images-padding-inside", 422, "images[0]: invalid base64: '=' padding before the end",
             body={"images": [PNG_B64[:8] + "==" + PNG_B64[8:]]}),
    HttpCase("images-too-much-padding", 422, "images[0]: invalid base64: wrong '=' padding",
             body={"images": [PNG_B64.rstrip("=") + "==="]}),
    HttpCase("images-not-an-image", 422, "images[0]: not a supported image",
             body={"images": [b64(b"just some bytes")]}),
    HttpCase("images-tiff", 422, "images[0]: not a supported image", body={"images": [b64(TIFF)]}),
    HttpCase("images-truncated", 422, "images[0]: ", body={"images": [b64(TRUNCATED)]}),
    HttpCase("images-too-many-pixels", 422, "images[1]: image is 100x100",
             body={"images": [PNG_B64, b64(BIG_PNG)]}),
    HttpCase("images-bomb", 422, "images[0]: ", body={"images": [b64(BOMB)]}),
    HttpCase("images-too-many", 422, "MAX_ITEMS_PER_REQUEST", body={"images": [PNG_B64] * (MAX_ITEMS + 1)}),
    # normalize
    HttpCase("normalize-string", 422, "normalize", body={"texts": ["a"], "normalize": "yes"}),
    HttpCase("normalize-number", 422, "normalize", body={"texts": ["a"], "normalize": 1}),
    HttpCase("normalize-list", 422, "normalize", body={"texts": ["a"], "normalize": [True]}),
    # routes and methods
    HttpCase("unknown-path", 404, "no route GET /vectorise", method="GET", path="/vectorise"),
    HttpCase("unknown-path-post", 404, "no route POST /v1/vectorize", path="/v1/vectorize", body={}),
    HttpCase("vectorize-get", 405, "method GET is not allowed on /vectorize", method="GET"),
    HttpCase("vectorize-put", 405, "method PUT is not allowed on /vectorize", method="PUT", body={}),
    HttpCase("meta-post", 405, "method POST is not allowed on /meta", path="/meta", body={}),
    HttpCase("metrics-delete", 405, "method DELETE is not allowed on /metrics", method="DELETE",
             path="/metrics"),
    HttpCase("live-post", 405, "/.well-known/live", path="/.well-known/live", body={}),
    HttpCase("ready-patch", 405, "/.well-known/ready", method="PATCH", path="/.well-known/ready", body={}),
]


def send(server: LiveServer, case: HttpCase) -> httpx.Response:
    content = case.raw if case.raw is not None else (
        None if case.body is None and case.method in ("GET", "DELETE") else json.dumps(case.body).encode())
    headers = {"content-type": "application/json", **case.headers}
    if "content-length" in case.headers:  # a declared length larger than what is sent: a raw socket
        return raw_http(server, case.method, case.path, headers, content or b"")
    return server.http.request(case.method, case.path, content=content, headers=headers)


def raw_http(server: LiveServer, method: str, path: str, headers: dict[str, str],
             body: bytes) -> httpx.Response:
    """One request written by hand on a socket (httpx refuses to send a wrong Content-Length)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    port = server.running.http_port
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    raw_headers, _, content = rest.partition(b"\r\n\r\n")
    parsed = [tuple(line.decode().split(": ", 1)) for line in raw_headers.split(b"\r\n") if line]
    return httpx.Response(int(status_line.split()[1]), headers=parsed, content=content)


@pytest.mark.parametrize("case", HTTP_CASES, ids=lambda c: c.id)
def test_http_bad_input(server, no_traceback, case):
    resp = send(server, case)
    assert resp.status_code == case.status, (resp.status_code, resp.text)
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"error"}, body  # never FastAPI's {"detail": ...}
    assert case.names in body["error"], body
    good_http(server)


def test_http_nesting_on_every_json_route(server, no_traceback):
    """Every route that takes a body (found in the service's own OpenAPI document) refuses deep nesting
    with a 400 {"error"}; routes added later are covered without changing this test."""
    spec = server.http.get("/openapi.json").json()
    routes = [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops
              if method in ("post", "put", "patch")]
    assert ("POST", "/vectorize") in routes
    for method, path in routes:
        for raw in (nested(DEEP).encode(), b'{"texts": ' + nested(DEEP).encode() + b"}",
                    b'{"x": ' + nested(5 * DEEP, '"deep"').encode() + b"}"):
            resp = server.http.request(method, path, content=raw,
                                       headers={"content-type": "application/json"})
            assert resp.status_code == 400, (method, path, resp.status_code, resp.text[:200])
            assert "nested too deeply" in resp.json()["error"]
    good_http(server)


def test_http_chunked_body_over_the_limit_is_413(server, no_traceback):
    def chunks():
        yield b'{"texts": ["'
        for _ in range(MAX_BYTES // 10_000 + 2):
            yield b"x" * 10_000
        yield b'"]}'

    resp = server.http.post("/vectorize", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413 and "MAX_REQUEST_BYTES" in resp.json()["error"]
    good_http(server)


# --------------------------------------------------------------------------------------------------
# gRPC
# --------------------------------------------------------------------------------------------------

@dataclass
class GrpcCase:
    id: str
    code: grpc.StatusCode
    names: str
    request: Any  # a request message, or raw bytes sent as the request
    method: str = "Vectorize"


V = inference_pb2.VectorizeRequest
BAD = grpc.StatusCode.INVALID_ARGUMENT
OVERSIZED = V(images=[b"\xff" * (GRPC_LIMIT + 6)])
GRPC_CASES = [
    # raw bytes that are no valid request message, on every method
    GrpcCase("garbage", BAD, "request: the bytes are not a valid polyvec.inference.v1.VectorizeRequest",
             b"\xff\xff\xff\xff\x0f not protobuf"),
    GrpcCase("truncated-field", BAD, "not a valid polyvec.inference.v1.VectorizeRequest", b"\x0a\x10abc"),
    GrpcCase("texts-bad-utf8", BAD, "not a valid polyvec.inference.v1.VectorizeRequest", b"\x0a\x02\xff\xfe"),
    GrpcCase("texts-lone-surrogate-utf8", BAD, "not a valid polyvec.inference.v1.VectorizeRequest",
             b"\x0a\x03\xed\xa0\x80"),
    GrpcCase("meta-garbage", BAD, "request: the bytes are not a valid polyvec.inference.v1.MetaRequest",
             b"\xff\xff\xff\xff\x0f not protobuf", method="Meta"),
    # size limits
    GrpcCase("message-over-limit", grpc.StatusCode.RESOURCE_EXHAUSTED,
             f"Received message larger than max ({OVERSIZED.ByteSize()} vs. {GRPC_LIMIT})", OVERSIZED),
    GrpcCase("items-over-max-request-bytes", BAD,
             "request: 300001 bytes of input; the limit (MAX_REQUEST_BYTES)",
             V(texts=["w" * (MAX_BYTES + 1)])),
    GrpcCase("texts-huge", grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max",
             V(texts=["word " * (GRPC_LIMIT // 5 + 10)])),
    # texts
    GrpcCase("nothing", BAD, "texts: the request has no texts and no images", V()),
    GrpcCase("only-normalize", BAD, "texts: the request has no texts and no images", V(normalize=True)),
    GrpcCase("texts-too-many", BAD, "MAX_ITEMS_PER_REQUEST", V(texts=["t"] * (MAX_ITEMS + 1))),
    GrpcCase("items-too-many", BAD, "MAX_ITEMS_PER_REQUEST", V(texts=["t"] * MAX_ITEMS, images=[PNG])),
    # images
    GrpcCase("images-empty", BAD, "images[0]: empty image data", V(images=[b""])),
    GrpcCase("images-not-an-image", BAD, "images[1]: not a supported image", V(images=[PNG, b"bytes"])),
    GrpcCase("images-base64-text", BAD, "images[0]: not a supported image", V(images=[PNG_B64.encode()])),
    GrpcCase("images-tiff", BAD, "images[0]: not a supported image", V(images=[TIFF])),
    GrpcCase("images-truncated", BAD, "images[0]: ", V(images=[TRUNCATED])),
    GrpcCase("images-too-many-pixels", BAD, "images[0]: image is 100x100", V(images=[BIG_PNG])),
    GrpcCase("images-bomb", BAD, "images[0]: ", V(images=[BOMB])),
    GrpcCase("images-too-many", BAD, "MAX_ITEMS_PER_REQUEST", V(images=[PNG] * (MAX_ITEMS + 1))),
    # a method that does not exist
    GrpcCase("unknown-method", grpc.StatusCode.UNIMPLEMENTED, "", b"", method="Vectorise"),
]


def call_grpc(server: LiveServer, case: GrpcCase):
    path = f"/{SERVICE_NAME}/{case.method}"
    if isinstance(case.request, bytes):
        return server.channel.unary_unary(path)(case.request, timeout=30)
    serialize = type(case.request).SerializeToString
    return server.channel.unary_unary(path, request_serializer=serialize)(case.request, timeout=30)


@pytest.mark.parametrize("case", GRPC_CASES, ids=lambda c: c.id)
def test_grpc_bad_input(server, no_traceback, case):
    with pytest.raises(grpc.RpcError) as err:
        call_grpc(server, case)
    assert err.value.code() == case.code, (err.value.code(), err.value.details())
    assert case.names in (err.value.details() or ""), err.value.details()
    good_grpc(server)


def test_grpc_garbage_on_every_method_of_every_service(server, no_traceback):
    """Every method the server offers (Inference, health, reflection; methods added later included)
    answers INVALID_ARGUMENT to bytes that are not its request message."""
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    garbage = b"\xff\xff\xff\xff\x0f not protobuf"
    services = [inference_pb2.DESCRIPTOR.services_by_name["Inference"],
                health_pb2.DESCRIPTOR.services_by_name["Health"],
                reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]]
    seen = []
    for service in services:
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            with pytest.raises(grpc.RpcError) as err:
                if method.client_streaming:
                    list(server.channel.stream_stream(path)(iter([garbage]), timeout=30))
                elif method.server_streaming:
                    list(server.channel.unary_stream(path)(garbage, timeout=30))
                else:
                    server.channel.unary_unary(path)(garbage, timeout=30)
            assert err.value.code() == BAD, (path, err.value.code(), err.value.details())
            assert method.input_type.full_name in err.value.details()
            seen.append(method.name)
    assert {"Vectorize", "Meta", "Check", "Watch", "ServerReflectionInfo"} <= set(seen)
    good_grpc(server)
