"""Gateway tests run against the REAL inference server, in-process, on a loopback port.

:class:`InferenceUnderTest` starts ``services.inference`` (gRPC front, dynamic batcher, image decoding,
status codes: all the real code) over :class:`tests.fake_encoders.FakeEncoder`, a deterministic model:
texts are a hashed bag of words (texts sharing words are near each other), images a colour histogram (a
red image is near another red image). What a gateway test needs to observe or provoke goes through
:class:`WatchedService`, the real :class:`InferenceService` with counters and failures on cue:

* ``vectorize_calls``, ``texts_seen``, ``images_seen``, ``call_sizes``, calls and items in flight
  (``in_flight`` / ``max_in_flight``, ``items_in_flight`` / ``max_items_in_flight``), ``refused`` (calls
  answered RESOURCE_EXHAUSTED because the queue was full);
* ``fail_next(error, times)``: the next calls raise a service error (``NotReady`` answers UNAVAILABLE,
  ``Overloaded`` RESOURCE_EXHAUSTED, through the real gRPC front);
* ``encoder.gate``: clear it to hold every forward pass (a slow or stuck model), set it to release.

``gateway_with_inference(store)`` yields ``(GatewayService, InferenceUnderTest)`` with MODELS
``clip`` -> the server.
"""

from __future__ import annotations

import asyncio
import io
from collections import deque
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from PIL import Image

from services.inference.config import InferenceSettings
from services.inference.main import RunningServer, start_servers
from services.inference.service import InferenceService, Overloaded, ServiceError
from tests.fake_encoders import FakeEncoder

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 30),
    "blue": (30, 30, 220),
    "yellow": (230, 220, 30),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
}


def png_bytes(colour: str, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), COLOURS[colour]).save(buf, format="PNG")
    return buf.getvalue()


def png_image(colour: str, size: int = 8) -> Image.Image:
    return Image.open(io.BytesIO(png_bytes(colour, size)))


class WatchedService(InferenceService):
    """The real inference service, counting what it is asked and failing on cue."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.vectorize_calls = 0
        self.texts_seen: list[str] = []
        self.images_seen = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.items_in_flight = 0
        self.max_items_in_flight = 0
        self.call_sizes: list[int] = []
        self.refused = 0
        self._faults: deque[ServiceError] = deque()
        self.entered = asyncio.Event()  # set by every call that reaches the service

    def fail_next(self, error: ServiceError, times: int = 1) -> None:
        self._faults.extend([error] * times)

    async def vectorize(self, texts, images, normalize=None):
        self.vectorize_calls += 1
        self.entered.set()
        if self._faults:
            raise self._faults.popleft()
        n = len(texts) + len(images)
        self.call_sizes.append(n)
        self.in_flight += 1
        self.items_in_flight += n
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_items_in_flight = max(self.max_items_in_flight, self.items_in_flight)
        try:
            out = await super().vectorize(texts, images, normalize)
        except Overloaded:
            self.refused += 1
            raise
        finally:
            self.in_flight -= 1
            self.items_in_flight -= n
        self.texts_seen += list(texts)
        self.images_seen += len(images)
        return out


class InferenceUnderTest:
    """``async with InferenceUnderTest(dims=...) as inference:`` -> ``inference.address`` ("127.0.0.1:PORT").

    ``settings`` are InferenceSettings overrides (``max_queue=16``, ...). ``stop()`` and ``start()``
    again restart it on the same port, as a supervisor would.
    """

    def __init__(self, *, dims: int = 32, name: str = "fake-clip", modalities=("text", "image"),
                 forward_delay: float = 0.0, batching: bool = True, **settings: Any) -> None:
        self.encoder = FakeEncoder(dims=dims, name=name, modalities=tuple(modalities),
                                   forward_delay=forward_delay)
        self.batching = batching
        self.settings = InferenceSettings.from_env(
            {}, model="fake", host="127.0.0.1", grpc_port=0, http_port="off", **settings)
        self.port = 0
        self.running: RunningServer | None = None
        self.service: WatchedService | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # counters of the current (last started) service
    @property
    def vectorize_calls(self) -> int:
        return self.service.vectorize_calls if self.service else 0

    @property
    def texts_seen(self) -> list[str]:
        return self.service.texts_seen if self.service else []

    def fail_next(self, error: ServiceError, times: int = 1) -> None:
        assert self.service is not None
        self.service.fail_next(error, times)

    async def start(self) -> InferenceUnderTest:
        settings = self.settings
        if self.port:
            import dataclasses

            settings = dataclasses.replace(settings, grpc_port=self.port)
        self.service = WatchedService(self.encoder, settings, batching=self.batching)
        self.running = await start_servers(self.service, settings, host="127.0.0.1")
        self.port = self.running.grpc_port
        return self

    async def stop(self, grace: float = 0.0) -> None:
        if self.running is not None:
            self.encoder.gate.set()  # a held model must not hold the shutdown
            await self.running.stop(grace=grace)
            self.running = None

    async def __aenter__(self) -> InferenceUnderTest:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # references for assertions
    def text_vector(self, text: str) -> np.ndarray:
        return self.encoder.expected_text(text)

    def image_vector(self, image: Image.Image) -> np.ndarray:
        return self.encoder.expected_image(image)


def make_store(kind: str, tmp_path):
    """A fresh Store: "qdrant" = QdrantStore(":memory:"), "edge" = EdgeStore under tmp_path."""
    if kind == "qdrant":
        from gateway.storage.qdrant_store import QdrantStore

        return QdrantStore(location=":memory:")
    from gateway.storage.edge_store import EdgeStore

    return EdgeStore(tmp_path / "edge")


@asynccontextmanager
async def gateway_with_inference(store, *, settings: dict | None = None, **inference_kwargs):
    """GatewayService over ``store`` with MODELS "clip" -> a real in-process inference server.

    Yields ``(service, inference)``; ``inference_kwargs`` go to :class:`InferenceUnderTest`.
    """
    from gateway.config import GatewaySettings
    from gateway.service import GatewayService

    async with InferenceUnderTest(**inference_kwargs) as inference:
        overrides = {"models": {"clip": inference.address}, **(settings or {})}
        svc = GatewayService(store, GatewaySettings.from_env({}, **overrides))
        try:
            yield svc, inference
        finally:
            await svc.close()
            store.close()
