"""Limits of the real gateway process: streamed body size, JSON nesting, filter depth, DATA_DIR in use.

A ``polyvec gateway`` process (embedded store in a temporary DATA_DIR) over the real inference server;
requests go over real sockets, so chunked uploads and connection handling are the real ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest

from tests.live_gateway import ROOT, GatewayProcess, InferenceThread

LIMIT = 1024 * 1024  # MAX_REQUEST_BYTES of the gateway under test
KEY = {"x-api-key": "limits-key"}
JSON = {"content-type": "application/json"}
DOCS = {"name": "docs", "vectorizers": {"main": {"model": "clip", "text_fields": ["title"]}}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with InferenceThread() as inference:
        workdir = tmp_path_factory.mktemp("limits")
        with GatewayProcess(workdir, MODELS=f"clip={inference.address}", MAX_REQUEST_BYTES=str(LIMIT),
                            API_KEYS="limits-key") as gw:
            with httpx.Client(base_url=gw.http, headers=KEY, timeout=60) as c:
                assert c.post("/v1/collections", json=DOCS).status_code == 201
                r = c.post("/v1/collections/docs/objects", json={"objects": [
                    {"id": "a", "properties": {"title": "a red fox"}}]})
                assert r.json()["ok"] == 1
            yield gw, inference


def chunks(total: int, sent: list[int], size: int = 64 * 1024, prefix: bytes = b""):
    """A chunked body: ``prefix``, then spaces (valid JSON whitespace); counts what was handed over."""
    if prefix:
        sent[0] += len(prefix)
        yield prefix
    while sent[0] < total:
        piece = b" " * size
        sent[0] += len(piece)
        yield piece


@pytest.mark.parametrize("path", ["/v1/collections/docs/search", "/v1/collections/docs/objects",
                                  "/v1/collections", "/v1/collections/docs/objects/a"])
def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(gateway, path):
    gw, inference = gateway
    total = 256 * 1024 * 1024
    sent = [0]
    calls = len(inference.encoder.seen.batches)
    rss_before = gw.peak_rss_kib()
    prefix = b'{"near_text": {"query": "fox"}, "pad": "' if path.endswith("search") else b'{"objects": ['
    method = "PUT" if path.endswith("/a") else "POST"
    with httpx.Client(base_url=gw.http, headers=KEY, timeout=120) as c:
        r = c.request(method, path, content=chunks(total, sent, prefix=prefix),
                      headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
    assert r.status_code == 413, r.text
    assert r.json() == {"error": f"body: request body larger than {LIMIT} bytes (MAX_REQUEST_BYTES)",
                        "field": "body"}
    # the gateway stopped reading: the client could not hand over the 256 MiB, and memory did not grow
    assert sent[0] < 64 * 1024 * 1024, sent[0]
    assert gw.peak_rss_kib() - rss_before < 48 * 1024
    assert len(inference.encoder.seen.batches) == calls  # nothing was forwarded to inference
    assert "Traceback" not in gw.log_since()
    with httpx.Client(base_url=gw.http, headers=KEY, timeout=60) as c:  # and it still serves
        r = c.post("/v1/collections/docs/search", json={"near_text": {"query": "fox"}})
        assert r.status_code == 200 and r.json()["hits"][0]["id"] == "a"


def test_chunked_bodies_under_the_limit_and_declared_lengths(gateway):
    gw, _ = gateway
    body = b'{"bm25": {"query": "fox"}}'
    with httpx.Client(base_url=gw.http, headers=KEY, timeout=60) as c:
        r = c.post("/v1/collections/docs/search", content=iter([body[:5], body[5:]]),
                   headers={"content-type": "application/json"})
        assert r.status_code == 200 and [h["id"] for h in r.json()["hits"]] == ["a"]
        # a declared Content-Length over the limit is refused before the body is read
        r = c.post("/v1/collections/docs/search", content=b" " * (LIMIT + 1),
                   headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["field"] == "body"
        # exactly at the limit is fine
        r = c.post("/v1/collections/docs/search", content=body + b" " * (LIMIT - len(body)),
                   headers={"content-type": "application/json"})
        assert r.status_code == 200
        # the key is checked before the body: no key, 401 without reading it
        r = c.post("/v1/collections/docs/search", content=chunks(LIMIT * 4, [0]), headers={"x-api-key": "no"})
        assert r.status_code == 401 and "API key" in r.json()["error"]


def deep(depth: int, inner: str = '{"n": 1}') -> str:
    return '{"must": [' * depth + inner + "]}" * depth


@pytest.mark.parametrize("method,path", [
    ("POST", "/v1/collections"), ("POST", "/v1/collections/docs/objects"),
    ("PUT", "/v1/collections/docs/objects/a"), ("POST", "/v1/collections/docs/search"),
])
def test_json_nested_1000_deep_is_a_400_on_every_json_route(gateway, method, path):
    gw, _ = gateway
    with httpx.Client(base_url=gw.http, headers=KEY, timeout=60) as c:
        r = c.request(method, path, content="[" * 1000 + "]" * 1000, headers=JSON)
        assert r.status_code == 400 and r.headers["content-type"] == "application/json"
        assert r.json()["field"] == "0" + ".0" * 63
        assert r.json()["error"].endswith("nested more than 64 levels deep (MAX_JSON_DEPTH)")
        r = c.request(method, path, content='{"properties": {"x": ' + deep(1000) + "}}", headers=JSON)
        assert r.status_code == 400 and r.json()["field"].startswith("properties.x.must.0.must.0")
        assert "Traceback" not in gw.log_since()


def test_a_deep_filter_is_a_400_naming_filter_and_where(gateway):
    gw, _ = gateway
    with httpx.Client(base_url=gw.http, headers=KEY, timeout=60) as c:
        search = "/v1/collections/docs/search"
        ok = c.post(search, json={"bm25": {"query": "fox"}, "filter": json.loads(deep(15))})
        assert ok.status_code == 200  # 31 levels: within FILTER_MAX_DEPTH=32
        r = c.post(search, json={"bm25": {"query": "fox"}, "filter": json.loads(deep(16))})
        assert r.status_code == 400
        assert r.json() == {"error": "filter" + ".must.0" * 16 + ": filters nest at most 32 levels deep "
                                     "(FILTER_MAX_DEPTH)", "field": "filter" + ".must.0" * 16}
        r = c.post(search, content='{"bm25": {"query": "fox"}, "filter": ' + deep(1000) + "}", headers=JSON)
        assert r.status_code == 400 and r.json()["field"].startswith("filter.must.0.must.0")
        assert "MAX_JSON_DEPTH" in r.json()["error"]
    assert "Traceback" not in gw.log_since()


def test_a_second_gateway_on_the_same_data_dir_says_so(gateway, tmp_path):
    gw, inference = gateway
    second = GatewayProcess(tmp_path, DATA_DIR=gw.env["DATA_DIR"], MODELS=f"clip={inference.address}")
    with pytest.raises(RuntimeError, match="exited with 1") as info:
        second.start()
    text = str(info.value)
    assert f"DATA_DIR {gw.env['DATA_DIR']} is in use by another polyvec process (pid {gw.proc.pid})" in text
    assert "WouldBlock" not in text and "Traceback" not in text
    # polyvec up says the same, before it starts any model
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "services.cli", "up", "--data-dir", gw.env["DATA_DIR"],
                          "--model", "all-minilm-l6-v2", "--http-port", "0", "--grpc-port", "0",
                          "--startup-timeout-s", "60"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert f"DATA_DIR {gw.env['DATA_DIR']} is in use by another polyvec process" in out.stderr
    assert "starting the inference service" not in out.stderr and "Traceback" not in out.stderr
    assert time.monotonic() - started < 60
    with httpx.Client(base_url=gw.http, headers=KEY, timeout=60) as c:  # the first one is unharmed
        assert c.get("/v1/collections/docs").json()["count"] == 1
