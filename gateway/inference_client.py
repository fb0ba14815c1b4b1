"""grpc.aio client of the inference services (``polyvec.inference.v1.Inference``).

One :class:`InferenceClient` per address, one channel each (reused by every call). The client learns the
service's limits from its ``Meta`` (``MAX_ITEMS_PER_REQUEST``, ``MAX_REQUEST_BYTES``, ``MAX_QUEUE``) and
sizes its Vectorize calls to fit them:

* a call holds at most ``min(batch_size, MAX_ITEMS_PER_REQUEST, MAX_QUEUE // concurrency)`` items and at
  most ``MAX_REQUEST_BYTES`` of input; at most ``concurrency`` calls and ``MAX_QUEUE`` items are in flight
  (:class:`~gateway.call_slots.CallSlots`), so a lone import never overflows the service's queue;
* an item that could never fit (one image larger than ``MAX_REQUEST_BYTES``) is refused at once
  (:class:`InferenceTooLarge`), without a call;
* RESOURCE_EXHAUSTED (the service's queue is full: backpressure) and UNAVAILABLE (down, restarting) are
  retried with jittered exponential backoff inside a time budget (:mod:`gateway.retry`); past it they
  come out as :class:`InferenceBusy` and :class:`InferenceUnavailable`. DEADLINE_EXCEEDED (one attempt
  ran past ``timeout_s``) is not retried: the service is slow, sending the work again would not help;
* requests past the waiting bound are refused at once (:class:`~gateway.call_slots.Admission`,
  :class:`InferenceBusy` with ``shed=True``), and a search query that waited ``query_max_wait_s`` for a
  call slot without getting one is refused the same way (a deadline, so no admitted query waits longer
  than the bound when the model slows down). A call retried after RESOURCE_EXHAUSTED / UNAVAILABLE goes
  back to the head of the slot queue, keeping its turn.

Other errors are the service's answer about the input (:class:`InferenceRejected`). Each logical call
is one client span (the trace context travels in the gRPC metadata) and is measured in the gateway's
metrics (gateway.metrics): latency by outcome, retries by status code, failures, RPCs in flight, and per
service the requests using it, the calls waiting for a slot and the requests shed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway.call_slots import Admission, CallSlots, Overdue, Shed
from gateway.retry import Backoff, Budget
from gateway.storage.base import SparseVec
from gateway.tasks import gather_or_cancel
from protos import inference_pb2, inference_pb2_grpc
from services import tracing
from services.inference.wire import unpack_vectors

if TYPE_CHECKING:
    from gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
#: The codes a polyvec inference service answers besides OK, RETRYABLE and DEADLINE_EXCEEDED; any other
#: code (UNIMPLEMENTED, UNKNOWN, PERMISSION_DENIED, ...) comes from something else, whose words are not
#: passed on.
POLYVEC_ERRORS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL)
#: UNAVAILABLE details that mean the peer is no gRPC server at all: retrying cannot help
NOT_GRPC = ("failed parsing http/2", "http1")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
META_TTL_S = 60.0  # limits are read again this often (and after the service was unreachable)


class InferenceError(Exception):
    def __init__(self, address: str, message: str) -> None:
        super().__init__(message)
        self.address = address
        self.message = message


class InferenceUnavailable(InferenceError):
    """The inference service at ``address`` did not answer (down, restarting, or past the deadline)."""

    def __init__(self, address: str, detail: str = "") -> None:
        msg = f"inference service {address} is unavailable"
        super().__init__(address, f"{msg}: {detail}" if detail else msg)
        self.detail = detail or "no answer"


class InferenceBusy(InferenceUnavailable):
    """Too much work for the service now: its queue stayed full for the whole retry budget, or (``shed``)
    the gateway already has as many requests waiting for it as INFERENCE_MAX_WAITING allows.
    Retrying after ``retry_after_s`` seconds is safe."""

    def __init__(self, address: str, detail: str, *, retry_after_s: int = 1, shed: bool = False) -> None:
        super().__init__(address, detail)
        self.message = f"inference service {address} is overloaded: {detail}"
        self.args = (self.message,)
        self.retry_after_s = max(1, int(retry_after_s))
        self.shed = shed


class InferenceRejected(InferenceError):
    """The inference service answered with an error about the request (e.g. an image it cannot decode)."""


class NotPolyvec(InferenceRejected):
    """The peer answered in a way no polyvec inference service does; its own words are left out."""

    def __init__(self, address: str, what: str) -> None:
        super().__init__(address, f"{address} is not a polyvec inference service ({what})")
        self.what = what


class InferenceTooLarge(InferenceRejected):
    """One item can never fit in a request to this service (checked before any call)."""

    def __init__(self, address: str, kind: str, index: int, problem: str) -> None:
        super().__init__(address, f"{kind}[{index}] {problem}")
        self.kind = kind
        self.index = index
        self.problem = problem


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
    max_queue: int = 0
    max_batch_size: int = 0
    kind: str = "dense"  # dense | sparse (an older server that does not say is dense)
    function_name: str = "TEXT_EMBEDDING"
    vocab_size: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def item_bytes(item: str | bytes) -> int:
    """Input size of one item as the service's MAX_REQUEST_BYTES sees it (UTF-8 bytes for a text)."""
    return len(item.encode("utf-8", "surrogatepass")) if isinstance(item, str) else len(item)


