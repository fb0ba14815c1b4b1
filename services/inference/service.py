"""The inference service proper, shared by the gRPC and HTTP fronts.

It validates a request, decodes its images in a thread pool, runs everything
through the :class:`~services.inference.batcher.DynamicBatcher` and returns
float32 arrays. Errors are typed so each front maps them to its own codes:

* :class:`InvalidInput` (``field``, ``message``) -> gRPC INVALID_ARGUMENT / HTTP 422
* :class:`Overloaded` -> gRPC RESOURCE_EXHAUSTED / HTTP 429
* :class:`NotReady` -> gRPC UNAVAILABLE / HTTP 503
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from services import tracing
from services.inference.batcher import BatcherClosed, BatchFailed, DynamicBatcher, QueueFull
from services.inference.config import CPU_MAX_BATCH_TOKENS, InferenceSettings
from services.inference.cpu_threads import torch_alone_in_this_thread
from services.inference.images import ImageError, decode_image
from services.inference.loaders.base import DENSE, IMAGE, SPARSE, TEXT, Encoder, SparseVector
from services.inference.metrics import Metrics
from services.input_rules import InputError, check_text

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of the errors the fronts translate into status codes; ``status`` labels it in metrics."""

    status = "internal"


class InvalidInput(ServiceError):
    """The request is malformed; ``field`` names the offending part (e.g. ``images[2]``)."""

    status = "invalid"

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class Overloaded(ServiceError):
    """The queue is full; retry later."""

    status = "overloaded"


class NotReady(ServiceError):
    """The model is not loaded yet, or the service is shutting down."""

    status = "unavailable"


class InternalError(ServiceError):
    """The model failed on a batch holding this request (not the caller's fault)."""

    status = "internal"


