"""gRPC front: ``polyvec.inference.v1.Inference`` + health + reflection (grpc.aio).

The servicer only maps protobuf <-> :class:`InferenceService`; vectors travel
as little-endian float32 bytes. Service errors become status codes with the
service's message (which names the bad field/index):

InvalidInput -> INVALID_ARGUMENT, Overloaded -> RESOURCE_EXHAUSTED,
NotReady -> UNAVAILABLE, InternalError -> INTERNAL. Bytes that do not decode as the
method's request message get INVALID_ARGUMENT before the servicer runs
(:class:`services.grpc_decoding.RejectUndecodable`).
"""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.trace import SpanKind

from protos import inference_pb2, inference_pb2_grpc
from services import tracing
from services.grpc_decoding import RejectUndecodable
from services.inference.service import (
    InferenceService,
    InternalError,
    InvalidInput,
    NotReady,
    Overloaded,
    ServiceError,
)
from services.inference.wire import pack_vectors

log = logging.getLogger(__name__)

SERVICE_NAME: str = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name
HEALTH_SERVICE_NAME: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_FRAMING_HEADROOM = 64 * 1024  # protobuf field headers around MAX_REQUEST_BYTES of payload


_CODES: tuple[tuple[type[ServiceError], grpc.StatusCode], ...] = (
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotReady, grpc.StatusCode.UNAVAILABLE),
    (InternalError, grpc.StatusCode.INTERNAL),
)


MAX_CONNECTION_AGE_MS = 5 * 60 * 1000
MAX_CONNECTION_AGE_GRACE_MS = 60 * 1000  # calls in flight on an aged connection may finish

class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, service: InferenceService) -> None:
        self.service = service

    async def Vectorize(self, request, context):  # noqa: N802 - gRPC method name
        with tracing.tracer().start_as_current_span(
                "polyvec.inference.v1.Inference/Vectorize", kind=SpanKind.SERVER,
                context=tracing.extract_metadata(context.invocation_metadata()),
                attributes={"rpc.system": "grpc", "polyvec.texts": len(request.texts),
                            "polyvec.images": len(request.images)}), \
                self.service.metrics.track("grpc.Vectorize") as state:
            try:
                normalize = request.normalize if request.HasField("normalize") else None
                texts, images = await self.service.vectorize(
                    list(request.texts), list(request.images), normalize
                )
            except Exception as exc:
                await self._abort(context, exc, state)
            dims = self.service.encoder.dimensions if self.service.encoder is not None else 0
            return inference_pb2.VectorizeResponse(
                text_vectors=pack_vectors(texts),
                image_vectors=pack_vectors(images),
                model=self.service.encoder.info.name,
                dimensions=dims,
            )

    async def VectorizeSparse(self, request, context):  # noqa: N802 - gRPC method name
        with tracing.tracer().start_as_current_span(
                "polyvec.inference.v1.Inference/VectorizeSparse", kind=SpanKind.SERVER,
                context=tracing.extract_metadata(context.invocation_metadata()),
                attributes={"rpc.system": "grpc", "polyvec.texts": len(request.texts)}), \
                self.service.metrics.track("grpc.VectorizeSparse") as state:
            try:
                vectors = await self.service.vectorize_sparse(list(request.texts))
                encoder = self.service.encoder
                out = [
                    inference_pb2.SparseVector(
                        indices=v.indices.tolist(), values=v.values.tolist(),
                        tokens=self.service.token_strings(v) if request.return_tokens else None)
                    for v in vectors
                ]
            except Exception as exc:
                await self._abort(context, exc, state)
            return inference_pb2.VectorizeSparseResponse(
                vectors=out, model=encoder.info.name, vocab_size=encoder.info.vocab_size)

    async def Meta(self, request, context):  # noqa: N802 - gRPC method name
        with self.service.metrics.track("grpc.Meta") as state:
            try:
                meta = self.service.meta()
            except Exception as exc:
                await self._abort(context, exc, state)
            limits = meta["limits"]
            return inference_pb2.MetaResponse(
                name=meta["name"],
                type=meta["type"],
                dimensions=meta["dimensions"],
                modalities=meta["modalities"],
                device=meta["device"],
                precision=meta["precision"],
                normalize=meta["normalize"],
                max_text_tokens=meta["max_text_tokens"],
                max_text_chars=meta["max_text_chars"],
                kind=meta["kind"],
                function_name=meta["function_name"],
                vocab_size=meta["vocab_size"],
                sparse_prune_ratio=meta["sparse_prune_ratio"],
                sparse_max_terms=meta["sparse_max_terms"],
                runtime=meta["runtime"],
                limits=inference_pb2.Limits(
                    max_batch_size=limits["max_batch_size"],
                    batch_wait_ms=int(round(limits["batch_wait_ms"])),
                    max_queue=limits["max_queue"],
                    max_image_pixels=limits["max_image_pixels"],
                    max_request_bytes=limits["max_request_bytes"],
                    max_items_per_request=limits["max_items_per_request"],
                    max_batch_tokens=limits["max_batch_tokens"],
                    batch_early_cut=limits["batch_early_cut"],
                    batch_wait_us=int(round(limits["batch_wait_ms"] * 1000)),
                ),
            )

    @staticmethod
    async def _abort(context, exc: Exception, state: dict) -> None:
        for kind, code in _CODES:
            if isinstance(exc, kind):
                state["status"] = exc.status
                await context.abort(code, str(exc))
        log.exception("unexpected error in a gRPC call")
        state["status"] = "internal"
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


class GrpcFront:
    """The grpc.aio server of one inference service: Inference, Health, reflection."""

    def __init__(self, service: InferenceService, *, host: str, port: int, max_receive_bytes: int) -> None:
        self.service = service
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.health = HealthServicer()
        self.server = grpc.aio.server(
            interceptors=[RejectUndecodable()],  # bytes that are no valid request: INVALID_ARGUMENT
            options=[
                ("grpc.max_receive_message_length", max_receive_bytes + _FRAMING_HEADROOM),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
                # clients reconnect (and so re-resolve DNS) every few minutes: replicas added behind a
                # headless Service start getting calls without restarting the gateways
                ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
                ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
            ]
        )
        inference_pb2_grpc.add_InferenceServicer_to_server(InferenceServicer(service), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )

    async def start(self) -> int:
        """Bind and start; health says NOT_SERVING until :meth:`set_serving`. Returns the bound port."""
        address = f"{_grpc_host(self.host)}:{self.requested_port}"
        try:
            port = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
        if not port:
            raise OSError(f"cannot listen for gRPC on {address} (address in use?)")
        await self.set_serving(False)
        await self.server.start()
        self.port = port
        return port

    async def set_serving(self, serving: bool) -> None:
        states = health_pb2.HealthCheckResponse
        status = states.SERVING if serving else states.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self, grace: float | None = 5.0) -> None:
        """NOT_SERVING, stop accepting calls, let in-flight calls finish for ``grace`` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def _grpc_host(host: str) -> str:
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host
