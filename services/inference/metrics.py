"""Prometheus metrics of one inference service.

Each :class:`Metrics` owns its own ``CollectorRegistry`` so several services
can live in one process (tests, benchmarks) without name clashes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "polyvec_inference_requests", "Requests handled, by endpoint and status", ["endpoint", "status"],
            registry=r,
        )
        self.items = Counter(
            "polyvec_inference_items", "Items vectorized, by modality", ["modality"], registry=r
        )
        self.batch_size = Histogram(
            "polyvec_inference_batch_size", "Items per forward pass", ["modality"], buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("polyvec_inference_queue_depth", "Items waiting to be batched", registry=r)
        self.request_latency = Histogram(
            "polyvec_inference_request_seconds", "Request latency, by endpoint", ["endpoint"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.forward_latency = Histogram(
            "polyvec_inference_forward_seconds", "Model forward pass latency, by modality", ["modality"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_failures = Counter(
            "polyvec_inference_batch_failures", "Batches whose preparation or forward pass failed",
            ["modality"], registry=r,
        )

    # --- hooks the batcher calls (from its threads; prometheus_client is thread-safe) ---
    def observe_batch(self, modality: str, size: int, forward_seconds: float) -> None:
        self.batch_size.labels(modality).observe(size)
        self.forward_latency.labels(modality).observe(forward_seconds)
        self.items.labels(modality).inc(size)

    def observe_batch_failure(self, modality: str) -> None:
        self.batch_failures.labels(modality).inc()

    def set_queue_depth(self, depth: int) -> None:
        self.queue_depth.set(depth)

    # --- hooks the fronts call ---------------------------------------------
    def observe_request(self, endpoint: str, status: str, seconds: float) -> None:
        self.requests.labels(endpoint, status).inc()
        self.request_latency.labels(endpoint).observe(seconds)

    @contextmanager
    def track(self, endpoint: str) -> Iterator[dict]:
        """Time a request; the caller sets ``state["status"]`` (default "ok", "error" on exceptions)."""
        state = {"status": "ok"}
        start = time.perf_counter()
        try:
            yield state
        except BaseException:
            if state["status"] == "ok":
                state["status"] = "error"
            raise
        finally:
            self.observe_request(endpoint, state["status"], time.perf_counter() - start)

    def render(self) -> bytes:
        return generate_latest(self.registry)
