"""Table-driven bad-input suite: every request field of every gateway route, over HTTP and over gRPC.

One real ``polyvec gateway`` process (embedded store in a temporary DATA_DIR) over the real inference
server (the deterministic test encoder), with API keys on. Each case sends one bad request and checks:

* the answer is the expected 4xx (HTTP, JSON ``{"error", "field"}``) or status code (gRPC, with the
  field in the ``field`` trailing metadata), naming the field exactly (objects of an import are
  answered one by one: the object's result names the field);
* nothing was logged with a traceback or at ERROR level;
* the gateway still answers a good request afterwards.

Classes covered: wrong types, nulls, unknown keys, huge values, empty and oversized lists, nesting,
raw protobuf garbage, chunked bodies (tests/test_gateway_limits.py streams them past the limit), float
overflow, partial configs, SSRF targets including decimal/hex/octal IP spellings, wrong API keys.
"""

from __future__ import annotations

import base64
import copy
import io
import json
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from google.protobuf.internal.encoder import _VarintBytes
from PIL import Image

from protos import gateway_pb2 as pb
from protos import gateway_pb2_grpc
from tests.live_gateway import GatewayProcess, InferenceThread

KEY = "suite-key"
HEADERS = {"x-api-key": KEY}
METADATA = (("x-api-key", KEY),)
BATCH = 20  # IMPORT_BATCH_SIZE of the gateway under test
DIMS = 24
QUERY_KINDS = "near_text|near_image|near_vector|bm25|neural_sparse|hybrid"
MISSING = object()  # a key left out


def png(colour=(200, 30, 30), size=8) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


