"""The gateway's Prometheus metrics: one registry per GatewayService, served on the HTTP front's /metrics.

* HTTP API: ``polyvec_gateway_requests_total{method, route, status}`` and
  ``polyvec_gateway_request_seconds{method, route}`` (route = the route template, e.g.
  ``/v1/collections/{name}/search``);
* gRPC API: ``polyvec_gateway_grpc_requests_total{method, code}`` and
  ``polyvec_gateway_grpc_request_seconds{method}``;
* calls to the inference services, by model (its MODELS name, else its address) and method:
  ``polyvec_gateway_inference_call_seconds{model, method, outcome}`` (one logical call, retries
  included; outcome ok / rejected / unavailable / overloaded),
  ``polyvec_gateway_inference_retries_total{model, method, code}``,
  ``polyvec_gateway_inference_failures_total{model, method, reason}``,
  ``polyvec_gateway_inference_in_flight{model}`` (RPCs sent and not yet answered),
  ``polyvec_gateway_inference_requests{model}`` and ``polyvec_gateway_inference_waiting_calls{model}``
  (requests using the service; calls waiting for a slot) and ``polyvec_gateway_inference_shed_total{model}``
  (requests refused with 429 by INFERENCE_MAX_WAITING);
* storage: ``polyvec_gateway_store_seconds{store, operation, outcome}`` (store qdrant / edge);
* import: ``polyvec_gateway_import_objects_total{result}`` (ok / failed).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        # HTTP front
        self.requests = Counter("polyvec_gateway_requests", "HTTP requests, by route template and status",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("polyvec_gateway_request_seconds", "HTTP request latency, by route template",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        # gRPC front
        self.grpc_requests = Counter("polyvec_gateway_grpc_requests",
                                     "gRPC API calls, by method and status code", ["method", "code"],
                                     registry=r)
        self.grpc_latency = Histogram("polyvec_gateway_grpc_request_seconds",
                                      "gRPC API call latency, by method", ["method"], buckets=LATENCY_BUCKETS,
                                      registry=r)
        # inference services
        self.inference_latency = Histogram(
            "polyvec_gateway_inference_call_seconds",
            "Calls to an inference service (retries included), by model, method and outcome",
            ["model", "method", "outcome"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference_retries = Counter(
            "polyvec_gateway_inference_retries", "Inference calls retried, by model, method and status code",
            ["model", "method", "code"], registry=r)
        self.inference_failures = Counter(
            "polyvec_gateway_inference_failures",
            "Inference calls that failed for good, by model, method and reason (rejected / unavailable)",
            ["model", "method", "reason"], registry=r)
        self.inference_in_flight = Gauge(
            "polyvec_gateway_inference_in_flight", "Inference RPCs sent and not yet answered, by model",
            ["model"], registry=r)
        self.inference_requests = Gauge(
            "polyvec_gateway_inference_requests",
            "Requests using an inference service now (with a call in flight or waiting), by model",
            ["model"], registry=r)
        self.inference_waiting = Gauge(
            "polyvec_gateway_inference_waiting_calls",
            "Calls waiting for a free slot (INFERENCE_CONCURRENCY) to an inference service, by model",
            ["model"], registry=r)
        self.inference_shed = Counter(
            "polyvec_gateway_inference_shed",
            "Requests refused at once with 429 (INFERENCE_MAX_WAITING reached), by model", ["model"],
            registry=r)
        # storage
        self.store_latency = Histogram(
            "polyvec_gateway_store_seconds", "Storage (Qdrant) calls, by store, operation and outcome",
            ["store", "operation", "outcome"], buckets=LATENCY_BUCKETS, registry=r)
        # import
        self.import_objects = Counter("polyvec_gateway_import_objects", "Objects imported, by result",
                                      ["result"], registry=r)
        for result in ("ok", "failed"):
            self.import_objects.labels(result)

    def render(self) -> bytes:
        return generate_latest(self.registry)
