"""OpenTelemetry tracing for the gateway and the inference service: off unless OTEL_EXPORTER_OTLP_ENDPOINT
(or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set.

When on, spans go to that OTLP/gRPC endpoint in batches, under the service name OTEL_SERVICE_NAME
(default ``polyvec-gateway`` / ``polyvec-inference``); the standard OTEL_* variables of the SDK and
exporter apply (headers, TLS, sampling). When off, the OpenTelemetry API's no-op tracer is used: spans
are not recorded and cost next to nothing.

Context crosses processes in W3C ``traceparent`` headers: HTTP request headers, and gRPC metadata
between the gateway and the inference services (:func:`inject_metadata`, :func:`extract_metadata`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context

log = logging.getLogger(__name__)

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
#: the variables tracing reads (deployment files may set them; tests/test_deploy_consistency.py)
ENV_VARS: tuple[str, ...] = (*ENDPOINT_VARS, "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_HEADERS",
                             "OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_CERTIFICATE",
                             "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_RESOURCE_ATTRIBUTES",
                             "OTEL_PROPAGATORS")

_provider: Any = None


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return any(env.get(name, "").strip() for name in ENDPOINT_VARS)


def setup(service_name: str, environ: Mapping[str, str] | None = None, exporter: Any = None) -> bool:
    """Install the tracer provider when tracing is configured. Returns whether spans are now recorded.

    With an ``exporter`` (tests: an in-memory one) polyvec's own spans go to it synchronously and the
    process-wide provider is left alone, so :func:`shutdown` turns tracing off again."""
    global _provider
    if exporter is None and not enabled(environ):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    env = os.environ if environ is None else environ
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        endpoint = next(env[name] for name in reversed(ENDPOINT_VARS) if env.get(name, "").strip())
        log.info("tracing on: spans go to %s as %s", endpoint, resource.attributes["service.name"])
        trace.set_tracer_provider(provider)
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _provider = provider
    return True


def shutdown() -> None:
    """Flush and stop the exporter (at exit)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def tracer() -> trace.Tracer:
    if _provider is not None:
        return _provider.get_tracer("polyvec")
    return trace.get_tracer("polyvec")


def inject_metadata() -> list[tuple[str, str]]:
    """The current trace context as gRPC metadata (empty when no span is recording)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


def extract_metadata(metadata: Iterable[tuple[str, Any]] | None) -> Context:
    """The trace context a caller sent in gRPC metadata (or HTTP headers given as pairs)."""
    carrier = {str(k).lower(): v if isinstance(v, str) else v.decode("latin-1")
               for k, v in (metadata or ()) if not str(k).endswith("-bin")}
    return propagate.extract(carrier)