DOCS = {
    "name": "docs",
    "vectorizers": {"main": {"model": "clip", "text_fields": ["title"], "image_fields": ["photo"]}},
}
OWN = {"name": "own", "vectorizers": {"v": {"dimensions": 4}}}
SHOP = {
    "name": "shop",
    "vectorizers": {"main": {"model": "clip", "text_fields": ["title"]}},
    "fields": {"colour": "keyword", "n": "integer", "price": "float"},
}
NOBM25 = {
    "name": "nobm25",
    "vectorizers": {"main": {"model": "clip", "text_fields": ["title"]}},
    "bm25": {"fields": []},
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with InferenceThread(dims=DIMS) as inference:
        workdir = tmp_path_factory.mktemp("bad-input")
        env = dict(
            MODELS=f"clip={inference.address}",
            API_KEYS=KEY,
            IMPORT_BATCH_SIZE=str(BATCH),
            MAX_REQUEST_BYTES=str(4 * 1024 * 1024),
            INFERENCE_TIMEOUT_S="20",
        )
        with GatewayProcess(workdir, **env) as gw:
            with httpx.Client(base_url=gw.http, headers=HEADERS, timeout=60) as c:
                for definition in (DOCS, OWN, NOBM25, SHOP):
                    assert c.post("/v1/collections", json=definition).status_code == 201
                r = c.post(
                    "/v1/collections/docs/objects",
                    json={
                        "objects": [
                            {"id": "a", "properties": {"title": "a red fox", "n": 1, "photo": png()}},
                            {"id": "b", "properties": {"title": "a blue whale", "n": 2}},
                        ]
                    },
                )
                assert r.json()["ok"] == 2, r.text
                r = c.post(
                    "/v1/collections/own/objects",
                    json={"objects": [{"id": "o", "vectors": {"v": [0.1, 0.2, 0.3, 0.4]}}]},
                )
                assert r.json()["ok"] == 1, r.text
                r = c.post(
                    "/v1/collections/shop/objects",
                    json={
                        "objects": [
                            {"id": "s1",
                             "properties": {"title": "red hat", "colour": "red", "n": 1, "price": 2.5}},
                            {"id": "s2",
                             "properties": {"title": "blue hat", "colour": "blue", "n": 2, "price": 4}},
                        ]
                    },
                )
                assert r.json()["ok"] == 2, r.text
            gw.log_since()
            yield gw


def still_serves_and_logged_nothing_bad(gw: GatewayProcess, http: httpx.Client) -> None:
    r = http.post("/v1/collections/docs/search", json={"bm25": {"query": "fox"}})
    assert r.status_code == 200 and [h["id"] for h in r.json()["hits"]] == ["a"], r.text
    log = gw.log_since()
    assert "Traceback" not in log and " ERROR " not in log and "Exception" not in log, log


@pytest.fixture(scope="module")
def http(gateway):
    with httpx.Client(base_url=gateway.http, headers=HEADERS, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def channel(gateway):
    with grpc.insecure_channel(gateway.grpc_target) as ch:
        yield ch


# ---------------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Http:
    id: str
    method: str
    path: str
    body: Any = MISSING  # JSON-encoded unless raw
    raw: bytes | None = None
    status: int = 400
    field: str | None = None
    params: dict | None = None


def changed(base: dict, path: str, value: Any) -> dict:
    """``base`` with the dotted ``path`` set to ``value`` (MISSING removes it)."""
    out = copy.deepcopy(base)
    node = out
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    if value is MISSING:
        node.pop(last, None)
    else:
        node[last] = value
    return out


NEW = {"name": "tmp", "vectorizers": {"v": {"model": "clip", "text_fields": ["title"]}}}


def create_cases() -> list[Http]:
    cases = []

    def add(path: str, value: Any, field: str | None = None, status: int = 400) -> None:
        shown = "missing" if value is MISSING else json.dumps(value)[:40]
        cases.append(
            Http(
                f"create:{path}={shown}",
                "POST",
                "/v1/collections",
                changed(NEW, path, value),
                status=status,
                field=field or path,
            )
        )

    for value in (MISSING, None, 5, "", "x y", "a" * 64, "9lives", ["tmp"], "x" * 100_000):
        add("name", value)
    for value in (None, "x", [], 5):
        add("vectorizers", value)
    add("vectorizers", {"bad name": NEW["vectorizers"]["v"]})
    add("vectorizers", {"bm25": NEW["vectorizers"]["v"]})
    add("vectorizers.v", None)
    add("vectorizers.v", 5)
    add("vectorizers.v", {}, "vectorizers.v.dimensions")
    add("vectorizers.v.model", 5)
    add("vectorizers.v.model", "nope")
    add("vectorizers.v.model", ["clip"])
    for value in (5, "no-port", "h:0", "h:70000", "169.254.169.254:80", "127.0.0.1:1", "[::1]:50051"):
        cases.append(
            Http(
                f"create:inference_url={value}",
                "POST",
                "/v1/collections",
                {"name": "tmp", "vectorizers": {"v": {"inference_url": value, "text_fields": ["t"]}}},
                field="vectorizers.v.inference_url",
            )
        )
    cases.append(
        Http(
            "create:model+inference_url",
            "POST",
            "/v1/collections",
            changed(NEW, "vectorizers.v.inference_url", "127.0.0.1:1"),
            field="vectorizers.v.inference_url",
        )
    )
    for value in ("title", None, ["bad name"], ["_polyvec_x"], ["t", "t"], ["x" * 200], ["a..b"]):
        add("vectorizers.v.text_fields", value)
    add("vectorizers.v.text_fields", [3], "vectorizers.v.text_fields.0")
    add("vectorizers.v.text_fields", [])  # a model needs fields to embed
    add("vectorizers.v.image_fields", "photo")
    add("vectorizers.v.image_fields", ["title"])  # both text and image
    add("vectorizers.v.weights", "x")
    add("vectorizers.v.weights", {"zz": 1}, "vectorizers.v.weights.zz")
    for value in ("heavy", 0, -1, 1e400, True, None):
        add("vectorizers.v.weights", {"title": value}, "vectorizers.v.weights.title")
    for value in (0, -1, 70_000, "x", "24", 1.5, 24.0, True, 10**30):
        add("vectorizers.v.dimensions", value)
    add("vectorizers.v.dimensions", 7)  # the model serves 24
    for value in ("manhattan", 5):
        add("vectorizers.v.distance", value)
    add("vectorizers.v.zz", 1)
    cases.append(
        Http(
            "create:own-vectors-without-dimensions",
            "POST",
            "/v1/collections",
            {"name": "tmp", "vectorizers": {"v": {}}},
            field="vectorizers.v.dimensions",
        )
    )
    cases.append(
        Http(
            "create:fields-without-model",
            "POST",
            "/v1/collections",
            {"name": "tmp", "vectorizers": {"v": {"dimensions": 4, "image_fields": ["p"]}}},
            field="vectorizers.v.image_fields",
        )
    )
    cases.append(
        Http("create:no-vectors-no-bm25", "POST", "/v1/collections", {"name": "tmp"}, field="vectorizers")
    )
    for value in ("x", 5, []):
        add("bm25", value)
    add("bm25", {"fields": "title"}, "bm25.fields")
    add("bm25", {"fields": [5]}, "bm25.fields.0")
    add("bm25", {"fields": ["bad name"]}, "bm25.fields")
    for key, value in (
        ("k1", -1),
        ("k1", 11),
        ("k1", "x"),
        ("k1", "1.2"),
        ("k1", True),
        ("b", 2),
        ("b", -0.1),
        ("b", 1e400),
        ("avg_len", 0),
        ("avg_len", -3),
        ("avg_len", "x"),
        ("avg_len", 1e400),
        ("stopwords", 5),
        ("stopwords", [5]),
        ("stopwords", "klingon"),
        ("language", "klingon"),
        ("language", 5),
        ("analyzer", "x"),
        ("tokenizer", "x"),
        ("zz", 1),
    ):
        add("bm25", {key: value}, f"bm25.{key}")
    # a lone surrogate anywhere in a definition: the text rule names it, never the analyzer's codec text
    add("bm25", {"stopwords": ["ok", "a\ud800b"]}, "bm25.stopwords.1")
    add("bm25", {"stopwords": {"words": ["x\udc00"]}}, "bm25.stopwords.words.0")
    add("bm25", {"fields": ["t\ud800"]}, "bm25.fields.0")
    add("name", "tmp\ud800")
    add("vectorizers.v.text_fields", ["title\udc00"], "vectorizers.v.text_fields.0")
    for key, values in (
        ("distance", ("x", 5)),
        ("shard_number", (0, 2000, "x", "2", 1.5, 2.0, True)),
        ("replication_factor", (0, 65)),
        ("hnsw_m", (-1, 513)),
        ("hnsw_ef_construct", (3, 5000)),
    ):
        for value in values:
            add(key, value)
    add("fields", "price")
    add("fields", {"price": 5}, "fields.price")
    add("fields", {"price": "money"}, "fields.price")
    add("fields", {"price": {"type": "money"}}, "fields.price.type")
    add("fields", {"bad name": "float"})
    add("zz", 1)
    cases.append(Http("create:exists", "POST", "/v1/collections", DOCS, status=409, field="name"))
    return cases


def body_cases(method: str, path: str, what: str) -> list[Http]:
    """Bodies that are not a JSON object, or not JSON, on a JSON route."""
    return [
        Http(f"{what}:body=[]", method, path, [], field="body"),
        Http(f"{what}:body=str", method, path, "x", field="body"),
        Http(f"{what}:body=5", method, path, 5, field="body"),
        Http(f"{what}:body=null", method, path, raw=b"null", field="body"),
        Http(f"{what}:body=empty", method, path, raw=b"", field="body"),
        Http(f"{what}:body=not-json", method, path, raw=b"{nope", field="body"),
        Http(f"{what}:body=not-utf8", method, path, raw=b'{"a": "\xff\xfe"}', field="body"),
        Http(f"{what}:body=nested", method, path, raw=b"[" * 1000 + b"]" * 1000, field="0" + ".0" * 63),
        Http(
            f"{what}:body=nested-object",
            method,
            path,
            raw=b'{"a": ' + b'{"a": ' * 999 + b"1" + b"}" * 1000,
            field="a" + ".a" * 63,
        ),
    ]


def optional_body_cases(method: str, path: str, what: str) -> list[Http]:
    """body_cases of a route whose body may be left out: no body (or JSON null) is the empty request."""
    return [c for c in body_cases(method, path, what) if not c.id.endswith(("body=null", "body=empty"))]


def import_cases() -> list[Http]:
    path = "/v1/collections/docs/objects"
    one = {"id": "x", "properties": {"title": "ok"}}
    cases = body_cases("POST", path, "import")
    for body in (
        {},
        {"objects": None},
        {"objects": "x"},
        {"objects": {}},
        {"objects": 5},
        {"objects": [one] * (BATCH + 1)},
    ):
        cases.append(Http(f"import:{json.dumps(body)[:40]}", "POST", path, body, field="objects"))
    cases.append(Http("import:zz", "POST", path, {"objects": [], "zz": 1}, field="zz"))
    cases.append(
        Http("import:missing-collection", "POST", "/v1/collections/nope/objects", {"objects": []}, status=404)
    )
    return cases


def search_cases() -> list[Http]:
    path = "/v1/collections/docs/search"
    cases = body_cases("POST", path, "search")
    good = {"bm25": {"query": "fox"}}

    def add(body: dict, field: str, status: int = 400, where: str = path) -> None:
        cases.append(Http(f"search:{json.dumps(body)[:60]}", "POST", where, body, status=status, field=field))

    add({}, QUERY_KINDS)
    add({"near_text": None}, QUERY_KINDS)
    add({"near_text": {"query": "a"}, "bm25": {"query": "a"}}, QUERY_KINDS)
    for value in ("x", 5, []):
        add({"near_text": value}, "near_text")
    for value in ({}, {"query": ""}, {"query": 5}, {"query": None}, {"query": ["a"]}):
        add({"near_text": value}, "near_text.query")
    add({"near_text": {"query": "a", "zz": 1}}, "near_text.zz")
    add({"near_text": {"query": "a"}}, "near_text.query", where="/v1/collections/own/search")
    for image in (
        "",
        "@@@",
        5,
        None,
        base64.b64encode(b"not an image").decode(),
        "data:image/png;base64,@@",
        "ftp://example.com/a.png",
        "http://10.0.0.1/a.png",
        "http://192.168.1.1/a.png",
        "http://172.16.0.1/a.png",
        "http://100.64.0.1/a.png",
        "http://169.254.169.254/latest/",
        "http://0.0.0.0/a.png",
        "http://[::1]/a.png",
        "http://[fc00::1]/a.png",
        "http://[fe80::1]/a.png",
        "http://[::ffff:10.0.0.1]/a.png",
        "http://localhost/a.png",
        "http://2130706433/a.png",
        "http://0x7f000001/a.png",
        "http://0177.0.0.1/a.png",
        "http://127.1/a.png",
        "http://167772161/a.png",
        "http://0xA9FEA9FE/",
    ):
        add({"near_image": {"image": image}}, "near_image.image")
    add({"near_image": {}}, "near_image.image")
    add({"near_image": {"image": png(), "zz": 1}}, "near_image.zz")
    zeros = [0.0] * DIMS
    for vector, field in (
        ([], "near_vector.vector"),
        ("x", "near_vector.vector"),
        (None, "near_vector.vector"),
        ([1, 2], "near_vector.vector"),
        ([0.5] * (DIMS + 1), "near_vector.vector"),
        ([0.5] * 100_000, "near_vector.vector"),
        (["a"] + zeros[1:], "near_vector.vector.0"),
        ([None] + zeros[1:], "near_vector.vector.0"),
        ([[1]] + zeros[1:], "near_vector.vector.0"),
        ([1e39] + zeros[1:], "near_vector.vector.0"),
        (zeros[1:] + [-1e39], f"near_vector.vector.{DIMS - 1}"),
        (zeros[:5] + [3.5e38] + zeros[6:], "near_vector.vector.5"),
    ):
        add({"near_vector": {"vector": vector}}, field)
    add({"near_vector": {"vector": zeros, "zz": 1}}, "near_vector.zz")
    for value in ({}, {"query": ""}, {"query": 5}):
        add({"bm25": value}, "bm25.query")
    add({"bm25": {"query": "a", "zz": 1}}, "bm25.zz")
    add({"bm25": {"query": "fox"}}, "bm25", where="/v1/collections/nobm25/search")
    add({"hybrid": {"query": "fox"}}, "hybrid", where="/v1/collections/nobm25/search")
    for alpha in (2, -1, "x", "0.5", True, None, 1e400, float("nan")):
        add({"hybrid": {"query": "a", "alpha": alpha}}, "hybrid.alpha")
    for fusion in ("max", 5, None):
        add({"hybrid": {"query": "a", "fusion": fusion}}, "hybrid.fusion")
    add({"hybrid": {"query": ""}}, "hybrid.query")
    for weights in ({"main": 1}, {"main": 1, "bm25": 1, "x": 1, "y": 1}, {"main": 0, "bm25": 0}, None, [1, 2],
                    {"main": -1, "bm25": 1}, {"main": 1e400, "bm25": 1}):
        add({"hybrid": {"query": "a", "weights": weights}}, "hybrid.weights")
    for weight in ("x", True, None):
        add({"hybrid": {"query": "a", "weights": {"main": weight, "bm25": 1}}}, "hybrid.weights.main")
    add({"hybrid": {"query": "a", "weights": {"main": 1, "nope": 1}}}, "hybrid.weights.nope")
    add({"hybrid": {"query": "a", "weights": {"main": 1, "bm25": 1}}}, "hybrid.weights.bm25",
        where="/v1/collections/nobm25/search")
    add({"hybrid": {"query": "a", "alpha": 0.5, "weights": {"main": 1, "bm25": 1}}}, "hybrid")
    for value in ({}, {"query": ""}, {"query": 5}, {"query": None}):
        add({"neural_sparse": value}, "neural_sparse.query")
    add({"neural_sparse": {"query": "a", "zz": 1}}, "neural_sparse.zz")
    add({"neural_sparse": {"query": "a"}}, "neural_sparse.vector")  # docs has no sparse vectorizers
    add({"neural_sparse": {"query": "a", "vector": 5}}, "neural_sparse.vector")
    add({"hybrid": {"query": "a", "zz": 1}}, "hybrid.zz")
    for vector in ("nope", 5, ["main"]):
        add({**good, "vector": vector}, "vector")
    add({"near_text": {"query": "a"}, "vector": "nope"}, "vector")
    for flt, field in (
        ("x", "filter"),
        ([], "filter"),
        (5, "filter"),
        ({"n": {"gt": "x"}}, "filter.n.gt"),
        ({"must": "x"}, "filter.must"),
        ({"must": ["x"]}, "filter.must.0"),
        ({"n": []}, "filter.n"),
        ({"n": {"zz": 1}}, "filter.n.zz"),
        ({"n": {}}, "filter.n"),
        ({"n": [1, "a"]}, "filter.n"),
        ({"n": {"in": "x"}}, "filter.n.in"),
        ({"n": None}, "filter.n"),
        ({"": 1}, "filter"),
        ({"n": {"gte": 1e400}}, "filter.n.gte"),
        ({"n": [1.5]}, "filter.n"),
        ({"n": {"eq": [1]}}, "filter.n.eq"),
    ):
        add({**good, "filter": flt}, field)
    deep = {"n": 1}
    for _ in range(16):
        deep = {"must": [deep]}
    add({**good, "filter": deep}, "filter" + ".must.0" * 16)
    for value in (0, -1, 10_001, "x", "5", 1.5, 5.0, None, 10**30, True, [5]):
        add({**good, "limit": value}, "limit")
    for value in (-1, 10_001, "x", "1", None, True):
        add({**good, "offset": value}, "offset")
    for value, field in (
        ("x", "properties"),
        ([5], "properties.0"),
        ({}, "properties"),
        ([""], "properties.0"),
        (["title", "a b"], "properties.1"),
        (["a[0]"], "properties.0"),
    ):
        add({**good, "properties": value}, field)
    add({**good, "zz": 1}, "zz")
    add(good, None, status=404, where="/v1/collections/nope/search")
    return cases


def object_cases() -> list[Http]:
    path = "/v1/collections/docs/objects/a"
    cases = body_cases("PUT", path, "put")
    for body, field in (
        ({"properties": "x"}, "properties"),
        ({"properties": None}, "properties"),
        ({"properties": []}, "properties"),
        ({"zz": 1}, "zz"),
        ({"properties": {"title": {"a": 1}}}, "properties.title"),
        ({"properties": {"title": True}}, "properties.title"),
        ({"properties": {"photo": "@@@"}}, "properties.photo"),
        ({"properties": {"photo": 5}}, "properties.photo"),
        ({"properties": {"photo": "http://10.0.0.1/a.png"}}, "properties.photo"),
        ({"properties": {"photo": "http://0x7f000001/a.png"}}, "properties.photo"),
        ({"properties": {"_polyvec_id": "x", "title": "t"}}, "properties._polyvec_id"),
        ({"properties": {}}, "properties"),
        ({"properties": {"title": "t"}, "vectors": "x"}, "vectors"),
        ({"properties": {"title": "t"}, "vectors": {"nope": [1.0]}}, "vectors.nope"),
        ({"properties": {"title": "t"}, "vectors": {"main": [1.0]}}, "vectors.main"),
        ({"properties": {"title": "t"}, "vectors": {"main": [1e39] * DIMS}}, "vectors.main.0"),
    ):
        cases.append(Http(f"put:{json.dumps(body)[:50]}", "PUT", path, body, field=field))
    cases.append(
        Http(
            "put:own-needs-vectors",
            "PUT",
            "/v1/collections/own/objects/p",
            {"properties": {}},
            field="vectors.v",
        )
    )
    cases.append(
        Http(
            "put:own-overflow",
            "PUT",
            "/v1/collections/own/objects/p",
            {"vectors": {"v": [0.1, 0.2, -1e39, 0.4]}},
            field="vectors.v.2",
        )
    )
    cases.append(
        Http(
            "put:missing-collection",
            "PUT",
            "/v1/collections/nope/objects/a",
            {"properties": {"title": "t"}},
            status=404,
        )
    )
    cases.append(
        Http("get:with_vectors", "GET", path, params={"with_vectors": "maybe"}, field="with_vectors")
    )
    for method in ("GET", "DELETE"):
        cases.append(Http(f"{method}:missing-object", method, "/v1/collections/docs/objects/zzz", status=404))
        cases.append(
            Http(f"{method}:missing-collection", method, "/v1/collections/nope/objects/a", status=404)
        )
        cases.append(Http(f"{method}:collection", method, "/v1/collections/nope", status=404))
        cases.append(Http(f"{method}:long-name", method, "/v1/collections/" + "n" * 5000, status=404))
        cases.append(Http(f"{method}:odd-name", method, "/v1/collections/x%20y%00", status=404))
    cases.append(Http("route:unknown", "GET", "/v1/nothing-here", status=404))
    cases.append(Http("route:wrong-method", "PATCH", "/v1/collections", status=405))
    return cases


def feature_cases() -> list[Http]:
    """The routes and search options beyond create / import / search / objects: browse order, MMR,
    facets, BM25 reindex, adding fields, scroll, list, count, delete by filter, batch search."""
    cases: list[Http] = []
    shop = "/v1/collections/shop"
    good = {"near_text": {"query": "hat"}}

    def add(what: str, method: str, path: str, body: Any, field: str | None, status: int = 400) -> None:
        shown = json.dumps(body)[:60] if body is not MISSING else ""
        cases.append(Http(f"{what}:{shown}", method, path, body, status=status, field=field))

    # search: order_by (browse) and diversity (MMR)
    for value, field in (
        ("n", "order_by"),
        ({}, "order_by.field"),
        ({"field": ""}, "order_by.field"),
        ({"field": 5}, "order_by.field"),
        ({"field": "nope"}, "order_by.field"),
        ({"field": "colour"}, "order_by.field"),  # a keyword: not orderable
        ({"field": "n", "direction": "up"}, "order_by.direction"),
        ({"field": "n", "direction": 1}, "order_by.direction"),
        ({"field": "n", "zz": 1}, "order_by.zz"),
    ):
        add("order_by", "POST", f"{shop}/search", {"order_by": value}, field)
    for value, field in (
        ("mmr", "diversity"),
        ({"mmr": "x"}, "diversity.mmr"),
        ({"mmr": {"lambda": 1.5}}, "diversity.mmr.lambda"),
        ({"mmr": {"lambda": -0.1}}, "diversity.mmr.lambda"),
        ({"mmr": {"lambda": "0.5"}}, "diversity.mmr.lambda"),
        ({"mmr": {"lambda": 1e400}}, "diversity.mmr.lambda"),
        ({"mmr": {"candidates": 0}}, "diversity.mmr.candidates"),
        ({"mmr": {"candidates": 10_001}}, "diversity.mmr.candidates"),
        ({"mmr": {"candidates": 1.5}}, "diversity.mmr.candidates"),
        ({"mmr": {"candidates": "5"}}, "diversity.mmr.candidates"),
        ({"mmr": {"zz": 1}}, "diversity.mmr.zz"),
        ({"mmr": {}, "zz": 1}, "diversity.zz"),
    ):
        add("diversity", "POST", f"{shop}/search", {**good, "diversity": value}, field)
    bm25_mmr = {"bm25": {"query": "hat"}, "diversity": {"mmr": {}}}  # MMR needs a dense query
    add("diversity", "POST", f"{shop}/search", bm25_mmr, "diversity")
    # facets
    cases += body_cases("POST", f"{shop}/facets", "facets")
    for body, field in (
        ({}, "field"),
        ({"field": ""}, "field"),
        ({"field": 5}, "field"),
        ({"field": "nope"}, "field"),
        ({"field": "price"}, "field"),  # a float: not countable by value
        ({"field": "colour", "limit": 0}, "limit"),
        ({"field": "colour", "limit": 1001}, "limit"),
        ({"field": "colour", "limit": "5"}, "limit"),
        ({"field": "colour", "limit": 1.5}, "limit"),
        ({"field": "colour", "exact": "true"}, "exact"),
        ({"field": "colour", "filter": {"n": {"gt": "x"}}}, "filter.n.gt"),
        ({"field": "colour", "filter": "x"}, "filter"),
        ({"field": "colour", "zz": 1}, "zz"),
    ):
        add("facets", "POST", f"{shop}/facets", body, field)
    add("facets", "POST", "/v1/collections/nope/facets", {"field": "colour"}, None, 404)
    # BM25 reindex
    reindex = "/v1/collections/docs/bm25/reindex"
    cases += optional_body_cases("POST", reindex, "reindex")
    for body, field in (
        ({"avg_len": 0}, "avg_len"),
        ({"avg_len": -3}, "avg_len"),
        ({"avg_len": "8"}, "avg_len"),
        ({"avg_len": True}, "avg_len"),
        ({"avg_len": 1e400}, "avg_len"),
        ({"avg_len": float("nan")}, "avg_len"),
        ({"bm25": "x"}, "bm25"),
        ({"bm25": {"language": "klingon"}}, "bm25.language"),
        ({"bm25": {"k1": -1}}, "bm25.k1"),
        ({"bm25": {"zz": 1}}, "bm25.zz"),
        ({"zz": 1}, "zz"),
    ):
        add("reindex", "POST", reindex, body, field)
    add("reindex", "POST", "/v1/collections/nobm25/bm25/reindex", {}, "bm25")
    add("reindex", "POST", "/v1/collections/nope/bm25/reindex", {}, None, 404)
    # adding fields
    cases += body_cases("PATCH", shop, "patch")
    for body, field in (
        ({}, "fields"),
        ({"fields": "x"}, "fields"),
        ({"fields": {"colour": "integer"}}, "fields.colour"),  # a declared field keeps its type
        ({"fields": {"size": "nope"}}, "fields.size"),
        ({"fields": {"size": 5}}, "fields.size"),
        ({"fields": {"size": {"type": "nope"}}}, "fields.size.type"),
        ({"fields": {"size": {"type": "keyword", "language": "english"}}}, "fields.size.language"),
        ({"fields": {"size": "keyword", "size.x": "keyword"}}, "fields.size.x"),
        ({"fields": {"bad name": "keyword"}}, "fields"),
        ({"fields": {"size": "keyword"}, "zz": 1}, "zz"),
    ):
        add("patch", "PATCH", shop, body, field)
    # scroll, list, count, delete by filter, batch search
    cases += body_cases("POST", f"{shop}/objects/scroll", "scroll")
    for body, field in (
        ({"limit": 0}, "limit"),
        ({"limit": 5000}, "limit"),
        ({"limit": "5"}, "limit"),
        ({"cursor": "xyz"}, "cursor"),
        ({"cursor": 5}, "cursor"),
        ({"filter": {"n": {"gt": "x"}}}, "filter.n.gt"),
        ({"properties": [""]}, "properties.0"),
        ({"with_vectors": "yes"}, "with_vectors"),
        ({"zz": 1}, "zz"),
    ):
        add("scroll", "POST", f"{shop}/objects/scroll", body, field)
    for params, field in (({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"),
                          ({"cursor": "xyz"}, "cursor")):
        cases.append(Http(f"list:{params}", "GET", f"{shop}/objects", params=params, field=field))
    cases += optional_body_cases("POST", f"{shop}/count", "count")
    for body, field in (
        ({"exact": "yes"}, "exact"),
        ({"filter": {"n": {"zz": 1}}}, "filter.n.zz"),
        ({"zz": 1}, "zz"),
    ):
        add("count", "POST", f"{shop}/count", body, field)
    cases += body_cases("POST", f"{shop}/objects/delete", "delete")
    for body, field in (
        ({}, "filter"),
        ({"filter": {}}, "all"),
        ({"filter": {"n": {"gte": 0}}}, "all"),
        ({"ids": []}, "ids"),
        ({"ids": [" "]}, "ids"),
        ({"ids": [5]}, "ids.0"),
        ({"ids": ["s1"], "filter": {"n": 1}}, "ids"),
        ({"ids": [str(i) for i in range(BATCH + 1)]}, "ids"),
        ({"all": "true"}, "all"),
        ({"zz": 1}, "zz"),
    ):
        add("delete", "POST", f"{shop}/objects/delete", body, field)
    batch = f"{shop}/search/batch"
    cases += body_cases("POST", batch, "batch")
    for body, field in (
        ({}, "searches"),
        ({"searches": []}, "searches"),
        ({"searches": "x"}, "searches"),
        ({"searches": [good] * 65}, "searches"),
        ({"searches": [good], "zz": 1}, "zz"),
    ):
        add("batch", "POST", batch, body, field)
    return cases


HTTP_CASES = create_cases() + import_cases() + search_cases() + object_cases() + feature_cases()


@pytest.mark.parametrize("case", HTTP_CASES, ids=[c.id for c in HTTP_CASES])
def test_http_bad_input(gateway, http, case):
    kwargs: dict[str, Any] = {"params": case.params}
    if case.raw is not None or case.body is not MISSING:  # NaN and Infinity are sent as Python writes them
        kwargs["content"] = case.raw if case.raw is not None else json.dumps(case.body).encode()
        kwargs["headers"] = {"content-type": "application/json"}
    r = http.request(case.method, case.path, **kwargs)
    assert r.status_code == case.status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) <= {"error", "field"} and isinstance(body["error"], str) and body["error"], body
    if case.field is None:
        assert "field" not in body
    else:
        assert body.get("field") == case.field, body
        assert body["error"].startswith(f"{case.field}: "), body
    still_serves_and_logged_nothing_bad(gateway, http)


# -- objects of an import: each gets its own result naming its field ----------------------------------------

GOOD = {"id": "g", "properties": {"title": "good one"}}
OBJECT_CASES: list[tuple[str, Any, str]] = [
    ("not-an-object", "x", "objects.1"),
    ("null", None, "objects.1"),
    ("number", 5, "objects.1"),
    ("id-number", {"id": 5, "properties": {"title": "t"}}, "objects.1.id"),
    ("id-empty", {"id": "", "properties": {"title": "t"}}, "objects.1.id"),
    ("id-blank", {"id": "  ", "properties": {"title": "t"}}, "objects.1.id"),
    ("id-list", {"id": ["a"], "properties": {"title": "t"}}, "objects.1.id"),
    ("properties-str", {"properties": "x"}, "objects.1.properties"),
    ("properties-list", {"properties": []}, "objects.1.properties"),
    ("properties-null", {"properties": None}, "objects.1.properties"),
    ("properties-empty", {"properties": {}}, "objects.1.properties"),
    ("reserved", {"properties": {"_polyvec_id": "x", "title": "t"}}, "objects.1.properties._polyvec_id"),
    ("title-object", {"properties": {"title": {"a": 1}}}, "objects.1.properties.title"),
    ("title-bool", {"properties": {"title": True}}, "objects.1.properties.title"),
    ("title-mixed-list", {"properties": {"title": ["a", {"b": 1}]}}, "objects.1.properties.title"),
    ("photo-number", {"properties": {"photo": 5}}, "objects.1.properties.photo"),
    ("photo-not-base64", {"properties": {"photo": "@@@"}}, "objects.1.properties.photo"),
    (
        "photo-not-an-image",
        {"properties": {"photo": base64.b64encode(b"nope").decode()}},
        "objects.1.properties.photo",
    ),
    ("unknown-key", {"properties": {"title": "t"}, "zz": 1}, "objects.1.zz"),
    ("vectors-str", {"properties": {"title": "t"}, "vectors": "x"}, "objects.1.vectors"),
    ("vectors-unknown", {"properties": {"title": "t"}, "vectors": {"nope": [1.0]}}, "objects.1.vectors.nope"),
    (
        "vectors-dims",
        {"properties": {"title": "t"}, "vectors": {"main": [1.0, 2.0]}},
        "objects.1.vectors.main",
    ),
    ("vectors-null", {"properties": {"title": "t"}, "vectors": {"main": None}}, "objects.1.vectors.main"),
    (
        "vectors-str-item",
        {"properties": {"title": "t"}, "vectors": {"main": ["a"] + [0.0] * (DIMS - 1)}},
        "objects.1.vectors.main.0",
    ),
    (
        "vectors-overflow",
        {"properties": {"title": "t"}, "vectors": {"main": [0.0] * 5 + [1e39] + [0.0] * 18}},
        "objects.1.vectors.main.5",
    ),
    (
        "vectors-neg-overflow",
        {"properties": {"title": "t"}, "vectors": {"main": [-1e39] + [0.0] * 23}},
        "objects.1.vectors.main.0",
    ),
] + [
    (f"ssrf-{url}", {"properties": {"photo": url}}, "objects.1.properties.photo")
    for url in (
        "http://10.0.0.1/a.png",
        "http://172.16.0.1/a.png",
        "http://192.168.0.1/a.png",
        "http://100.64.0.1/a.png",
        "http://169.254.169.254/latest/",
        "http://[::1]/a.png",
        "http://[fc00::1]/a.png",
        "http://[fe80::1]/a.png",
        "http://[::ffff:127.0.0.1]/a.png",
        "http://0.0.0.0/a.png",
        "http://localhost/a.png",
        "http://2130706433/a.png",
        "http://0x7f000001/a.png",
        "http://0177.0.0.1/a.png",
    )
]


@pytest.mark.parametrize("name,bad,field", OBJECT_CASES, ids=[c[0] for c in OBJECT_CASES])
def test_http_bad_object_in_an_import(gateway, http, name, bad, field):
    r = http.post(
        "/v1/collections/docs/objects",
        content=json.dumps({"objects": [GOOD, bad]}),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert [x["status"] for x in out["results"]] == ["ok", "error"] and out["ok"] == 1 and out["errors"] == 1
    result = out["results"][1]
    assert result["field"] == field and result["index"] == 1 and result["error"], result
    still_serves_and_logged_nothing_bad(gateway, http)


def test_http_own_vectors_collection_needs_its_vectors(gateway, http):
    body = {
        "objects": [
            {"id": "p", "properties": {"t": 1}},
            {"id": "q", "vectors": {"v": [0.1, 0.2, float("nan"), 0.4]}},
        ]
    }
    r = http.post(
        "/v1/collections/own/objects", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    results = r.json()["results"]
    assert [x["field"] for x in results] == ["objects.0.vectors.v", "objects.1.vectors.v.2"]
    still_serves_and_logged_nothing_bad(gateway, http)


def test_http_wrong_api_keys_are_refused_on_every_route(gateway):
    routes = [
        ("POST", "/v1/collections"),
        ("GET", "/v1/collections"),
        ("GET", "/v1/collections/docs"),
        ("DELETE", "/v1/collections/docs"),
        ("POST", "/v1/collections/docs/objects"),
        ("GET", "/v1/collections/docs/objects/a"),
        ("PUT", "/v1/collections/docs/objects/a"),
        ("DELETE", "/v1/collections/docs/objects/a"),
        ("POST", "/v1/collections/docs/search"),
        ("PATCH", "/v1/collections/docs"),
        ("POST", "/v1/collections/docs/bm25/reindex"),
        ("POST", "/v1/collections/docs/objects/scroll"),
        ("GET", "/v1/collections/docs/objects"),
        ("POST", "/v1/collections/docs/objects/delete"),
        ("POST", "/v1/collections/docs/count"),
        ("POST", "/v1/collections/docs/facets"),
        ("POST", "/v1/collections/docs/search/batch"),
        ("POST", "/v1/collections/docs/evaluate"),
        ("GET", "/v1/limits"),
    ]
    wrong = [
        {},
        {"x-api-key": "wrong"},
        {"x-api-key": KEY + "x"},
        {"x-api-key": KEY[:-1]},
        {"x-api-key": ""},
        {"authorization": "Bearer wrong"},
        {"authorization": f"Bearer {KEY}x"},
        {"authorization": KEY},
        {"authorization": f"Basic {KEY}"},
        {"authorization": "Bearer"},
        {"authorization": "Bearer", "x-api-key": "wrong"},
    ]
    with httpx.Client(base_url=gateway.http, timeout=60) as c:
        for method, path in routes:
            for headers in wrong:
                r = c.request(method, path, headers=headers, json={"bm25": {"query": "fox"}})
                assert r.status_code == 401, (method, path, headers, r.text)
                assert r.json() == {
                    "error": "missing or invalid API key (send Authorization: Bearer KEY or x-api-key: KEY)"
                }
        assert c.get("/v1/collections/docs", headers={"authorization": f"Bearer {KEY}"}).status_code == 200
        assert c.get("/v1/collections/docs", headers={"x-api-key": KEY}).status_code == 200
    with httpx.Client(base_url=gateway.http, headers=HEADERS, timeout=60) as c:
        still_serves_and_logged_nothing_bad(gateway, c)


# ---------------------------------------------------------------------------------------------------------
# gRPC
# ---------------------------------------------------------------------------------------------------------

SERVICE = pb.DESCRIPTOR.services_by_name["Gateway"]
METHODS = [m.name for m in SERVICE.methods]


def struct(value: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def call(channel, method: str, request, metadata=METADATA):
    stub = gateway_pb2_grpc.GatewayStub(channel)
    return getattr(stub, method)(request, metadata=metadata, timeout=60)


def raw_call(channel, method: str, payload: bytes, metadata=METADATA):
    rpc = channel.unary_unary(
        f"/{SERVICE.full_name}/{method}", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    return rpc(payload, metadata=metadata, timeout=60)


def still_serves_over_grpc(gw: GatewayProcess, channel) -> None:
    res = call(channel, "Search", pb.SearchRequest(collection="docs", bm25=pb.Bm25Query(query="fox")))
    assert [h.id for h in res.hits] == ["a"]
    log = gw.log_since()
    assert "Traceback" not in log and " ERROR " not in log and "Exception" not in log, log


def _nested_struct_bytes(depth: int) -> bytes:
    """A Struct ``{"x": {"x": ...}}`` ``depth`` deep, encoded by hand (the client library refuses to build
    one deeper than protobuf's nesting limit, which is what the server must refuse too)."""

    def field(number: int, payload: bytes) -> bytes:
        return _VarintBytes(number << 3 | 2) + _VarintBytes(len(payload)) + payload

    struct = b""
    for _ in range(depth):
        value = field(5, struct)  # Value.struct_value
        struct = field(1, field(1, b"x") + field(2, value))  # Struct.fields entry {key: "x", value}
    return struct


def _deep_import_bytes(depth: int) -> bytes:
    """ImportObjectsRequest{collection: "docs", objects: [{properties: <Struct depth deep>}]}."""
    obj = _VarintBytes(2 << 3 | 2) + _VarintBytes(len(props := _nested_struct_bytes(depth))) + props
    return (
        _VarintBytes(1 << 3 | 2)
        + _VarintBytes(4)
        + b"docs"
        + _VarintBytes(2 << 3 | 2)
        + _VarintBytes(len(obj))
        + obj
    )


GARBAGE = [
    b"\xff\xff\xff\xff",
    b"\x0a\xff\xff\xff\xff\x0f",
    b"\x08" + b"\xff" * 10,
    b"\x12\x05ab",
    bytes(range(256)),
    b"\x0b\x0c\x0d",
]


@pytest.mark.parametrize("method", METHODS)
def test_grpc_garbage_bytes_are_invalid_argument_on_every_method(gateway, channel, method):
    for payload in GARBAGE:
        with pytest.raises(grpc.RpcError) as info:
            raw_call(channel, method, payload)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (payload, info.value.details())
        assert "not a valid" in info.value.details()
    still_serves_over_grpc(gateway, channel)


def test_grpc_a_struct_nested_past_protobufs_limit_is_invalid_argument(gateway, channel):
    with pytest.raises(grpc.RpcError) as info:
        raw_call(channel, "ImportObjects", _deep_import_bytes(200))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(
        "request: the bytes are not a valid polyvec.gateway.v1.ImportObjectsRequest"
    )
    still_serves_over_grpc(gateway, channel)


@pytest.mark.parametrize("method", METHODS)
def test_grpc_wrong_api_keys_are_unauthenticated_on_every_method(gateway, channel, method):
    request_type = getattr(pb, SERVICE.methods_by_name[method].input_type.name)
    wrong = [
        (),
        (("x-api-key", "wrong"),),
        (("x-api-key", KEY + "x"),),
        (("x-api-key", ""),),
        (("authorization", "Bearer wrong"),),
        (("authorization", f"Bearer {KEY}x"),),
        (("authorization", KEY),),
        (("authorization", f"Basic {KEY}"),),
    ]
    for metadata in wrong:
        with pytest.raises(grpc.RpcError) as info:
            call(channel, method, request_type(), metadata=metadata)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, (metadata, info.value.details())
        with pytest.raises(grpc.RpcError) as info:  # garbage with a wrong key: still refused as such
            raw_call(channel, method, b"\xff\xff", metadata=metadata)
        assert info.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT)
    # the right key in either form gets past the check (the answer is then about the request itself)
    for metadata in ((("x-api-key", KEY),), (("authorization", f"Bearer {KEY}"),)):
        try:
            call(channel, method, request_type(), metadata=metadata)
        except grpc.RpcError as exc:
            assert exc.code() != grpc.StatusCode.UNAUTHENTICATED, method
    still_serves_over_grpc(gateway, channel)


def _vec(**kwargs) -> pb.Vectorizer:
    return pb.Vectorizer(**kwargs)


def _definition(**kwargs) -> pb.CollectionDefinition:
    base = dict(name="tmp", vectorizers={"v": _vec(model="clip", text_fields=["title"])})
    base.update(kwargs)
    return pb.CollectionDefinition(**base)


def _search(**kwargs) -> pb.SearchRequest:
    return pb.SearchRequest(collection="docs", **kwargs)


def _deep_struct(depth: int) -> dict:
    value: dict = {"n": 1}
    for _ in range(depth):
        value = {"must": [value]}
    return value


GRPC_CASES: list[tuple[str, str, Any, grpc.StatusCode, str | None]] = [
    ("create:name-empty", "CreateCollection", _definition(name=""), grpc.StatusCode.INVALID_ARGUMENT, "name"),
    (
        "create:name-space",
        "CreateCollection",
        _definition(name="x y"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "name",
    ),
    (
        "create:model-unknown",
        "CreateCollection",
        _definition(vectorizers={"v": _vec(model="nope", text_fields=["t"])}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "vectorizers.v.model",
    ),
    (
        "create:text-field-name",
        "CreateCollection",
        _definition(vectorizers={"v": _vec(model="clip", text_fields=["bad name"])}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "vectorizers.v.text_fields",
    ),
    (
        "create:inference-url",
        "CreateCollection",
        _definition(vectorizers={"v": _vec(inference_url="169.254.169.254:80", text_fields=["t"])}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "vectorizers.v.inference_url",
    ),
    (
        "create:no-fields",
        "CreateCollection",
        _definition(vectorizers={"v": _vec(model="clip")}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "vectorizers.v.text_fields",
    ),
    (
        "create:bm25-k1",
        "CreateCollection",
        _definition(bm25=pb.Bm25(k1=-1)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "bm25.k1",
    ),
    (
        "create:bm25-off-and-fields",
        "CreateCollection",
        _definition(bm25=pb.Bm25(fields=["title"], off=True)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "bm25.off",
    ),
    (
        "create:distance",
        "CreateCollection",
        _definition(distance="manhattan"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "distance",
    ),
    (
        "create:shards",
        "CreateCollection",
        _definition(shard_number=0),
        grpc.StatusCode.INVALID_ARGUMENT,
        "shard_number",
    ),
    (
        "create:hnsw-m",
        "CreateCollection",
        _definition(hnsw_m=1000),
        grpc.StatusCode.INVALID_ARGUMENT,
        "hnsw_m",
    ),
    ("create:exists", "CreateCollection", _definition(name="docs"), grpc.StatusCode.ALREADY_EXISTS, "name"),
    (
        "get:name-empty",
        "GetCollection",
        pb.GetCollectionRequest(name=""),
        grpc.StatusCode.INVALID_ARGUMENT,
        "name",
    ),
    ("get:missing", "GetCollection", pb.GetCollectionRequest(name="nope"), grpc.StatusCode.NOT_FOUND, None),
    (
        "delete:name-empty",
        "DeleteCollection",
        pb.DeleteCollectionRequest(name=""),
        grpc.StatusCode.INVALID_ARGUMENT,
        "name",
    ),
    (
        "delete:missing",
        "DeleteCollection",
        pb.DeleteCollectionRequest(name="nope"),
        grpc.StatusCode.NOT_FOUND,
        None,
    ),
    (
        "import:collection-empty",
        "ImportObjects",
        pb.ImportObjectsRequest(collection=""),
        grpc.StatusCode.INVALID_ARGUMENT,
        "name",
    ),
    (
        "import:missing",
        "ImportObjects",
        pb.ImportObjectsRequest(collection="nope"),
        grpc.StatusCode.NOT_FOUND,
        None,
    ),
    (
        "import:too-many",
        "ImportObjects",
        pb.ImportObjectsRequest(
            collection="docs", objects=[pb.ObjectIn(properties=struct({"title": "t"}))] * 21
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "objects",
    ),
    (
        "getobj:missing",
        "GetObject",
        pb.GetObjectRequest(collection="docs", id="zzz"),
        grpc.StatusCode.NOT_FOUND,
        None,
    ),
    (
        "getobj:collection",
        "GetObject",
        pb.GetObjectRequest(collection="nope", id="a"),
        grpc.StatusCode.NOT_FOUND,
        None,
    ),
    (
        "put:photo",
        "PutObject",
        pb.PutObjectRequest(collection="docs", id="a", properties=struct({"photo": "@@@"})),
        grpc.StatusCode.INVALID_ARGUMENT,
        "properties.photo",
    ),
    (
        "put:ssrf",
        "PutObject",
        pb.PutObjectRequest(
            collection="docs", id="a", properties=struct({"photo": "http://0x7f000001/a.png"})
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "properties.photo",
    ),
    (
        "put:inf",
        "PutObject",
        pb.PutObjectRequest(
            collection="own", id="p", vectors={"v": pb.FloatList(values=[0.1, float("inf"), 0, 0])}
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "vectors.v.1",
    ),
    (
        "put:overflow",
        "PutObject",
        pb.PutObjectRequest(collection="own", id="p", vectors={"v": pb.FloatList(values=[0.1, 0, 1e39, 0])}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "vectors.v.2",
    ),
    (
        "put:dims",
        "PutObject",
        pb.PutObjectRequest(collection="own", id="p", vectors={"v": pb.FloatList(values=[1])}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "vectors.v",
    ),
    (
        "delobj:missing",
        "DeleteObject",
        pb.DeleteObjectRequest(collection="docs", id="zzz"),
        grpc.StatusCode.NOT_FOUND,
        None,
    ),
    ("search:no-kind", "Search", _search(), grpc.StatusCode.INVALID_ARGUMENT, QUERY_KINDS),
    (
        "search:collection",
        "Search",
        pb.SearchRequest(collection="nope", bm25=pb.Bm25Query(query="a")),
        grpc.StatusCode.NOT_FOUND,
        None,
    ),
    (
        "search:near-text-empty",
        "Search",
        _search(near_text=pb.NearText(query="")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "near_text.query",
    ),
    (
        "search:near-image-garbage",
        "Search",
        _search(near_image=pb.NearImage(image=b"not an image")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "near_image.image",
    ),
    (
        "search:near-image-empty",
        "Search",
        _search(near_image=pb.NearImage(image=b"")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "near_image.image",
    ),
    (
        "search:near-image-bytes-and-url",
        "Search",
        _search(near_image=pb.NearImage(image=b"x", url="https://example.com/a.png")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "near_image",
    ),
    (
        "search:near-image-url-refused",
        "Search",
        _search(near_image=pb.NearImage(url="http://127.0.0.1:9/a.png")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "near_image.image",
    ),
    (
        "search:near-vector-empty",
        "Search",
        _search(near_vector=pb.NearVector(vector=[])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "near_vector.vector",
    ),
    (
        "search:near-vector-dims",
        "Search",
        _search(near_vector=pb.NearVector(vector=[1.0, 2.0])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "near_vector.vector",
    ),
    (
        "search:near-vector-overflow",
        "Search",
        _search(near_vector=pb.NearVector(vector=[0.0] * 3 + [1e39] + [0.0] * 20)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "near_vector.vector.3",
    ),
    (
        "search:near-vector-nan",
        "Search",
        _search(near_vector=pb.NearVector(vector=[float("nan")] + [0.0] * 23)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "near_vector.vector.0",
    ),
    (
        "search:bm25-empty",
        "Search",
        _search(bm25=pb.Bm25Query(query="")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "bm25.query",
    ),
    (
        "search:alpha",
        "Search",
        _search(hybrid=pb.HybridQuery(query="a", alpha=3)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "hybrid.alpha",
    ),
    (
        "search:weights-one-list",
        "Search",
        _search(hybrid=pb.HybridQuery(query="a", weights={"main": 1})),
        grpc.StatusCode.INVALID_ARGUMENT,
        "hybrid.weights",
    ),
    (
        "search:weights-unknown-list",
        "Search",
        _search(hybrid=pb.HybridQuery(query="a", weights={"main": 1, "nope": 1})),
        grpc.StatusCode.INVALID_ARGUMENT,
        "hybrid.weights.nope",
    ),
    (
        "search:weights-negative",
        "Search",
        _search(hybrid=pb.HybridQuery(query="a", weights={"main": -1, "bm25": 1})),
        grpc.StatusCode.INVALID_ARGUMENT,
        "hybrid.weights",
    ),
    (
        "search:neural-sparse-empty",
        "Search",
        _search(neural_sparse=pb.NeuralSparseQuery(query="")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "neural_sparse.query",
    ),
    (
        "search:neural-sparse-no-sparse-vectorizer",
        "Search",
        _search(neural_sparse=pb.NeuralSparseQuery(query="a")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "neural_sparse.vector",
    ),
    (
        "search:fusion",
        "Search",
        _search(hybrid=pb.HybridQuery(query="a", fusion="max")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "hybrid.fusion",
    ),
    (
        "search:vector",
        "Search",
        _search(bm25=pb.Bm25Query(query="a"), vector="nope"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "vector",
    ),
    (
        "search:limit-0",
        "Search",
        _search(bm25=pb.Bm25Query(query="a"), limit=0),
        grpc.StatusCode.INVALID_ARGUMENT,
        "limit",
    ),
    (
        "search:limit-huge",
        "Search",
        _search(bm25=pb.Bm25Query(query="a"), limit=4_000_000_000),
        grpc.StatusCode.INVALID_ARGUMENT,
        "limit",
    ),
    (
        "search:offset-huge",
        "Search",
        _search(bm25=pb.Bm25Query(query="a"), offset=20_000),
        grpc.StatusCode.INVALID_ARGUMENT,
        "offset",
    ),
    (
        "search:filter-op",
        "Search",
        _search(bm25=pb.Bm25Query(query="a"), filter=struct({"n": {"gt": "x"}})),
        grpc.StatusCode.INVALID_ARGUMENT,
        "filter.n.gt",
    ),
    (
        "search:filter-deep",
        "Search",
        _search(bm25=pb.Bm25Query(query="a"), filter=struct(_deep_struct(16))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "filter" + ".must.0" * 16,
    ),
    (
        "search:filter-must",
        "Search",
        _search(bm25=pb.Bm25Query(query="a"), filter=struct({"must": "x"})),
        grpc.StatusCode.INVALID_ARGUMENT,
        "filter.must",
    ),
    (
        "search:properties",
        "Search",
        _search(bm25=pb.Bm25Query(query="a"), properties=pb.PropertyList(names=[""])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "properties.0",
    ),
    (
        "search:own-near-text",
        "Search",
        pb.SearchRequest(collection="own", near_text=pb.NearText(query="a")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "near_text.query",
    ),
    (
        "search:no-bm25",
        "Search",
        pb.SearchRequest(collection="nobm25", bm25=pb.Bm25Query(query="a")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "bm25",
    ),
]


def _shop(**kwargs) -> pb.SearchRequest:
    return pb.SearchRequest(collection="shop", **kwargs)


_HAT = pb.NearText(query="hat")
_BAD = grpc.StatusCode.INVALID_ARGUMENT
# The methods and search options beyond create / import / search / objects (HTTP: feature_cases).
GRPC_FEATURE_CASES: list[tuple[str, str, Any, grpc.StatusCode, str | None]] = [
    ("order_by:undeclared", "Search", _shop(order_by=pb.OrderBy(field="nope")), _BAD, "order_by.field"),
    ("order_by:keyword", "Search", _shop(order_by=pb.OrderBy(field="colour")), _BAD, "order_by.field"),
    ("order_by:direction", "Search", _shop(order_by=pb.OrderBy(field="n", direction="up")), _BAD,
     "order_by.direction"),
    ("mmr:lambda-high", "Search",
     _shop(near_text=_HAT, diversity=pb.Diversity(mmr=pb.Mmr(**{"lambda": 1.5}))), _BAD,
     "diversity.mmr.lambda"),
    ("mmr:lambda-nan", "Search",
     _shop(near_text=_HAT, diversity=pb.Diversity(mmr=pb.Mmr(**{"lambda": float("nan")}))), _BAD,
     "diversity.mmr.lambda"),
    ("mmr:candidates-0", "Search", _shop(near_text=_HAT, diversity=pb.Diversity(mmr=pb.Mmr(candidates=0))),
     _BAD, "diversity.mmr.candidates"),
    ("mmr:candidates-huge", "Search",
     _shop(near_text=_HAT, diversity=pb.Diversity(mmr=pb.Mmr(candidates=4_000_000_000))), _BAD,
     "diversity.mmr.candidates"),
    ("mmr:bm25", "Search", _shop(bm25=pb.Bm25Query(query="hat"), diversity=pb.Diversity(mmr=pb.Mmr())),
     _BAD, "diversity"),
    ("facets:no-field", "Facets", pb.FacetsRequest(collection="shop"), _BAD, "field"),
    ("facets:undeclared", "Facets", pb.FacetsRequest(collection="shop", field="nope"), _BAD, "field"),
    ("facets:float", "Facets", pb.FacetsRequest(collection="shop", field="price"), _BAD, "field"),
    ("facets:limit-0", "Facets", pb.FacetsRequest(collection="shop", field="colour", limit=0), _BAD, "limit"),
    ("facets:limit-huge", "Facets", pb.FacetsRequest(collection="shop", field="colour", limit=1001), _BAD,
     "limit"),
    ("facets:filter", "Facets",
     pb.FacetsRequest(collection="shop", field="colour", filter=struct({"n": {"gt": "x"}})), _BAD,
     "filter.n.gt"),
    ("facets:missing", "Facets", pb.FacetsRequest(collection="nope", field="colour"),
     grpc.StatusCode.NOT_FOUND, None),
    ("reindex:avg_len-0", "ReindexBm25", pb.ReindexBm25Request(collection="docs", avg_len=0), _BAD,
     "avg_len"),
    ("reindex:avg_len-negative", "ReindexBm25", pb.ReindexBm25Request(collection="docs", avg_len=-3), _BAD,
     "avg_len"),
    ("reindex:avg_len-inf", "ReindexBm25", pb.ReindexBm25Request(collection="docs", avg_len=float("inf")),
     _BAD, "avg_len"),
    ("reindex:avg_len-nan", "ReindexBm25", pb.ReindexBm25Request(collection="docs", avg_len=float("nan")),
     _BAD, "avg_len"),
    ("reindex:k1", "ReindexBm25", pb.ReindexBm25Request(collection="docs", bm25=pb.Bm25(k1=-1)), _BAD,
     "bm25.k1"),
    ("reindex:no-bm25", "ReindexBm25", pb.ReindexBm25Request(collection="nobm25"), _BAD, "bm25"),
    ("reindex:missing", "ReindexBm25", pb.ReindexBm25Request(collection="nope"),
     grpc.StatusCode.NOT_FOUND, None),
    ("update:type", "UpdateCollection",
     pb.UpdateCollectionRequest(name="shop", fields={"size": pb.FieldDeclaration(type="nope")}), _BAD,
     "fields.size.type"),
    ("update:retype", "UpdateCollection",
     pb.UpdateCollectionRequest(name="shop", fields={"colour": pb.FieldDeclaration(type="integer")}), _BAD,
     "fields.colour"),
    ("update:name", "UpdateCollection",
     pb.UpdateCollectionRequest(name="shop", fields={"bad name": pb.FieldDeclaration(type="keyword")}), _BAD,
     "fields"),
    ("scroll:properties", "ScrollObjects",
     pb.ScrollObjectsRequest(collection="shop", properties=pb.PropertyList(names=[""])), _BAD,
     "properties.0"),
    ("count:filter", "CountObjects",
     pb.CountObjectsRequest(collection="shop", filter=struct({"n": {"zz": 1}})), _BAD, "filter.n.zz"),
    ("delete:all", "DeleteObjects", pb.DeleteObjectsRequest(collection="shop", filter=struct({})), _BAD,
     "all"),
    ("delete:too-many", "DeleteObjects",
     pb.DeleteObjectsRequest(collection="shop", ids=[str(i) for i in range(BATCH + 1)]), _BAD, "ids"),
    ("batch:empty", "SearchBatch", pb.SearchBatchRequest(collection="shop"), _BAD, "searches"),
]
GRPC_CASES += GRPC_FEATURE_CASES


@pytest.mark.parametrize("name,method,request_msg,code,field", GRPC_CASES, ids=[c[0] for c in GRPC_CASES])
def test_grpc_bad_input(gateway, channel, name, method, request_msg, code, field):
    with pytest.raises(grpc.RpcError) as info:
        call(channel, method, request_msg)
    assert info.value.code() == code, info.value.details()
    trailing = dict(info.value.trailing_metadata() or ())
    details = info.value.details()
    if field is None:
        assert "field" not in trailing
    else:
        assert trailing.get("field") == field, (trailing, details)
        assert details.startswith(f"{field}: "), details
    still_serves_over_grpc(gateway, channel)


def test_grpc_bad_objects_of_an_import_get_their_own_results(gateway, channel):
    objects = [
        pb.ObjectIn(id="g", properties=struct({"title": "good"})),
        pb.ObjectIn(id="", properties=struct({"title": "t"})),
        pb.ObjectIn(properties=struct({"photo": "http://169.254.169.254/latest/"})),
        pb.ObjectIn(properties=struct({"title": {"a": 1}})),
        pb.ObjectIn(
            properties=struct({"title": "t"}), vectors={"main": pb.FloatList(values=[float("inf")] * 24)}
        ),
        pb.ObjectIn(properties=struct({"title": "t"}), vectors={"nope": pb.FloatList(values=[1])}),
        pb.ObjectIn(properties=struct({"_polyvec_x": 1, "title": "t"})),
    ]
    out = call(channel, "ImportObjects", pb.ImportObjectsRequest(collection="docs", objects=objects))
    assert [r.status for r in out.results] == ["ok"] + ["error"] * 6
    assert [r.field for r in out.results] == [
        "",
        "objects.1.id",
        "objects.2.properties.photo",
        "objects.3.properties.title",
        "objects.4.vectors.main.0",
        "objects.5.vectors.nope",
        "objects.6.properties._polyvec_x",
    ]
    still_serves_over_grpc(gateway, channel)
