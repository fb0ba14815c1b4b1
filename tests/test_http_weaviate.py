"""The Weaviate multi2vec-clip inference protocol and /metrics on a real uvicorn over loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import re
import time

import httpx
import numpy as np
from PIL import Image

from services.inference.config import CPU_MAX_BATCH_TOKENS, InferenceSettings
from services.inference.main import start_servers
from services.inference.service import InferenceService
from tests.fake_encoders import FakeEncoder


def settings(**kw) -> InferenceSettings:
    base = {"model": "fake", "host": "127.0.0.1", "grpc_port": 0, "http_port": 0, "batch_wait_ms": 2}
    base.update(kw)
    return InferenceSettings(**base).validate()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def png_b64(colour, size=(10, 10)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@contextlib.asynccontextmanager
async def serving(target, **kw):
    running = await start_servers(target, settings(**kw))
    client = httpx.AsyncClient(base_url=running.http_url, timeout=30)
    try:
        yield running, client
    finally:
        await client.aclose()
        await running.stop(grace=1)


def metric(text: str, name: str, **labels) -> float:
    """Value of one sample in Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0


def test_vectorize_texts_and_images_like_weaviate():
    enc = FakeEncoder()
    red, blue = png_b64((255, 0, 0)), png_b64((0, 0, 255))

    async def main():
        async with serving(enc) as (_, client):
            both = await client.post(
                "/vectorize", json={"texts": ["a red thing", "blue"], "images": [red, blue]}
            )
            # Go's encoding/json sends null for an empty slice
            only_images = await client.post(
                "/vectorize", json={"texts": None, "images": ["data:image/png;base64," + red]}
            )
            only_texts = await client.post("/vectorize", json={"texts": ["x"]})
            twins = await client.post("/vectorize", json={"images": [red, blue, red]})
            return both, only_images, only_texts, twins

    both, only_images, only_texts, twins = run(main())
    assert both.status_code == 200, both.text
    body = both.json()
    assert set(body) == {"textVectors", "imageVectors"}
    tv, iv = np.array(body["textVectors"]), np.array(body["imageVectors"])
    assert tv.shape == (2, enc.dimensions) and iv.shape == (2, enc.dimensions)
    np.testing.assert_allclose(tv[0], enc.expected_text("a red thing", True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tv[1], enc.expected_text("blue", True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        iv[0], enc.expected_image(Image.new("RGB", (10, 10), (255, 0, 0)), True), rtol=1e-5, atol=1e-6
    )
    assert only_images.status_code == 200 and only_images.json()["textVectors"] == []
    np.testing.assert_allclose(only_images.json()["imageVectors"][0], iv[0], rtol=1e-6)
    assert only_texts.status_code == 200 and len(only_texts.json()["textVectors"]) == 1
    t = twins.json()["imageVectors"]
    assert t[0] == t[2] and t[0] != t[1]


def test_live_ready_and_meta_follow_model_loading():
    enc = FakeEncoder()

    async def main():
        service = InferenceService(None, settings())
        async with serving(service) as (running, client):
            out = {
                "live": (await client.get("/.well-known/live")).status_code,
                "ready": (await client.get("/.well-known/ready")).status_code,
                "meta": await client.get("/meta"),
                "vectorize": await client.post("/vectorize", json={"texts": ["x"]}),
            }
            await running.attach(enc)
            out["live2"] = (await client.get("/.well-known/live")).status_code
            out["ready2"] = await client.get("/.well-known/ready")
            out["meta2"] = await client.get("/meta")
            return out

    out = run(main())
    assert out["live"] == 204 and out["ready"] == 503
    assert out["meta"].status_code == 503 and "loading" in out["meta"].json()["error"]
    assert out["vectorize"].status_code == 503
    assert out["live2"] == 204 and out["ready2"].status_code == 204 and out["ready2"].content == b""
    meta = out["meta2"].json()
    assert meta["name"] == enc.info.name and meta["dimensions"] == enc.dimensions
    assert meta["modalities"] == ["text", "image"] and meta["device"] == "cpu"
    assert meta["limits"]["max_batch_size"] == 32
    # the limits in force: MAX_BATCH_TOKENS's CPU default resolved, the early cut off by default
    assert meta["limits"]["max_batch_tokens"] == CPU_MAX_BATCH_TOKENS
    assert meta["limits"]["batch_early_cut"] is False and meta["limits"]["batch_wait_ms"] == 2


def test_bad_requests_get_json_errors_naming_the_item():
    enc = FakeEncoder()

    async def main():
        out = {}
        async with serving(enc, max_items_per_request=4) as (_, client):
            post = client.post
            out["not_json"] = await post(
                "/vectorize", content=b"{nope", headers={"content-type": "application/json"}
            )
            out["not_object"] = await post("/vectorize", json=["a"])
            out["texts_type"] = await post("/vectorize", json={"texts": "a"})
            out["text_item"] = await post("/vectorize", json={"texts": ["a", 5]})
            out["bad_b64"] = await post("/vectorize", json={"images": [png_b64((1, 2, 3)), "***"]})
            out["bad_image"] = await post(
                "/vectorize", json={"images": [base64.b64encode(b"not an image").decode()]}
            )
            out["empty"] = await post("/vectorize", json={"texts": [], "images": []})
            out["too_many"] = await post("/vectorize", json={"texts": ["a"] * 5})
            out["normalize"] = await post("/vectorize", json={"texts": ["a"], "normalize": "yes"})
            out["fine"] = await post("/vectorize", json={"texts": ["a"]})
        return out

    out = run(main())
    expect = {
        "not_json": (400, "not valid JSON"),
        "not_object": (400, "JSON object"),
        "texts_type": (422, "texts: must be a list"),
        "text_item": (422, "texts[1]: must be a string"),
        "bad_b64": (422, "images[1]: invalid base64"),
        "bad_image": (422, "images[0]: not a supported image"),
        "empty": (422, "no texts and no images"),
        "too_many": (422, "MAX_ITEMS_PER_REQUEST"),
        "normalize": (422, "normalize"),
    }
    for key, (status, fragment) in expect.items():
        resp = out[key]
        assert resp.status_code == status, (key, resp.status_code, resp.text)
        assert fragment in resp.json()["error"], (key, resp.json())
    assert out["fine"].status_code == 200


def test_body_over_the_limit_is_413():
    enc = FakeEncoder()

    async def main():
        async with serving(enc, max_request_bytes=2000) as (_, client):
            big = await client.post("/vectorize", json={"texts": ["word " * 1000]})

            async def chunks():  # no content-length: the streamed size is counted
                for _ in range(10):
                    yield b" " * 500

            streamed = await client.post("/vectorize", content=chunks())
            ok = await client.post("/vectorize", json={"texts": ["short"]})
            return big, streamed, ok

    big, streamed, ok = run(main())
    assert big.status_code == 413 and "MAX_REQUEST_BYTES" in big.json()["error"]
    assert streamed.status_code == 413
    assert ok.status_code == 200


def test_queue_full_is_429():
    enc = FakeEncoder()

    async def main():
        async with serving(enc, max_queue=1, max_batch_size=1, batch_wait_ms=0) as (running, client):
            enc.gate.clear()
            batcher = running.service.batcher
            busy = [asyncio.ensure_future(client.post("/vectorize", json={"texts": ["one"]}))]
            await _until(lambda: len(enc.seen.prepares) == 1)
            busy.append(asyncio.ensure_future(client.post("/vectorize", json={"texts": ["two"]})))
            await _until(lambda: len(enc.seen.prepares) == 2 and batcher.queue_depth == 0)
            busy.append(asyncio.ensure_future(client.post("/vectorize", json={"texts": ["three"]})))
            await _until(lambda: batcher.queue_depth == 1)
            refused = await client.post("/vectorize", json={"texts": ["four"]})
            enc.gate.set()
            return refused, await asyncio.gather(*busy)

    refused, busy = run(main())
    assert refused.status_code == 429 and "queue full" in refused.json()["error"]
    assert [r.status_code for r in busy] == [200, 200, 200]


def test_metrics_show_requests_batches_queue_and_latency():
    enc = FakeEncoder()

    async def main():
        async with serving(enc, batch_wait_ms=30) as (_, client):
            replies = await asyncio.gather(
                *(client.post("/vectorize", json={"texts": [f"t {i}"]}) for i in range(6))
            )
            await client.post("/vectorize", json={"images": [png_b64((0, 9, 0))]})
            await client.post("/vectorize", json={"texts": []})
            return replies, (await client.get("/metrics"))

    replies, resp = run(main())
    assert all(r.status_code == 200 for r in replies)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert metric(text, "polyvec_inference_requests_total", endpoint="http.vectorize", status="ok") == 7
    assert metric(text, "polyvec_inference_requests_total", endpoint="http.vectorize", status="invalid") == 1
    assert metric(text, "polyvec_inference_items_total", modality="text") == 6
    assert metric(text, "polyvec_inference_items_total", modality="image") == 1
    batches = metric(text, "polyvec_inference_batch_size_count", modality="text")
    assert 1 <= batches < 6  # six concurrent single-text requests shared forward passes
    assert metric(text, "polyvec_inference_batch_size_sum", modality="text") == 6
    assert "polyvec_inference_queue_depth 0.0" in text
    assert metric(text, "polyvec_inference_request_seconds_count", endpoint="http.vectorize") == 8
    assert metric(text, "polyvec_inference_forward_seconds_count", modality="image") == 1
    json.dumps(text)  # plain text, no binary


async def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)
