"""A small but real grpc.aio server implementing ``polyvec.inference.v1.Inference`` for gateway tests.

Text vectors are a hashed bag of words (so texts sharing words are near each other); an image is
decoded with Pillow and embedded as the word of its dominant colour ("red", "green", "blue", ...), so
an image of a red square lands near the text "red". Images Pillow cannot decode are rejected with
INVALID_ARGUMENT naming their index, like the real service. Calls are counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
from contextlib import asynccontextmanager

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from PIL import Image

from protos import inference_pb2, inference_pb2_grpc
from services.inference.wire import pack_vectors

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 30),
    "blue": (30, 30, 220),
    "yellow": (230, 220, 30),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
}


def word_vector(word: str, dims: int) -> np.ndarray:
    digest = hashlib.sha256(word.encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return rng.standard_normal(dims).astype(np.float32)


def text_vector(text: str, dims: int) -> np.ndarray:
    words = re.findall(r"\w+", text.lower()) or ["<empty>"]
    vec = np.sum([word_vector(w, dims) for w in words], axis=0)
    return (vec / np.linalg.norm(vec)).astype(np.float32)


def colour_of(image: Image.Image) -> str:
    r, g, b = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(axis=0)
    return min(COLOURS, key=lambda c: sum((x - y) ** 2 for x, y in zip(COLOURS[c], (r, g, b), strict=True)))


def png_bytes(colour: str, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), COLOURS[colour]).save(buf, format="PNG")
    return buf.getvalue()


class FakeInference(inference_pb2_grpc.InferenceServicer):
    def __init__(self, dims: int = 32, name: str = "fake-clip", modalities=("text", "image"),
                 delay_s: float = 0.0) -> None:
        self.dims = dims
        self.name = name
        self.modalities = list(modalities)
        self.delay_s = delay_s
        self.vectorize_calls = 0
        self.texts_seen: list[str] = []
        self.images_seen = 0
        self.fail_next_unavailable = 0  # answer UNAVAILABLE this many times before serving
        self.in_flight = 0
        self.max_in_flight = 0

    async def Vectorize(self, request, context):  # noqa: N802 (gRPC method name)
        self.vectorize_calls += 1
        if self.fail_next_unavailable > 0:
            self.fail_next_unavailable -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        if request.images and "image" not in self.modalities:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "this model does not embed images")
        texts = list(request.texts)
        self.texts_seen += texts
        tv = np.stack([text_vector(t, self.dims) for t in texts]) if texts else np.zeros((0, self.dims))
        image_vecs = []
        for i, data in enumerate(request.images):
            try:
                img = Image.open(io.BytesIO(data))
                img.load()
            except Exception:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"images[{i}]: not a decodable image")
            image_vecs.append(text_vector(colour_of(img), self.dims))
        self.images_seen += len(image_vecs)
        iv = np.stack(image_vecs) if image_vecs else np.zeros((0, self.dims))
        return inference_pb2.VectorizeResponse(
            text_vectors=pack_vectors(tv),
            image_vectors=pack_vectors(iv),
            model=self.name,
            dimensions=self.dims,
        )

    async def Meta(self, request, context):  # noqa: N802
        return inference_pb2.MetaResponse(
            name=self.name, type="fake", dimensions=self.dims, modalities=self.modalities, device="cpu",
            precision="fp32", normalize=True, max_text_tokens=77,
            limits=inference_pb2.Limits(max_batch_size=32, max_items_per_request=1024),
        )


class FakeInferenceServer:
    """``async with FakeInferenceServer() as fake:`` -> fake.address ("127.0.0.1:PORT"), fake.servicer."""

    def __init__(self, **kwargs) -> None:
        self.servicer = FakeInference(**kwargs)
        self.server: grpc.aio.Server | None = None
        self.address = ""

    async def start(self) -> FakeInferenceServer:
        self.server = grpc.aio.server()
        inference_pb2_grpc.add_InferenceServicer_to_server(self.servicer, self.server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        self.address = f"127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)
            self.server = None

    async def __aenter__(self) -> FakeInferenceServer:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()


def make_store(kind: str, tmp_path):
    """A fresh Store: "qdrant" = QdrantStore(":memory:"), "edge" = EdgeStore under tmp_path."""
    if kind == "qdrant":
        from gateway.storage.qdrant_store import QdrantStore

        return QdrantStore(location=":memory:")
    from gateway.storage.edge_store import EdgeStore

    return EdgeStore(tmp_path / "edge")


@asynccontextmanager
async def gateway_with_fake(store, *, settings: dict | None = None, **fake_kwargs):
    """GatewayService over ``store``, MODELS "clip" -> a FakeInferenceServer; yields (svc, fake)."""
    from gateway.config import GatewaySettings
    from gateway.service import GatewayService

    async with FakeInferenceServer(**fake_kwargs) as fake:
        overrides = {"models": {"clip": fake.address}, **(settings or {})}
        svc = GatewayService(store, GatewaySettings.from_env({}, **overrides))
        try:
            yield svc, fake
        finally:
            await svc.close()
            store.close()
