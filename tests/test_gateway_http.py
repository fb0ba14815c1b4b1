"""The HTTP front: routes, status codes, JSON errors naming fields, API keys, 503 on inference outage."""

from __future__ import annotations

import asyncio
import base64
import time

import httpx

from gateway.http_api import create_app
from tests.gateway_support import gateway_with_inference, make_store, png_bytes

DEF = {"name": "docs", "vectorizers": {"clip": {"model": "clip", "text_fields": ["title"],
                                                "image_fields": ["photo"]}}}


NOT_FOUND = ("collection 'nope' not found", "Not Found")


def run(coro):
    return asyncio.run(coro)


def client_for(app, **headers) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                             base_url="http://gateway", headers=headers)


def test_http_round_trip_and_errors(tmp_path):
    async def scenario():
        store = make_store("edge", tmp_path)
        settings = {"inference_timeout_s": 2, "inference_query_retry_budget_s": 0.3}
        async with gateway_with_inference(store, settings=settings) as (svc, inference):
            app = create_app(svc)
            async with client_for(app) as c:
                r = await c.post("/v1/collections", json=DEF)
                assert r.status_code == 201 and r.json()["vectorizers"]["clip"]["dimensions"] == 32
                assert (await c.post("/v1/collections", json=DEF)).status_code == 409
                r = await c.get("/v1/collections")
                assert [x["name"] for x in r.json()["collections"]] == ["docs"]
                r = await c.post("/v1/collections/docs/objects", json={"objects": [
                    {"id": "1", "properties": {"title": "a red fox", "n": 1}},
                    {"id": "2", "properties": {"title": "a blue whale", "n": 2,
                                               "photo": base64.b64encode(png_bytes("blue")).decode()}},
                    {"id": "3", "properties": {"title": "bad", "photo": base64.b64encode(b"junk").decode()}},
                ]})
                assert r.status_code == 200
                assert [x["status"] for x in r.json()["results"]] == ["ok", "ok", "error"]
                assert r.json()["results"][2]["field"] == "objects.2.properties.photo"
                r = await c.post("/v1/collections/docs/search",
                                 json={"hybrid": {"query": "fox", "alpha": 0.3}})
                assert r.status_code == 200 and r.json()["hits"][0]["id"] == "1"
                # curl -d sends form encoding: the body is still read as JSON
                r = await c.post("/v1/collections/docs/search", content=b'{"bm25": {"query": "whale"}}',
                                 headers={"content-type": "application/x-www-form-urlencoded"})
                assert r.status_code == 200 and [h["id"] for h in r.json()["hits"]] == ["2"]
                r = await c.get("/v1/collections/docs/objects/2")
                assert r.status_code == 200 and r.json()["properties"]["n"] == 2
                r = await c.put("/v1/collections/docs/objects/2",
                                json={"properties": {"title": "a blue whale", "n": 3}})
                assert r.status_code == 200 and r.json()["vectorized"] == ["clip"]  # photo dropped: changed
                r = await c.get("/v1/collections/docs")
                assert r.json()["count"] == 2
                assert (await c.delete("/v1/collections/docs/objects/2")).status_code == 200
                assert (await c.get("/v1/collections/docs/objects/2")).status_code == 404

                # errors: JSON, 4xx, naming the field, no stack traces
                bad = [
                    ("post", "/v1/collections", {"name": "x y"}, 400, "name"),
                    ("post", "/v1/collections", {"name": "x", "vectorizers": {"v": {"model": "clip",
                                                                                   "text_fields": [3]}}},
                     400, "vectorizers.v.text_fields.0"),
                    ("post", "/v1/collections", {"name": "x", "vectorizers": {"v": {"model": "unknown",
                                                                                   "text_fields": ["t"]}}},
                     400, "vectorizers.v.model"),
                    ("post", "/v1/collections/docs/search",
                     {"near_text": {"query": "a"}, "bm25": {"query": "a"}},
                     400, "near_text|near_image|near_vector|bm25|neural_sparse|hybrid"),
                    ("post", "/v1/collections/docs/search", {"hybrid": {"query": "a", "alpha": 7}}, 400,
                     "hybrid.alpha"),
                    ("post", "/v1/collections/docs/search", {"near_vector": {"vector": [1, 2, 3]}}, 400,
                     "near_vector.vector"),
                    ("post", "/v1/collections/docs/search", {"near_image": {"image": "@@@"}}, 400,
                     "near_image.image"),
                    ("post", "/v1/collections/docs/search", {"near_text": {"query": "a"}, "limit": "many"},
                     400, "limit"),
                    ("post", "/v1/collections/docs/search",
                     {"bm25": {"query": "a"}, "filter": {"n": {"gt": "x"}}}, 400, "filter.n.gt"),
                    ("post", "/v1/collections/nope/search", {"near_text": {"query": "a"}}, 404, None),
                    ("get", "/v1/collections/nope", None, 404, None),
                    ("delete", "/v1/collections/nope", None, 404, None),
                    ("post", "/v1/collections/nope/objects", {"objects": []}, 404, None),
                    ("get", "/v1/nothing-here", None, 404, None),
                ]
                for method, url, body, status, field in bad:
                    r = await c.request(method.upper(), url, json=body)
                    assert r.status_code == status, (url, body, r.text)
                    data = r.json()
                    if field is not None:
                        assert data["field"] == field, (body, data)
                        assert data["error"].startswith(f"{field}: "), data
                    else:
                        assert set(data) == {"error"} and data["error"] in NOT_FOUND, data
                r = await c.post("/v1/collections/docs/search", content=b"{nope",
                                 headers={"content-type": "application/json"})
                assert r.status_code == 400 and r.json()["field"] == "body"

                # inference down -> 503 naming the service, within the deadline
                await inference.stop()
                started = time.monotonic()
                r = await c.post("/v1/collections/docs/search", json={"near_text": {"query": "fox"}})
                assert r.status_code == 503
                assert inference.address in r.json()["error"] and "clip" in r.json()["service"]
                assert time.monotonic() - started < 10  # the retry budget (0.3 s), then 503
                r = await c.get("/readyz")
                assert r.status_code == 200 and r.json()["models"] == {"clip": "unavailable"}
                r = await c.delete("/v1/collections/docs")
                assert r.status_code == 200

    run(scenario())


