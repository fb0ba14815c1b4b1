"""grpc.aio client of the inference services (``polyvec.inference.v1.Inference``).

One :class:`InferenceClient` per address, one channel each (reused by every call), a semaphore bounding
the calls in flight per address, a deadline on every call, and retries with exponential backoff on
UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED only. Large batches are split into several calls
that run concurrently (within the bound). Errors come out as :class:`InferenceUnavailable` (the service
did not answer in time) or :class:`InferenceRejected` (it answered with an error about the input).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.storage.base import SparseVec
from protos import inference_pb2, inference_pb2_grpc
from services import tracing
from services.inference.wire import unpack_vectors

if TYPE_CHECKING:
    from gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
             grpc.StatusCode.RESOURCE_EXHAUSTED)
#: The codes a polyvec inference service answers besides OK and RETRYABLE; any other code (UNIMPLEMENTED,
#: UNKNOWN, PERMISSION_DENIED, ...) comes from something else, whose words are not passed on.
POLYVEC_ERRORS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL)
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class InferenceError(Exception):
    def __init__(self, address: str, message: str) -> None:
        super().__init__(message)
        self.address = address
        self.message = message


class InferenceUnavailable(InferenceError):
    """The inference service at ``address`` did not answer (down, overloaded, or past the deadline)."""

    def __init__(self, address: str, detail: str = "") -> None:
        msg = f"inference service {address} is unavailable"
        super().__init__(address, f"{msg}: {detail}" if detail else msg)
        self.detail = detail or "no answer"


class InferenceRejected(InferenceError):
    """The inference service answered with an error about the request (e.g. an image it cannot decode)."""


class NotPolyvec(InferenceRejected):
    """The peer answered in a way no polyvec inference service does; its own words are left out."""

    def __init__(self, address: str, what: str) -> None:
        super().__init__(address, f"{address} is not a polyvec inference service ({what})")
        self.what = what


@dataclass
class InferenceMeta:
    name: str
    type: str
    dimensions: int
    modalities: list[str] = field(default_factory=list)
    device: str = ""
    precision: str = ""
    normalize: bool = True
    max_items_per_request: int = 0
    max_request_bytes: int = 0
    kind: str = "dense"  # dense | sparse (an older server that does not say is dense)
    function_name: str = "TEXT_EMBEDDING"
    vocab_size: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class InferenceClient:
    """Calls one inference service. Create and use it inside one running event loop."""

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 30.0,
        concurrency: int = 4,
        retries: int = 3,
        batch_size: int = 64,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        metrics: GatewayMetrics | None = None,
        label: str | None = None,
    ) -> None:
        self.address = address
        self.metrics = metrics
        self.label = label or address  # the model's name in metrics (its MODELS name, else the address)
        self.timeout_s = timeout_s
        self.retries = retries
        self.batch_size = batch_size
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._semaphore = asyncio.Semaphore(concurrency)
        self._channel = grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.enable_retries", 0),
                # fail fast when the peer is down instead of waiting out the reconnect backoff
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                # a name that resolves to several replicas (a headless Kubernetes Service) gets calls
                # spread over all of them, not pinned to the first
                ("grpc.lb_policy_name", "round_robin"),
            ],
        )
        self._stub = inference_pb2_grpc.InferenceStub(self._channel)
        self._meta: InferenceMeta | None = None
        self.calls = 0  # Vectorize calls sent (observability, tests)

    async def close(self) -> None:
        await self._channel.close()

    # -- calls ---------------------------------------------------------------------------------------------
    async def _call(self, method, request, timeout_s: float):
        """One RPC with deadline, bounded concurrency and retries with exponential backoff (measured in
        the gateway's metrics as one call, its retries and its outcome)."""
        name = type(request).__name__.removesuffix("Request")  # VectorizeRequest -> Vectorize
        started = time.perf_counter()
        outcome = "unavailable"
        span = tracing.tracer().start_span(
            f"polyvec.inference.v1.Inference/{name}", kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "server.address": self.address, "polyvec.model": self.label})
        try:
            with trace.use_span(span, end_on_exit=True):
                response = await self._call_with_retries(name, method, request, timeout_s)
            outcome = "ok"
            return response
        except InferenceRejected:
            outcome = "rejected"
            raise
        finally:
            if outcome != "ok":
                span.set_status(Status(StatusCode.ERROR, outcome))
            if self.metrics is not None:
                self.metrics.inference_latency.labels(self.label, name, outcome).observe(
                    time.perf_counter() - started)
                if outcome != "ok":
                    self.metrics.inference_failures.labels(self.label, name, outcome).inc()

    async def _call_with_retries(self, name: str, method, request, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise InferenceUnavailable(self.address, f"no answer within {timeout_s:g} s")
            try:
                async with self._semaphore:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise InferenceUnavailable(self.address, f"no answer within {timeout_s:g} s")
                    return await self._send(method, request, remaining)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code not in RETRYABLE:
                    if code not in POLYVEC_ERRORS:
                        raise NotPolyvec(self.address, f"it answered {code.name}") from None
                    raise InferenceRejected(self.address, exc.details() or code.name) from None
                attempt += 1
                pause = min(self.max_backoff_s, self.backoff_s * (2 ** (attempt - 1)))
                if attempt > self.retries or deadline - time.monotonic() <= pause:
                    detail = f"{code.name}: {exc.details() or ''}".strip(": ")
                    raise InferenceUnavailable(self.address, detail) from None
                log.debug("inference %s: %s, retry %d in %.2fs", self.address, code.name, attempt, pause)
                trace.get_current_span().add_event("retry", {"rpc.grpc.status_code": code.name,
                                                             "polyvec.attempt": attempt})
                if self.metrics is not None:
                    self.metrics.inference_retries.labels(self.label, name, code.name).inc()
                await asyncio.sleep(pause)

    async def _send(self, method, request, timeout_s: float):
        """One RPC attempt, counted in flight while it runs; the trace context travels in its metadata."""
        metadata = tracing.inject_metadata() or None
        if self.metrics is None:
            return await method(request, timeout=timeout_s, metadata=metadata)
        gauge = self.metrics.inference_in_flight.labels(self.label)
        gauge.inc()
        try:
            return await method(request, timeout=timeout_s, metadata=metadata)
        finally:
            gauge.dec()

    async def meta(self, *, refresh: bool = False, timeout_s: float | None = None) -> InferenceMeta:
        """The service's Meta (cached after the first answer)."""
        if self._meta is not None and not refresh:
            return self._meta
        resp = await self._call(self._stub.Meta, inference_pb2.MetaRequest(), timeout_s or self.timeout_s)
        self._meta = InferenceMeta(
            name=resp.name,
            type=resp.type,
            dimensions=resp.dimensions,
            modalities=list(resp.modalities),
            device=resp.device,
            precision=resp.precision,
            normalize=resp.normalize,
            max_items_per_request=resp.limits.max_items_per_request,
            max_request_bytes=resp.limits.max_request_bytes,
            kind=resp.kind or "dense",
            function_name=resp.function_name or "TEXT_EMBEDDING",
            vocab_size=resp.vocab_size,
        )
        return self._meta

    async def _vectorize_once(
        self, texts: list[str], images: list[bytes], normalize: bool | None
    ) -> tuple[np.ndarray, np.ndarray]:
        request = inference_pb2.VectorizeRequest(texts=texts, images=images)
        if normalize is not None:
            request.normalize = normalize
        self.calls += 1
        resp = await self._call(self._stub.Vectorize, request, self.timeout_s)
        try:
            tv = unpack_vectors(resp.text_vectors, resp.dimensions)
            iv = unpack_vectors(resp.image_vectors, resp.dimensions)
        except ValueError as exc:
            raise InferenceRejected(self.address, f"malformed answer: {exc}") from None
        if tv.shape[0] != len(texts) or iv.shape[0] != len(images):
            raise InferenceRejected(
                self.address,
                f"answered {tv.shape[0]} text and {iv.shape[0]} image vectors for "
                f"{len(texts)} texts and {len(images)} images",
            )
        return tv, iv

    def _chunks(self, texts: list[str], images: list[bytes]) -> list[tuple[list[str], list[bytes]]]:
        size = self.batch_size
        if self._meta is not None and self._meta.max_items_per_request:
            size = min(size, self._meta.max_items_per_request)
        size = max(1, size)
        if len(texts) + len(images) <= size:
            return [(texts, images)]  # one call, both modalities (a batch of search queries)
        chunks: list[tuple[list[str], list[bytes]]] = []
        for i in range(0, len(texts), size):
            chunks.append((texts[i:i + size], []))
        for i in range(0, len(images), size):
            chunks.append(([], images[i:i + size]))
        return chunks

    async def vectorize(
        self, texts: list[str] | None = None, images: list[bytes] | None = None, normalize: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for ``texts`` and ``images`` in input order (float32 arrays (n, d)).

        Split into calls of at most ``batch_size`` items that run concurrently (bounded per address).
        """
        texts = list(texts or [])
        images = list(images or [])
        if not texts and not images:
            dims = self._meta.dimensions if self._meta else 0
            empty = np.zeros((0, dims), dtype=np.float32)
            return empty, empty
        chunks = self._chunks(texts, images)
        if len(chunks) == 1:
            return await self._vectorize_once(chunks[0][0], chunks[0][1], normalize)
        results = await asyncio.gather(*(self._vectorize_once(t, i, normalize) for t, i in chunks))
        dims = next(r[0].shape[1] if r[0].shape[0] else r[1].shape[1] for r in results)
        tvs = [r[0] for r, (t, _) in zip(results, chunks, strict=True) if t]
        ivs = [r[1] for r, (_, i) in zip(results, chunks, strict=True) if i]
        tv = np.concatenate(tvs) if tvs else np.zeros((0, dims), dtype=np.float32)
        iv = np.concatenate(ivs) if ivs else np.zeros((0, dims), dtype=np.float32)
        return tv, iv


    async def _vectorize_sparse_once(self, texts: list[str]) -> list[SparseVec]:
        self.calls += 1
        resp = await self._call(self._stub.VectorizeSparse, inference_pb2.VectorizeSparseRequest(texts=texts),
                                self.timeout_s)
        if len(resp.vectors) != len(texts):
            raise InferenceRejected(self.address, f"answered {len(resp.vectors)} sparse vectors for "
                                                  f"{len(texts)} texts")
        out = []
        for v in resp.vectors:
            if len(v.indices) != len(v.values):
                raise InferenceRejected(self.address, f"malformed answer: {len(v.indices)} token ids but "
                                                      f"{len(v.values)} weights")
            out.append(SparseVec(list(v.indices), list(v.values)))
        return out

    async def vectorize_sparse(self, texts: list[str]) -> list[SparseVec]:
        """One sparse vector per text, in input order (a sparse model: ``Meta.kind == "sparse"``).

        Split into calls of at most ``batch_size`` texts that run concurrently (bounded per address).
        """
        texts = list(texts)
        if not texts:
            return []
        chunks = [chunk for chunk, _ in self._chunks(texts, [])]
        results = await asyncio.gather(*(self._vectorize_sparse_once(chunk) for chunk in chunks))
        return [v for part in results for v in part]


class InferencePool:
    """One :class:`InferenceClient` per address, created on first use (in the running loop)."""

    def __init__(self, *, timeout_s: float = 30.0, concurrency: int = 4, retries: int = 3,
                 batch_size: int = 64, backoff_s: float = 0.05, metrics: GatewayMetrics | None = None,
                 labels: dict[str, str] | None = None) -> None:
        self._kwargs: dict[str, Any] = dict(timeout_s=timeout_s, concurrency=concurrency, retries=retries,
                                            batch_size=batch_size, backoff_s=backoff_s)
        self._metrics = metrics
        self._labels = dict(labels or {})  # address -> model name, for metrics
        self._clients: dict[str, InferenceClient] = {}

    def get(self, address: str) -> InferenceClient:
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = InferenceClient(
                address, metrics=self._metrics, label=self._labels.get(address), **self._kwargs)
        return client

    @property
    def clients(self) -> dict[str, InferenceClient]:
        return dict(self._clients)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()