class InferenceClient:
    """Calls one inference service. Create and use it inside one running event loop."""

    def __init__(
        self,
        address: str,
        *,
        timeout_s: float = 30.0,
        concurrency: int = 4,
        batch_size: int = 64,
        retry_budget_s: float = 30.0,
        max_waiting: int = 64,
        query_max_wait_s: float = 0.0,
        backoff: Backoff | None = None,
        metrics: GatewayMetrics | None = None,
        label: str | None = None,
    ) -> None:
        self.address = address
        self.metrics = metrics
        self.label = label or address  # the model's name in metrics (its MODELS name, else the address)
        self.timeout_s = timeout_s
        self.concurrency = max(1, concurrency)
        self.batch_size = max(1, batch_size)
        self.retry_budget_s = retry_budget_s
        self.backoff = backoff or Backoff()
        self.query_max_wait_s = query_max_wait_s  # 0: a search query waits for a slot without a deadline
        self.admission = Admission(address, self.concurrency + max(0, max_waiting))
        self.slots = CallSlots(self.concurrency)
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
        self._meta_at = 0.0
        self._meta_stale = False
        self._refresh: asyncio.Future[InferenceMeta] | None = None  # a Meta read in progress
        self.calls = 0  # Vectorize calls sent, retries not counted (observability, tests)
        self.retries = 0  # attempts repeated after RESOURCE_EXHAUSTED / UNAVAILABLE
        if metrics is not None:
            metrics.inference_requests.labels(self.label).set_function(lambda: self.admission.active)
            metrics.inference_waiting.labels(self.label).set_function(lambda: self.slots.waiting)

    async def close(self) -> None:
        await self._channel.close()

    # -- admission -----------------------------------------------------------------------------------------
    @asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Count the current request against this service's waiting bound for the body.

        Raises :class:`InferenceBusy` (``shed``) at once when the bound is reached. Calls made inside
        (even from tasks the body starts) belong to this request and are not counted again.
        """
        try:
            async with self.admission.admit():
                yield
        except Shed as exc:
            raise self._shed(f"{exc} (INFERENCE_MAX_WAITING)") from None

    def _shed(self, detail: str) -> InferenceBusy:
        """A request the gateway sheds. Retry-After: the time the requests now admitted take to leave, at
        the rate they left lately (by then the queue has turned over); 1 s before two have left. (An
        estimate from the duration of calls was misled by import calls of many items: shed searchers were
        told to stay away for half a minute while the model ran out of work.)"""
        if self.metrics is not None:
            self.metrics.inference_shed.labels(self.label).inc()
        drain_s = self.admission.drain_s() or 1.0
        return InferenceBusy(self.address, detail, retry_after_s=min(30, math.ceil(drain_s)), shed=True)

    # -- calls ---------------------------------------------------------------------------------------------
    async def _call(self, method, request, *, items: int, budget_s: float, urgent: bool = False,
                    timeout_s: float | None = None):
        """One RPC (``items`` > 0: holding call slots) with a deadline per attempt (``timeout_s``, default
        INFERENCE_TIMEOUT_S), retried on RESOURCE_EXHAUSTED / UNAVAILABLE inside ``budget_s`` seconds;
        traced and measured as one call."""
        name = type(request).__name__.removesuffix("Request")  # VectorizeRequest -> Vectorize
        started = time.perf_counter()
        outcome = "unavailable"
        span = tracing.tracer().start_span(
            f"polyvec.inference.v1.Inference/{name}", kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "server.address": self.address, "polyvec.model": self.label})
        try:
            with trace.use_span(span, end_on_exit=True):
                response = await self._call_with_retries(
                    name, method, request, items=items, budget_s=budget_s, urgent=urgent, timeout_s=timeout_s)
            outcome = "ok"
            return response
        except InferenceRejected:
            outcome = "rejected"
            raise
        except InferenceBusy:
            outcome = "overloaded"
            raise
        finally:
            if outcome != "ok":
                span.set_status(Status(StatusCode.ERROR, outcome))
            if self.metrics is not None:
                self.metrics.inference_latency.labels(self.label, name, outcome).observe(
                    time.perf_counter() - started)
                if outcome != "ok":
                    self.metrics.inference_failures.labels(self.label, name, outcome).inc()

    async def _call_with_retries(self, name: str, method, request, *, items: int, budget_s: float,
                                 urgent: bool, timeout_s: float | None):
        budget = Budget(budget_s, self.backoff)
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        max_wait_s = self.query_max_wait_s if urgent and self.query_max_wait_s > 0 else None
        wait_until = time.monotonic() + max_wait_s if max_wait_s is not None else None
        while True:
            try:
                if items:
                    deadline_s = None if wait_until is None else wait_until - time.monotonic()
                    try:
                        # a retry goes back to the head of the queue: it keeps the turn it waited for
                        async with self.slots.hold(items, urgent=urgent, first=budget.retries > 0,
                                                   deadline_s=deadline_s):
                            return await self._attempt(method, request, timeout_s)
                    except Overdue:
                        raise self._shed(f"a search query waited {max_wait_s:g} s for the model "
                                         "(INFERENCE_QUERY_MAX_WAIT_S)") from None
                return await self._attempt(method, request, timeout_s)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                details = exc.details() or ""
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise InferenceUnavailable(
                        self.address, f"no answer within {timeout_s:g} s (INFERENCE_TIMEOUT_S)") from None
                if code not in RETRYABLE:
                    if code not in POLYVEC_ERRORS:
                        raise NotPolyvec(self.address, f"it answered {code.name}") from None
                    raise InferenceRejected(self.address, details or code.name) from None
                if code == grpc.StatusCode.UNAVAILABLE and any(m in details.lower() for m in NOT_GRPC):
                    raise InferenceUnavailable(self.address, details) from None
                if code == grpc.StatusCode.UNAVAILABLE:
                    self._meta_stale = True  # it may come back with other limits: read them again
                pause = budget.next_pause()
                if pause is None:
                    raise self._gave_up(code, details, budget_s) from None
                self.retries += 1
                log.debug("inference %s: %s, retry %d in %.2fs", self.address, code.name, budget.retries,
                          pause)
                trace.get_current_span().add_event("retry", {"rpc.grpc.status_code": code.name,
                                                             "polyvec.attempt": budget.retries})
                if self.metrics is not None:
                    self.metrics.inference_retries.labels(self.label, name, code.name).inc()
            await asyncio.sleep(pause)

    async def _attempt(self, method, request, timeout_s: float):
        """One RPC attempt, counted in flight while it runs; the trace context travels in its metadata."""
        metadata = tracing.inject_metadata() or None
        gauge = self.metrics.inference_in_flight.labels(self.label) if self.metrics is not None else None
        if gauge is not None:
            gauge.inc()
        try:
            return await method(request, timeout=timeout_s, metadata=metadata)
        finally:
            if gauge is not None:
                gauge.dec()

    def _gave_up(self, code: grpc.StatusCode, details: str, budget_s: float) -> InferenceError:
        spent = f"still {code.name} after retrying for {budget_s:g} s"
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return InferenceBusy(self.address, f"{details or 'its queue is full'} ({spent})",
                                 retry_after_s=math.ceil(self.backoff.max_s))
        return InferenceUnavailable(self.address, f"{details or 'no answer'} ({spent})")

    # -- meta and limits -----------------------------------------------------------------------------------
    async def meta(self, *, refresh: bool = False, timeout_s: float | None = None,
                   budget_s: float = 0.0) -> InferenceMeta:
        """The service's Meta (cached after the first answer); ``budget_s`` retries a down service."""
        if self._meta is not None and not refresh:
            return self._meta
        resp = await self._call(self._stub.Meta, inference_pb2.MetaRequest(), items=0, budget_s=budget_s,
                                timeout_s=timeout_s)
        limits = resp.limits
        self._meta = InferenceMeta(
            name=resp.name,
            type=resp.type,
            dimensions=resp.dimensions,
            modalities=list(resp.modalities),
            device=resp.device,
            precision=resp.precision,
            normalize=resp.normalize,
            max_items_per_request=limits.max_items_per_request,
            max_request_bytes=limits.max_request_bytes,
            max_queue=limits.max_queue,
            max_batch_size=limits.max_batch_size,
            kind=resp.kind or "dense",
            function_name=resp.function_name or "TEXT_EMBEDDING",
            vocab_size=resp.vocab_size,
        )
        self._meta_at = time.monotonic()
        self._meta_stale = False
        self.slots.set_items(limits.max_queue)
        return self._meta

    async def limits(self, budget_s: float | None = None) -> InferenceMeta:
        """The service's Meta, read again when older than META_TTL_S or after the service was down.

        Concurrent callers share one read (the first caller's retry budget applies to it).
        """
        if self._meta is not None and not self._meta_stale and time.monotonic() - self._meta_at <= META_TTL_S:
            return self._meta
        if self._refresh is None or self._refresh.done():
            budget = self.retry_budget_s if budget_s is None else budget_s
            self._refresh = asyncio.ensure_future(self.meta(refresh=True, budget_s=budget))
            self._refresh.add_done_callback(_retrieve)
        return await asyncio.shield(self._refresh)

    @property
    def call_items(self) -> int:
        """Most items in one call: the configured batch size, within the service's limits."""
        size = self.batch_size
        meta = self._meta
        if meta is not None:
            if meta.max_items_per_request:
                size = min(size, meta.max_items_per_request)
            if meta.max_queue:
                size = min(size, max(1, meta.max_queue // self.concurrency))
        return max(1, size)

    @property
    def call_bytes(self) -> int:
        """Most input bytes in one call (0: no limit known)."""
        return self._meta.max_request_bytes if self._meta is not None else 0

    def oversize(self, item: str | bytes) -> str | None:
        """Why ``item`` can never be sent to this service, or None."""
        limit = self.call_bytes
        size = item_bytes(item)
        if limit and size > limit:
            return (f"is {size} bytes; inference service {self.address} accepts at most {limit} bytes per "
                    "request (its MAX_REQUEST_BYTES)")
        return None

    def plan(self, items: Sequence[str | bytes]) -> list[tuple[int, int]]:
        """Split ``items`` into [lo, hi) ranges that each fit one call (in order)."""
        most_items, most_bytes = self.call_items, self.call_bytes
        ranges: list[tuple[int, int]] = []
        lo, size = 0, 0
        for i, item in enumerate(items):
            n = item_bytes(item)
            if i > lo and (i - lo >= most_items or (most_bytes and size + n > most_bytes)):
                ranges.append((lo, i))
                lo, size = i, 0
            size += n
        if lo < len(items):
            ranges.append((lo, len(items)))
        return ranges

    # -- vectors -------------------------------------------------------------------------------------------
    async def vectorize(
        self,
        texts: list[str] | None = None,
        images: list[bytes] | None = None,
        normalize: bool | None = None,
        *,
        budget_s: float | None = None,
        urgent: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for ``texts`` and ``images`` in input order (float32 arrays (n, d)).

        Cut into calls that fit the service's limits, run concurrently within the bounds; each call
        retries inside ``budget_s`` (default: this client's retry budget). ``urgent`` calls (search
        queries) get the next free slot before waiting import calls.
        """
        texts = list(texts or [])
        images = list(images or [])
        budget = self.retry_budget_s if budget_s is None else budget_s
        if not texts and not images:
            empty = np.zeros((0, self._meta.dimensions if self._meta else 0), dtype=np.float32)
            return empty, empty
        async with self.admitted():
            await self.limits(budget)
            inputs: tuple[tuple[str, Sequence[str | bytes]], ...] = (("texts", texts), ("images", images))
            for kind, items in inputs:
                for i, item in enumerate(items):
                    problem = self.oversize(item)
                    if problem:
                        raise InferenceTooLarge(self.address, kind, i, problem)
            return await self._vectorize_parts(texts, images, normalize, budget, urgent)

    async def _vectorize_parts(self, texts: list[str], images: list[bytes], normalize: bool | None,
                               budget_s: float, urgent: bool) -> tuple[np.ndarray, np.ndarray]:
        parts: list[tuple[list[str], list[bytes]]]
        if texts and images and len(self.plan([*texts, *images])) == 1:
            parts = [(texts, images)]  # one call, both modalities (a batch of search queries)
        else:
            parts = [(texts[lo:hi], []) for lo, hi in self.plan(texts)]
            parts += [([], images[lo:hi]) for lo, hi in self.plan(images)]
        if len(parts) == 1:
            return await self._vectorize_part(parts[0][0], parts[0][1], normalize, budget_s, urgent)
        results = await gather_or_cancel(
            *(self._vectorize_part(t, i, normalize, budget_s, urgent) for t, i in parts))
        dims = results[0][0].shape[1]
        tvs = [r[0] for r, (t, _) in zip(results, parts, strict=True) if t]
        ivs = [r[1] for r, (_, i) in zip(results, parts, strict=True) if i]
        tv = np.concatenate(tvs) if tvs else np.zeros((0, dims), dtype=np.float32)
        iv = np.concatenate(ivs) if ivs else np.zeros((0, dims), dtype=np.float32)
        return tv, iv

    async def _vectorize_part(self, texts: list[str], images: list[bytes], normalize: bool | None,
                              budget_s: float, urgent: bool) -> tuple[np.ndarray, np.ndarray]:
        request = inference_pb2.VectorizeRequest(texts=texts, images=images)
        if normalize is not None:
            request.normalize = normalize
        self.calls += 1
        resp = await self._call(self._stub.Vectorize, request, items=len(texts) + len(images),
                                budget_s=budget_s, urgent=urgent)
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

    async def _vectorize_sparse_part(self, texts: list[str], budget_s: float,
                                     urgent: bool) -> list[SparseVec]:
        self.calls += 1
        resp = await self._call(self._stub.VectorizeSparse, inference_pb2.VectorizeSparseRequest(texts=texts),
                                items=len(texts), budget_s=budget_s, urgent=urgent)
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

    async def vectorize_sparse(self, texts: list[str], *, budget_s: float | None = None,
                               urgent: bool = False) -> list[SparseVec]:
        """One sparse vector per text, in input order (a sparse model: ``Meta.kind == "sparse"``).

        Cut into calls that fit the service's limits like :meth:`vectorize`, with the same admission,
        retry budget and call slots.
        """
        texts = list(texts)
        if not texts:
            return []
        budget = self.retry_budget_s if budget_s is None else budget_s
        async with self.admitted():
            await self.limits(budget)
            for i, text in enumerate(texts):
                problem = self.oversize(text)
                if problem:
                    raise InferenceTooLarge(self.address, "texts", i, problem)
            results = await gather_or_cancel(
                *(self._vectorize_sparse_part(texts[lo:hi], budget, urgent) for lo, hi in self.plan(texts)))
        return [v for part in results for v in part]


def _retrieve(future: asyncio.Future) -> None:
    """Mark a shared future's exception as seen (each waiter gets it; none may be left)."""
    if not future.cancelled():
        future.exception()


class InferencePool:
    """One :class:`InferenceClient` per address, created on first use (in the running loop);
    ``client_options`` are InferenceClient's keyword arguments; ``labels`` maps an address to the model
    name its metrics carry."""

    def __init__(self, *, labels: dict[str, str] | None = None, **client_options: Any) -> None:
        self._options = client_options
        self._labels = dict(labels or {})
        self._clients: dict[str, InferenceClient] = {}

    def get(self, address: str) -> InferenceClient:
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = InferenceClient(address, label=self._labels.get(address),
                                                              **self._options)
        return client

    @property
    def clients(self) -> dict[str, InferenceClient]:
        return dict(self._clients)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()