def test_api_keys_health_metrics_docs(tmp_path):
    async def scenario():
        async with gateway_with_inference(make_store("qdrant", tmp_path)) as (svc, inference):
            app = create_app(svc, api_keys=["k1", "k2"], max_request_bytes=10_000)
            async with client_for(app) as c:
                r = await c.get("/v1/collections")
                assert r.status_code == 401 and "API key" in r.json()["error"]
                assert (await c.get("/v1/collections", headers={"x-api-key": "wrong"})).status_code == 401
                assert (await c.get("/v1/collections", headers={"x-api-key": "k2"})).status_code == 200
                r = await c.get("/v1/collections", headers={"Authorization": "Bearer k1"})
                assert r.status_code == 200
                # health, metrics and docs stay open
                assert (await c.get("/healthz")).json() == {"status": "ok"}
                r = await c.get("/readyz")
                assert r.status_code == 200 and r.json()["storage"] == "ok"
                assert r.json()["models"] == {"clip": "ok"}
                assert (await c.get("/docs")).status_code == 200
                spec = (await c.get("/openapi.json")).json()
                assert "/v1/collections/{name}/search" in spec["paths"]
                r = await c.get("/metrics")
                assert r.status_code == 200
                line = 'polyvec_gateway_requests_total{method="GET",route="/v1/collections",status="200"} 2.0'
                assert line in r.text
                r = await c.post("/v1/collections", headers={"x-api-key": "k1"},
                                 json={"name": "big", "vectorizers": {"v": {"dimensions": 3}},
                                       "pad": "x" * 20_000})
                assert r.status_code == 413 and r.json()["field"] == "body"

    run(scenario())


def test_middleware_is_plain_asgi(tmp_path):
    """The limits/metrics/tracing middleware is a plain ASGI app, not an ``@app.middleware("http")``
    BaseHTTPMiddleware (which runs every request through an extra task and memory stream: with
    clients that ignore Retry-After, the 429s alone took most of a core), and it streams an answer's
    body through untouched (no buffering) while counting the request."""
    from starlette.middleware.base import BaseHTTPMiddleware

    from gateway.http_api import LimitsAndMetrics

    async def scenario():
        async with gateway_with_inference(make_store("qdrant", tmp_path)) as (svc, _):
            app = create_app(svc, api_keys=["k1"])
            classes = [m.cls for m in app.user_middleware]
            assert LimitsAndMetrics in classes and BaseHTTPMiddleware not in classes
            async with client_for(app) as c:
                r = await c.get("/v1/collections")  # refused in the middleware, before routing
                assert r.status_code == 401 and r.json()["error"].startswith("missing or invalid API key")
                r = await c.get("/v1/collections", headers={"x-api-key": "k1"})
                assert r.status_code == 200
                text = (await c.get("/metrics")).text
            for status in (401, 200):
                assert f'requests_total{{method="GET",route="/v1/collections",status="{status}"}} 1.0' in text

    run(scenario())