class InferenceService:
    """One model behind a dynamic batcher. ``encoder`` may be attached later (see :meth:`attach`)."""

    def __init__(
        self,
        encoder: Encoder | None,
        settings: InferenceSettings,
        *,
        batching: bool = True,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.batching = batching
        self.metrics = metrics or Metrics()
        self.encoder: Encoder | None = None
        self.batcher: DynamicBatcher | None = None
        self._decode_pool = ThreadPoolExecutor(
            max_workers=max(1, settings.prep_threads), thread_name_prefix="polyvec-decode"
        )
        self._closing = False
        self.owns_encoder = False
        if encoder is not None:
            self.attach(encoder)

    # ------------------------------------------------------------ lifecycle
    def attach(self, encoder: Encoder, *, owned: bool = False) -> None:
        """Start serving ``encoder`` (called once the model has loaded).

        ``owned``: :meth:`close` also releases the model (the ``polyvec inference`` process owns
        what it loaded; a caller that passes in its own encoder keeps it usable after close).
        """
        if self.encoder is not None:
            raise RuntimeError("an encoder is already attached")
        s = self.settings
        self.batcher = DynamicBatcher(
            encoder,
            max_batch_size=s.max_batch_size,
            max_batch_tokens=self._batch_tokens(encoder),
            batch_wait_ms=s.batch_wait_ms,
            max_queue=s.max_queue,
            prep_threads=s.prep_threads,
            batching=self.batching,
            metrics=self.metrics,
            early_cut=s.batch_early_cut,
            pass_tokens=s.batch_pass_tokens,
            prep_thread_setup=torch_alone_in_this_thread,
        )
        self.encoder = encoder
        self.owns_encoder = owned

    def _batch_tokens(self, encoder: Encoder) -> int:
        """MAX_BATCH_TOKENS, or its default for the device the model runs on (0: no limit)."""
        if self.settings.max_batch_tokens is not None:
            return self.settings.max_batch_tokens
        return CPU_MAX_BATCH_TOKENS if encoder.info.device == "cpu" else 0

    @property
    def ready(self) -> bool:
        return self.encoder is not None and not self._closing

    async def close(self, drain: bool = True) -> None:
        """Stop taking requests, finish (or fail) queued ones, release threads and the model."""
        self._closing = True
        if self.batcher is not None:
            await self.batcher.close(drain=drain)
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        if self.encoder is not None and self.owns_encoder:
            try:
                self.encoder.close()
            except Exception as exc:  # pragma: no cover - best effort
                log.warning("closing the model failed: %s", exc)

    # ------------------------------------------------------------- requests
    def _require_ready(self) -> tuple[Encoder, DynamicBatcher]:
        if self._closing:
            raise NotReady("the service is shutting down")
        if self.encoder is None or self.batcher is None:
            raise NotReady("the model is still loading")
        return self.encoder, self.batcher

    def validate(self, texts: list[str], images: list[Any], kind: str = DENSE) -> None:
        """Checks that need no decoding: the model's kind, empty, too many items, missing modality, size."""
        encoder, _ = self._require_ready()
        s = self.settings
        if encoder.info.kind != kind:
            info = encoder.info
            if kind == DENSE:
                raise InvalidInput("model", f"model {info.name!r} is a sparse model ({info.function_name}): "
                                            "call VectorizeSparse (HTTP: POST /vectorize_sparse)")
            raise InvalidInput("model", f"model {info.name!r} is a dense model ({info.function_name}): "
                                        "call Vectorize (HTTP: POST /vectorize); VectorizeSparse needs a "
                                        "sparse model")
        if not texts and not images:
            raise InvalidInput("texts", "the request has no texts and no images; send at least one item")
        total = len(texts) + len(images)
        if total > s.max_items_per_request:
            raise InvalidInput(
                "texts" if len(texts) >= len(images) else "images",
                f"{total} items in one request; the limit (MAX_ITEMS_PER_REQUEST) is "
                f"{s.max_items_per_request}",
            )
        if texts and TEXT not in encoder.modalities:
            raise InvalidInput("texts", f"model {encoder.info.name!r} does not embed text (it embeds: "
                                        f"{', '.join(encoder.modalities)})")
        if images and IMAGE not in encoder.modalities:
            raise InvalidInput("images", f"model {encoder.info.name!r} does not embed images (it embeds: "
                                         f"{', '.join(encoder.modalities)})")
        size = 0
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInput(f"texts[{i}]", f"must be a string, not {type(text).__name__}")
            try:
                check_text(text)  # the text rule both services share
            except InputError as exc:
                raise InvalidInput(f"texts[{i}]", str(exc)) from None
            size += len(text)
        for item in images:
            size += len(item) if hasattr(item, "__len__") else 0
        if size > s.max_request_bytes:
            raise InvalidInput(
                "request", f"{size} bytes of input; the limit (MAX_REQUEST_BYTES) is {s.max_request_bytes}"
            )

    async def vectorize(
        self, texts: list[str], images: list[bytes], normalize: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vectors (float32, shape (n, dimensions), input order) for ``texts`` and encoded ``images``."""
        texts = list(texts)
        images = list(images)
        self.validate(texts, images)
        encoder, batcher = self._require_ready()
        texts = [encoder.cut_text(text) for text in texts]  # a huge text must not stall the tokenizer
        do_norm = encoder.info.normalize if normalize is None else bool(normalize)
        try:
            batcher.check_room(len(texts) + len(images))  # refuse before spending CPU on decoding
            if images:
                with tracing.tracer().start_as_current_span("inference.decode_images",
                                                            attributes={"polyvec.images": len(images)}):
                    decoded = await self._decode_all(images)
            else:
                decoded = []
            return await batcher.encode(texts, decoded, do_norm)
        except QueueFull as exc:
            raise Overloaded(str(exc)) from None
        except BatcherClosed as exc:
            raise NotReady(str(exc)) from None
        except BatchFailed as exc:
            raise InternalError(str(exc)) from None

    async def vectorize_sparse(self, texts: list[str]) -> list[SparseVector]:
        """One sparse vector (token ids ascending, weights) per text, in input order (sparse models only)."""
        texts = list(texts)
        if not texts:
            raise InvalidInput("texts", "the request has no texts; send at least one")
        self.validate(texts, [], kind=SPARSE)
        encoder, batcher = self._require_ready()
        texts = [encoder.cut_text(text) for text in texts]  # a huge text must not stall the tokenizer
        try:
            batcher.check_room(len(texts))
            vectors, _ = await batcher.encode(texts, [], False)
        except QueueFull as exc:
            raise Overloaded(str(exc)) from None
        except BatcherClosed as exc:
            raise NotReady(str(exc)) from None
        except BatchFailed as exc:
            raise InternalError(str(exc)) from None
        return list(vectors)

    def token_strings(self, vector: SparseVector) -> list[str]:
        """The vocabulary entries of a sparse vector's token ids."""
        encoder, _ = self._require_ready()
        return encoder.token_strings(vector.indices)

    async def _decode_all(self, images: list[bytes]) -> list:
        if not images:
            return []
        loop = asyncio.get_running_loop()
        limit = self.settings.max_image_pixels
        jobs = [loop.run_in_executor(self._decode_pool, decode_image, data, i, limit)
                for i, data in enumerate(images)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for result in results:  # report the first bad item by index
            if isinstance(result, ImageError):
                raise InvalidInput(f"images[{result.index}]", result.reason)
            if isinstance(result, BaseException):
                raise result
        return list(results)

    # ----------------------------------------------------------------- meta
    def limits(self) -> dict[str, int | float | bool]:
        """The limits in force: the batcher's own once the model is attached (MAX_BATCH_TOKENS's
        device default resolved), the settings before."""
        s = self.settings
        b = self.batcher
        return {
            "max_batch_size": b.max_batch_size if b else s.max_batch_size,
            "max_batch_tokens": b.max_batch_tokens if b else s.max_batch_tokens or 0,
            "batch_wait_ms": b.batch_wait * 1000.0 if b else s.batch_wait_ms,
            "batch_early_cut": b.early_cut if b else s.batch_early_cut,
            "max_queue": s.max_queue,
            "max_image_pixels": s.max_image_pixels,
            "max_request_bytes": s.max_request_bytes,
            "max_items_per_request": s.max_items_per_request,
        }

    def meta(self) -> dict[str, Any]:
        """What this process serves: raises :class:`NotReady` before the model has loaded."""
        encoder = self.encoder
        if encoder is None:
            raise NotReady("the model is still loading")
        info = encoder.info
        return {
            "name": info.name,
            "type": info.type,
            "dimensions": int(info.dimensions),
            "modalities": list(info.modalities),
            "device": info.device,
            "precision": info.precision,
            "normalize": bool(info.normalize),
            "max_text_tokens": int(info.max_text_tokens),
            "max_text_chars": int(encoder.max_text_chars),
            "kind": info.kind,
            "function_name": info.function_name,
            "vocab_size": int(info.vocab_size),
            "sparse_prune_ratio": float(info.prune_ratio),
            "sparse_max_terms": int(info.max_terms),
            "runtime": info.runtime,
            "batching": self.batching,
            "limits": self.limits(),
        }
