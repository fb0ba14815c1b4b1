"""GatewayService: the gateway's logic, shared by the HTTP and gRPC fronts.

Takes and returns plain dicts (JSON shapes of the HTTP API); raises the typed errors of gateway.errors.
Storage calls run in worker threads (``asyncio.to_thread``); inference calls go through grpc.aio.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

from opentelemetry.trace import SpanKind

from gateway.config import GatewaySettings
from gateway.definitions import (
    BM25_VECTOR,
    CollectionDefinition,
    FieldDeclarationError,
    SparseVectorizerConfig,
    VectorizerConfig,
    parse_definition,
    parse_field_declarations,
)
from gateway.errors import BadRequest, Conflict, Forbidden, GatewayError, NotFound, Overloaded, Unavailable
from gateway.gc_pause import gc_paused
from gateway.image_urls import ImageFetcher, ImageFetchError, is_image_url
from gateway.inference_client import (
    InferenceBusy,
    InferenceClient,
    InferenceMeta,
    InferencePool,
    InferenceRejected,
    InferenceTooLarge,
    InferenceUnavailable,
    NotPolyvec,
)
from gateway.inference_urls import inference_url_allowed
from gateway.metrics import GatewayMetrics
from gateway.service import objects as obj
from gateway.service import queries
from gateway.service.collections import SparseInfo, StoredCollection, VectorInfo
from gateway.service.filters import parse_filter
from gateway.service.indexes import IndexBuilder, index_states, missing
from gateway.service.paging import decode_cursor, encode_cursor
from gateway.service.reindex import reindex_bm25
from gateway.service.requests import (
    DEFAULT_MMR_CANDIDATES,
    DENSE_KINDS,
    BatchSearchRequest,
    CollectionPatch,
    CountRequest,
    DeleteRequest,
    FacetsRequest,
    ImportRequest,
    ObjectPut,
    ReindexBm25Request,
    ScrollRequest,
    SearchRequest,
    parse,
)
from gateway.service.vectors import check_vector, get_path, object_uuid
from gateway.storage.base import (
    CollectionNotFound,
    FusedPart,
    Hit,
    Mmr,
    OrderBy,
    PointRecord,
    SparseVec,
    Store,
    StoreError,
    StoreUnavailable,
)
from gateway.tasks import gather_or_cancel
from services import tracing

log = logging.getLogger(__name__)
T = TypeVar("T")


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
DEFINITION_CACHE_MAX = 4096  # definitions kept at most (the cache is cleared when full)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise BadRequest("name", "collection name must be a non-empty string")


def _detail(vec: VectorizerConfig, exc: InferenceUnavailable) -> str:
    """Why a service did not answer; for an ``inference_url`` a caller chose, only that it did not (the
    peer's own words are never passed on: the gateway must not relay what some address answers)."""
    return "no answer" if vec.inference_url else exc.detail


def _speaks_http2(exc: InferenceUnavailable) -> bool:
    """False when gRPC found something else than HTTP/2 at the address (an HTTP/1 server, a database...)."""
    return "Failed parsing HTTP/2" not in exc.detail and "http1" not in exc.detail.lower()


def meta_problem(meta: InferenceMeta) -> str | None:
    """What makes a Meta answer one no polyvec inference service gives, or None."""
    if not meta.name:
        return "its Meta names no model"
    if meta.dimensions < 1:
        return "its Meta gives no dimensions"
    if not meta.modalities or not set(meta.modalities) <= {"text", "image"}:
        return "its Meta gives no known modalities"
    return None


class GatewayService:
    """Collections, objects and search over one Store and the inference services of MODELS."""

    def __init__(self, store: Store, settings: GatewaySettings | None = None,
                 pool: InferencePool | None = None) -> None:
        self.store = store
        self.settings = settings or GatewaySettings.from_env({})
        s = self.settings
        self.images = ImageFetcher(self.settings.image_url_policy())
        # collection name -> (expires at, definition); see _load
        self._definitions: dict[str, tuple[float, StoredCollection]] = {}
        # collection name -> the read of its definition in progress, shared by concurrent callers
        self._loading: dict[str, asyncio.Task[StoredCollection]] = {}
        self.clock: Callable[[], float] = time.monotonic  # of the definition cache (tests set their own)
        self.metrics = GatewayMetrics()
        labels: dict[str, str] = {}
        for model, address in s.models.items():
            labels.setdefault(address, model)
        self.pool = pool or InferencePool(timeout_s=s.inference_timeout_s,
                                          concurrency=s.inference_concurrency,
                                          batch_size=s.inference_batch_size,
                                          retry_budget_s=s.inference_retry_budget_s,
                                          max_waiting=s.inference_max_waiting,
                                          query_max_wait_s=s.inference_query_max_wait_s,
                                          metrics=self.metrics, labels=labels)
        self._store_label = "edge" if type(store).__name__ == "EdgeStore" else "qdrant"
        self.indexes = IndexBuilder(store, self._db, self._forget_definition)

    def _forget_definition(self, name: str) -> None:
        self._definitions.pop(name, None)
        self._loading.pop(name, None)  # a read in progress may predate the change: not shared any more

    async def close(self) -> None:
        await self.indexes.close()
        await self.pool.close()
        await self.images.aclose()

    # -- plumbing -------------------------------------------------------------------------------------------
    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking store call in a thread, mapping storage errors to gateway errors (and timing it
        in the metrics by operation)."""
        started = time.perf_counter()
        outcome = "error"
        operation = getattr(fn, "__name__", "call")
        try:
            with tracing.tracer().start_as_current_span(
                    f"qdrant.{operation}", kind=SpanKind.CLIENT,
                    attributes={"db.system": "qdrant", "db.operation.name": operation,
                                "polyvec.store": self._store_label}):
                result = await asyncio.to_thread(fn, *args, **kwargs)
            outcome = "ok"
            return result
        except CollectionNotFound as exc:
            self._forget_definition(exc.name)
            raise NotFound(f"collection {exc.name!r} not found") from None
        except StoreUnavailable as exc:
            raise Unavailable("qdrant", str(exc)) from None
        except StoreError as exc:
            text = str(exc)
            if "already exists" in text:
                raise Conflict(text, field="name") from None
            head, sep, rest = text.partition(": ")
            if sep and head.replace("_", "").replace(".", "").isalnum():
                raise BadRequest(head, rest) from None
            raise BadRequest(None, text) from None
        except GatewayError:
            raise
        except Exception as exc:  # backend down, network error, ...
            log.exception("storage call %s failed", getattr(fn, "__name__", fn))
            raise Unavailable("storage", f"the storage backend failed: {type(exc).__name__}: {exc}") from None
        finally:
            self.metrics.store_latency.labels(self._store_label, operation, outcome).observe(
                time.perf_counter() - started)

    def _resolve(self, vector: str, vec: VectorizerConfig, *, creating: bool = False) -> tuple[str, str]:
        """(gRPC address, label naming the service) of a vectorizer.

        An ``inference_url`` must match INFERENCE_URL_HOSTS (checked again on every use: the setting may
        have changed since the collection was created).
        """
        return self._address(vec.model, vec.inference_url, f"vectorizers.{vector}", f"vector {vector!r}",
                             creating=creating)

    def _resolve_sparse(self, vector: str, cfg: SparseVectorizerConfig, *, query: bool = False,
                        creating: bool = False) -> tuple[str, str]:
        """(gRPC address, label) of a sparse vectorizer's document model, or with ``query`` the model that
        encodes its queries (the query model in doc-only mode, else the same)."""
        where, what = f"sparse_vectorizers.{vector}", f"sparse vector {vector!r}"
        if query and cfg.has_query_model:
            return self._address(cfg.query_model, cfg.query_inference_url, where, what, creating=creating,
                                 model_key="query_model", url_key="query_inference_url")
        return self._address(cfg.model, cfg.inference_url, where, what, creating=creating)

    def _address(self, model: str | None, url: str | None, where: str, what: str, *, creating: bool = False,
                 model_key: str = "model", url_key: str = "inference_url") -> tuple[str, str]:
        """(gRPC address, label) of a model named in MODELS, or of a given address INFERENCE_URL_HOSTS allows;
        errors name ``where``.``model_key`` / ``url_key``."""
        if url:
            if not inference_url_allowed(url, self.settings.inference_url_hosts):
                rule = ("INFERENCE_URL_HOSTS does not list it" if self.settings.inference_url_hosts else
                        "this gateway only uses the models of MODELS (INFERENCE_URL_HOSTS is empty)")
                if creating:
                    raise BadRequest(f"{where}.{url_key}",
                                     f"{url!r} is not allowed: {rule}; name a model instead")
                raise Forbidden(f"{what} names {url_key} {url!r}, which is no longer allowed: {rule}")
            return url, f"inference service {url}"
        address = self.settings.models.get(model or "")
        if address is None:
            known = ", ".join(sorted(self.settings.models)) or "none (set MODELS=name=host:port,...)"
            if creating:
                raise BadRequest(f"{where}.{model_key}", f"unknown model {model!r}; known models: {known}")
            raise Unavailable(f"model {model!r}",
                              f"model {model!r} is not configured here (MODELS knows: {known})")
        return address, f"inference service for model {model!r} at {address}"

    def _sparse_client(self, stored: StoredCollection, vector: str, *,
                       query: bool = False) -> InferenceClient:
        """The client of a sparse vectorizer's document model (``query``: the model encoding its queries)."""
        address, _ = self._resolve_sparse(vector, stored.definition.sparse_vectorizers[vector], query=query)
        return self.pool.get(address)

    def _client(self, stored: StoredCollection, vector: str) -> InferenceClient:
        address, _ = self._resolve(vector, stored.definition.vectorizers[vector])
        return self.pool.get(address)

    def _unavailable(self, stored: StoredCollection, vector: str,
                     exc: InferenceUnavailable) -> Unavailable | Overloaded:
        """The gateway error for a service that did not answer (503) or had too much work (429)."""
        vec = stored.definition.vectorizers[vector]
        _, label = self._resolve(vector, vec)
        return _service_error(label, exc, vec)

    async def _load(self, name: str) -> StoredCollection:
        """The collection's definition, reused for DEFINITION_CACHE_S after it was read from the store.

        Creating or deleting a collection through this gateway updates the cache at once; a change made
        through another gateway is seen within DEFINITION_CACHE_S (a store call that finds the
        collection gone drops the entry sooner).
        """
        _check_name(name)
        cached = self._definitions.get(name)
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        # Concurrent callers share one read: when the entry expires under load, one store call instead
        # of one per request queued behind the searches in the worker threads (that herd made even the
        # requests the gateway sheds slow).
        loading = self._loading.get(name)
        if loading is None:
            loading = self._loading[name] = asyncio.ensure_future(self._read_definition(name))
            loading.add_done_callback(functools.partial(self._definition_read, name))
        return await asyncio.shield(loading)

    async def _read_definition(self, name: str) -> StoredCollection:
        record = await self._db(self.store.load_definition, name)
        current = self._loading.get(name) is asyncio.current_task()  # not forgotten meanwhile
        if record is None:
            if current:
                self._definitions.pop(name, None)
            raise NotFound(f"collection {name!r} not found")
        stored = StoredCollection.from_record(record)
        ttl = self.settings.definition_cache_s
        if ttl > 0 and current:
            if len(self._definitions) >= DEFINITION_CACHE_MAX:
                self._definitions.clear()
            self._definitions[name] = (self.clock() + ttl, stored)
        return stored

    def _definition_read(self, name: str, task: asyncio.Task[StoredCollection]) -> None:
        if self._loading.get(name) is task:
            del self._loading[name]
        if not task.cancelled():
            task.exception()  # each caller gets it; none may be left unretrieved

    # -- collections ----------------------------------------------------------------------------------------
    async def create_collection(self, body: CollectionDefinition | dict) -> dict[str, Any]:
        definition = parse_definition(body)
        name = definition.name
        if await self._db(self.store.load_definition, name) is not None or \
                await self._db(self.store.collection_exists, name):
            raise Conflict(f"name: collection {name!r} already exists", field="name")
        vectors: dict[str, VectorInfo] = {}
        for vname, vec in definition.vectorizers.items():
            vectors[vname] = await self._probe(vname, vec)
        sparse: dict[str, SparseInfo] = {}
        for vname, cfg in definition.sparse_vectorizers.items():
            sparse[vname] = await self._probe_sparse(vname, cfg)
        stored = StoredCollection(definition=definition, vectors=vectors, sparse=sparse)
        await self._db(self.store.create_collection, stored.schema())
        try:
            for key, ftype in stored.field_types.items():  # the collection is empty: instant
                await self._db(self.store.create_payload_index, name, key, ftype.index())
            await self._db(self.store.save_definition, name, stored.to_record())
        except GatewayError:
            await self._db(self.store.delete_collection, name)
            raise
        self._forget_definition(name)
        log.info("created collection %s", name)
        return await self._with_indexes(stored, stored.public())

    async def _with_indexes(self, stored: StoredCollection, out: dict[str, Any]) -> dict[str, Any]:
        """``out`` plus the state of each declared field's index (when the collection declares fields)."""
        if stored.field_types:
            existing = await self._db(self.store.payload_indexes, stored.definition.name)
            out["indexes"] = index_states(stored, existing)
        return out

    async def _probe_meta(self, address: str, label: str, url_field: str | None) -> InferenceMeta:
        """A model service's Meta, refusing an address that is no polyvec inference service: with
        ``url_field`` (an address the caller gave) as a BadRequest naming it, else as Unavailable."""
        client = self.pool.get(address)
        try:
            meta = await client.meta(refresh=True, budget_s=self.settings.inference_query_retry_budget_s)
            problem = meta_problem(meta)
        except InferenceBusy as exc:
            detail = "its queue is full" if url_field else exc.detail  # never relay what a given address says
            raise Overloaded(label, f"{label} is overloaded ({detail}); retry in {exc.retry_after_s} s",
                             exc.retry_after_s) from None
        except InferenceUnavailable as exc:
            if _speaks_http2(exc):
                detail = "no answer" if url_field else exc.detail  # never relay what a given address says
                raise Unavailable(label, f"{label} is unavailable ({detail})") from None
            problem = "it does not speak gRPC"
        except NotPolyvec as exc:
            problem = exc.what
        except InferenceRejected:  # Meta takes no input: an error about it is not a polyvec answer
            problem = "it answered Meta with an error"
        if problem:
            message = f"{address} is not a polyvec inference service ({problem})"
            if url_field:
                raise BadRequest(url_field, message)
            raise Unavailable(label, f"{label}: {message}")
        return meta

    async def _probe(self, vname: str, vec: VectorizerConfig) -> VectorInfo:
        """Ask a vectorizer's inference service for its Meta and check it fits the definition."""
        if not vec.uses_service:
            return VectorInfo(dimensions=int(vec.dimensions or 0), modalities=[])
        address, label = self._resolve(vname, vec, creating=True)
        where = f"vectorizers.{vname}"
        meta = await self._probe_meta(address, label, f"{where}.inference_url" if vec.inference_url else None)
        if meta.kind == "sparse":
            raise BadRequest(f"{where}.{'model' if vec.model else 'inference_url'}",
                             f"{label} serves {meta.name!r}, a sparse model ({meta.function_name}): "
                             "declare it under sparse_vectorizers")
        if vec.dimensions is not None and vec.dimensions != meta.dimensions:
            raise BadRequest(f"{where}.dimensions", f"is {vec.dimensions} but {label} serves "
                                                    f"{meta.name!r} with {meta.dimensions} dimensions")
        if vec.text_fields and "text" not in meta.modalities:
            raise BadRequest(f"{where}.text_fields", f"{label} ({meta.name!r}) does not embed text")
        if vec.image_fields and "image" not in meta.modalities:
            raise BadRequest(f"{where}.image_fields", f"{label} ({meta.name!r}) does not embed images")
        return VectorInfo(dimensions=meta.dimensions, modalities=list(meta.modalities), model_name=meta.name)

    async def _probe_sparse(self, vname: str, cfg: SparseVectorizerConfig) -> SparseInfo:
        """Meta of a sparse vectorizer's models: both sparse, over one vocabulary."""
        where = f"sparse_vectorizers.{vname}"
        address, label = self._resolve_sparse(vname, cfg, creating=True)
        field = f"{where}.{'model' if cfg.model else 'inference_url'}"
        doc = await self._probe_meta(address, label, None if cfg.model else field)
        if doc.kind != "sparse":
            raise BadRequest(field, f"{label} serves {doc.name!r}, a dense model ({doc.function_name}): "
                                    "a sparse vectorizer needs a sparse model (SPARSE_ENCODING or "
                                    "SPARSE_TOKENIZE)")
        if "text" not in doc.modalities:
            raise BadRequest(field, f"{label} ({doc.name!r}) does not encode text")
        info = SparseInfo(vocab_size=doc.vocab_size, model_name=doc.name, function_name=doc.function_name)
        if cfg.has_query_model:
            q_address, q_label = self._resolve_sparse(vname, cfg, query=True, creating=True)
            q_field = f"{where}.{'query_model' if cfg.query_model else 'query_inference_url'}"
            query = await self._probe_meta(q_address, q_label, None if cfg.query_model else q_field)
            if query.kind != "sparse":
                raise BadRequest(q_field, f"{q_label} serves {query.name!r}, a dense model: the query model "
                                          "of a sparse vectorizer must be sparse (e.g. SPARSE_TOKENIZE)")
            if query.vocab_size != doc.vocab_size:
                raise BadRequest(q_field, f"{q_label} ({query.name!r}) has a vocabulary of "
                                          f"{query.vocab_size} tokens but the document model {doc.name!r} "
                                          f"has {doc.vocab_size}: their token ids would not match")
            info.query_model_name, info.query_function_name = query.name, query.function_name
        return info

    async def get_collection(self, name: str) -> dict[str, Any]:
        stored = await self._load(name)
        out = stored.public()
        out["count"] = await self._db(self.store.count, name)
        return await self._with_indexes(stored, out)

    async def update_collection(self, name: str, body: CollectionPatch | dict) -> dict[str, Any]:
        """Declare more fields (``{"fields": {...}}``); their payload indexes are built in the background.

        A field already declared the same way is left as it is, but its index is built again if it is
        missing (after a failed build, or a gateway that stopped during one); changing a declared type is
        an error.
        """
        request = parse(CollectionPatch, body)
        try:
            given = parse_field_declarations(request.fields)
        except FieldDeclarationError as exc:
            raise BadRequest(exc.where, str(exc)) from None
        stored = await self._fresh(name)
        current = stored.definition.model_dump(mode="json", exclude_none=True)
        declared = current.get("fields", {})
        for key, decl in given.items():
            old = declared.get(key)
            if old is not None and isinstance(decl, dict) and old != decl:
                was = old["type"] + (f" ({old['language']})" if old.get("language") else "")
                raise BadRequest(f"fields.{key}", f"already declared as {was}; a declared type cannot change")
        current["fields"] = {**declared, **given}
        definition = parse_definition(current)
        updated = StoredCollection(definition=definition, vectors=stored.vectors, sparse=stored.sparse,
                                   created_at=stored.created_at,
                                   index_errors={k: v for k, v in stored.index_errors.items()
                                                 if k not in given})
        existing = await self._db(self.store.payload_indexes, name)
        todo = {k: t for k, t in missing(updated, existing).items() if k in given}
        await self._db(self.store.save_definition, name, updated.to_record())
        self._forget_definition(name)
        self.indexes.start(name, todo)
        log.info("collection %s declares %s; building indexes of %s", name, sorted(given), sorted(todo))
        out = updated.public()
        out["count"] = await self._db(self.store.count, name)
        out["indexes"] = index_states(updated, existing)
        return out

    async def _fresh(self, name: str) -> StoredCollection:
        """The definition as stored now (not a cached copy): for changes to it."""
        self._forget_definition(name)
        return await self._load(name)

    async def list_collections(self) -> list[dict[str, Any]]:
        records = await self._db(self.store.list_definitions)
        return [StoredCollection.from_record(r).public() for r in records]

    async def delete_collection(self, name: str) -> dict[str, Any]:
        _check_name(name)
        self._forget_definition(name)
        had_definition = await self._db(self.store.load_definition, name) is not None
        existed = await self._db(self.store.delete_collection, name)
        await self._db(self.store.delete_definition, name)
        if not (had_definition or existed):
            raise NotFound(f"collection {name!r} not found")
        return {"name": name, "deleted": True}

    # -- objects --------------------------------------------------------------------------------------------
    async def import_objects(self, name: str, body: ImportRequest | dict) -> dict[str, Any]:
        request = parse(ImportRequest, body)
        limit = self.settings.import_batch_size
        if len(request.objects) > limit:
            raise BadRequest("objects", f"at most {limit} objects per request (IMPORT_BATCH_SIZE), "
                                        f"got {len(request.objects)}")
        stored = await self._load(name)
        pendings = [obj.start(i, raw, stored, f"objects.{i}.") for i, raw in enumerate(request.objects)]
        jobs: list[obj.Job] = []
        sparse_jobs: list[obj.SparseJob] = []
        for p in pendings:
            if p.error is None:
                jobs += obj.plan_jobs(p, stored, f"objects.{p.index}.")
            if p.error is None:
                sparse_jobs += obj.plan_sparse_jobs(p, stored, f"objects.{p.index}.")
        await self._run_jobs(stored, jobs, lambda p: f"objects.{p.index}.", sparse_jobs)
        obj.mark_replaced(pendings)
        points = [pt for pt in (obj.finish(p, stored) for p in pendings) if pt is not None]
        if points:
            await self._db(self.store.upsert, name, points)
        results = [p.result() for p in pendings]
        ok = sum(r["status"] == "ok" for r in results)
        failed = sum(r["status"] == "error" for r in results)
        self.metrics.import_objects.labels("ok").inc(ok)
        self.metrics.import_objects.labels("failed").inc(failed)
        return {"results": results, "ok": ok, "errors": failed,
                "replaced": sum(r["status"] == "replaced" for r in results)}

    async def _run_jobs(self, stored: StoredCollection, jobs: list[obj.Job],
                        prefix_of: Callable[[obj.Pending], str],
                        sparse_jobs: list[obj.SparseJob] | None = None) -> None:
        await self._fetch_image_urls(jobs, prefix_of)
        jobs = [j for j in jobs if j.pending.error is None]  # a failed object needs no more inference
        sparse = [j for j in sparse_jobs or [] if j.pending.error is None]
        if not jobs and not sparse:
            return
        clients = {c.address: c for c in (self._client(stored, v) for v in {j.vector for j in jobs})}
        try:
            async with AsyncExitStack() as admitted:  # one place per service for the whole request
                for client in clients.values():
                    await admitted.enter_async_context(client.admitted())
                budget = self.settings.inference_retry_budget_s
                await gather_or_cancel(
                    obj.run_jobs(jobs, stored, lambda vector: self._client(stored, vector), prefix_of,
                                 budget_s=budget),
                    obj.run_sparse_jobs(sparse, stored, lambda vector: self._sparse_client(stored, vector),
                                        prefix_of, budget_s=budget))
        except InferenceUnavailable as exc:
            for vector, vec in stored.definition.vectorizers.items():
                if vec.uses_service and self._resolve(vector, vec)[0] == exc.address:
                    raise self._unavailable(stored, vector, exc) from None
            for vector, cfg in stored.definition.sparse_vectorizers.items():
                address, label = self._resolve_sparse(vector, cfg)
                if address == exc.address:
                    raise _service_error(label, exc) from None
            raise _service_error(f"inference service {exc.address}", exc) from None

    async def _fetch_image_urls(self, jobs: list[obj.Job], prefix_of: Callable[[obj.Pending], str]) -> None:
        """Replace image URLs by the fetched bytes; an object whose image cannot be fetched fails alone."""

        async def fetch(job: obj.Job) -> None:
            assert isinstance(job.data, obj.ImageUrl)
            try:
                job.data = await self.images.fetch(job.data.url)
            except ImageFetchError as exc:
                job.pending.fail(f"{prefix_of(job.pending)}properties.{job.field}", str(exc))

        await asyncio.gather(*(fetch(j) for j in jobs if isinstance(j.data, obj.ImageUrl)))

    async def get_object(self, name: str, object_id: str, *, with_vectors: bool = False) -> dict[str, Any]:
        await self._load(name)
        records = await self._db(self.store.retrieve, name, [object_uuid(object_id)],
                                 with_vectors=with_vectors)
        if not records:
            raise NotFound(f"object {object_id!r} not found in collection {name!r}")
        rec = records[0]
        out: dict[str, Any] = {"id": obj.external_id(rec.id, rec.payload), "uuid": rec.id,
                               "properties": obj.public_payload(rec.payload)}
        if with_vectors:
            out["vectors"] = {k: list(v) for k, v in rec.dense.items()}
            out["sparse_vectors"] = obj.sparse_out(rec)
        return out

    async def put_object(self, name: str, object_id: str, body: ObjectPut | dict) -> dict[str, Any]:
        """Replace an object's properties; only vectors whose source fields changed are recomputed."""
        request = parse(ObjectPut, body)
        stored = await self._load(name)
        point_id = object_uuid(object_id)
        old = await self._db(self.store.retrieve, name, [point_id], with_vectors=True)
        raw = {"id": object_id, "properties": request.properties, "vectors": request.vectors}
        pending = obj.start(0, raw, stored, "")  # fields named from the body's root, as pydantic does
        if pending.error:
            raise BadRequest(pending.error_field, pending.error)
        reuse: dict[str, list[float]] = {}
        if old:
            prev = old[0]
            for vname, vec in stored.definition.vectorizers.items():
                fields = vec.text_fields + vec.image_fields
                if vname in prev.dense and vec.uses_service and all(
                        get_path(prev.payload, f) == get_path(request.properties, f) for f in fields):
                    reuse[vname] = list(prev.dense[vname])
        keep: dict[str, SparseVec] = {}
        if old:
            for vname, cfg in stored.definition.sparse_vectorizers.items():
                before, now = old[0].payload, request.properties
                same = all(get_path(before, f) == get_path(now, f) for f in cfg.text_fields)
                if same and vname in old[0].sparse:
                    keep[vname] = old[0].sparse[vname]
        jobs = obj.plan_jobs(pending, stored, "", reuse=reuse)
        sparse_jobs = [] if pending.error else obj.plan_sparse_jobs(pending, stored, "", reuse=keep)
        await self._run_jobs(stored, jobs, lambda p: "", sparse_jobs)
        point = obj.finish(pending, stored)
        if point is None:
            raise BadRequest(pending.error_field, pending.error or "object could not be vectorized")
        await self._db(self.store.upsert, name, [point])
        return {"id": pending.external_id, "uuid": point_id, "status": "ok",
                "created": not old, "vectorized": sorted(pending.vectorized)}

    async def delete_object(self, name: str, object_id: str) -> dict[str, Any]:
        await self._load(name)
        point_id = object_uuid(object_id)
        if not await self._db(self.store.retrieve, name, [point_id]):
            raise NotFound(f"object {object_id!r} not found in collection {name!r}")
        await self._db(self.store.delete_points, name, [point_id])
        return {"id": object_id, "deleted": True}

    async def scroll_objects(self, name: str, body: ScrollRequest | dict) -> dict[str, Any]:
        """One page of objects in a stable order; ``next_cursor`` (None on the last page) gets the next.

        The cursor holds the point id the next page starts from (Qdrant's scroll offset), not a count:
        writes between pages never make a page skip or repeat an object that was there throughout.
        """
        req: ScrollRequest = parse(ScrollRequest, body)
        most = self.settings.max_page_size
        if req.limit > most:
            raise BadRequest("limit", f"at most {most} objects per page (MAX_PAGE_SIZE), got {req.limit}")
        start = decode_cursor(req.cursor, "cursor")
        flt = parse_filter(req.filter)
        await self._load(name)
        with_payload: bool | list[str] = True if req.properties is None else [*req.properties, obj.ID_KEY]
        records, next_id = await self._db(self.store.scroll, name, filter=flt, limit=req.limit,
                                          cursor=start, with_payload=with_payload,
                                          with_vectors=req.with_vectors)
        with gc_paused():
            objects = [_object_out(r, req.properties, req.with_vectors) for r in records]
        return {"objects": objects, "next_cursor": encode_cursor(next_id)}

    async def count_objects(self, name: str, body: CountRequest | dict | None = None) -> dict[str, Any]:
        req: CountRequest = parse(CountRequest, body if body is not None else {})
        flt = parse_filter(req.filter)
        await self._load(name)
        return {"count": await self._db(self.store.count, name, flt, req.exact)}

    async def delete_objects(self, name: str, body: DeleteRequest | dict) -> dict[str, Any]:
        """Delete by ids or by filter; ``deleted`` is exact (counted just before the delete).

        A delete that would remove every object (no filter, an empty filter, or a filter matching them
        all) needs ``"all": true``.
        """
        req: DeleteRequest = parse(DeleteRequest, body)
        if req.ids is not None:
            if req.filter is not None:
                raise BadRequest("ids", "give ids or filter, not both")
            most = self.settings.import_batch_size
            if len(req.ids) > most:
                raise BadRequest("ids", f"at most {most} ids per request (IMPORT_BATCH_SIZE), "
                                        f"got {len(req.ids)}")
            await self._load(name)
            point_ids = list(dict.fromkeys(object_uuid(i) for i in req.ids))
            found = await self._db(self.store.retrieve, name, point_ids)
            if found:
                await self._db(self.store.delete_points, name, [r.id for r in found])
            return {"deleted": len(found)}
        flt = parse_filter(req.filter)
        await self._load(name)
        if not req.all:
            if req.filter is None:
                raise BadRequest("filter", 'give a filter or ids (or "all": true to delete every object)')
            if flt is None:
                raise BadRequest("all", 'an empty filter matches every object: send "all": true to delete '
                                        "them all")
            total = await self._db(self.store.count, name)
            if total and await self._db(self.store.count, name, flt) == total:
                raise BadRequest("all", f"the filter matches every object in the collection ({total}): "
                                        'send "all": true to delete them all')
        return {"deleted": await self._db(self.store.delete_by_filter, name, flt)}

    def limits(self) -> dict[str, int]:
        """The limits a client has to respect (so it can size its requests)."""
        s = self.settings
        return {"import_batch_size": s.import_batch_size, "max_page_size": s.max_page_size,
                "search_batch_size": s.search_batch_size, "max_request_bytes": s.max_request_bytes}

    # -- search ---------------------------------------------------------------------------------------------
    def _vector_name(self, stored: StoredCollection, requested: str | None) -> str:
        vectorizers = stored.definition.vectorizers
        if requested is None:
            default = stored.definition.default_vector()
            if default is None:
                raise BadRequest("vector", "this collection has no dense vectors (only bm25)")
            return default
        if requested not in vectorizers:
            raise BadRequest("vector",
                             f"unknown vector {requested!r}; this collection has {sorted(vectorizers)}")
        return requested

    async def _embed_query(self, stored: StoredCollection, vector: str, field: str, *,
                           text: str | None = None, image: bytes | None = None) -> list[float]:
        vec = stored.definition.vectorizers[vector]
        modality = "text" if text is not None else "image"
        if not vec.uses_service:
            raise BadRequest(field, f"vector {vector!r} holds user-supplied vectors and has no model; "
                                    "use near_vector")
        modalities = stored.vectors[vector].modalities
        if modalities and modality not in modalities:
            raise BadRequest(field, f"the model of vector {vector!r} does not embed {modality}s")
        client = self._client(stored, vector)
        budget = self.settings.inference_query_retry_budget_s
        try:
            if text is not None:
                out, _ = await client.vectorize(texts=[text], budget_s=budget, urgent=True)
            else:
                _, out = await client.vectorize(images=[image or b""], budget_s=budget, urgent=True)
        except InferenceUnavailable as exc:
            raise self._unavailable(stored, vector, exc) from None
        except InferenceTooLarge as exc:
            raise BadRequest(field, exc.problem) from None
        except InferenceRejected as exc:
            raise BadRequest(field, exc.message) from None
        values = out[0].tolist()
        problem = check_vector(values, stored.vectors[vector].dimensions, "vector")
        if problem:
            label = f"inference service {client.address}"
            raise Unavailable(label, f"{label} returned a bad vector: {': '.join(problem)}")
        return values

    async def search(self, name: str, body: SearchRequest | dict) -> dict[str, Any]:
        started = time.perf_counter()
        req: SearchRequest = parse(SearchRequest, body)
        stored = await self._load(name)
        flt = parse_filter(req.filter, "filter", stored.field_types, max_depth=self.settings.filter_max_depth)
        with_payload: bool | list[str] = True if req.properties is None else [*req.properties, obj.ID_KEY]
        common = dict(filter=flt, limit=req.limit, offset=req.offset, with_payload=with_payload)
        kind = req.kind
        if req.order_by is not None and kind != "browse":
            raise BadRequest("order_by", f"orders searches without a query; {kind} hits come best first")
        mmr = self._mmr(req, kind)
        hits: list[Hit]
        if kind == "browse":
            hits = await self._browse(stored, req, common)
        elif kind == "bm25":
            if req.vector is not None:
                self._vector_name(stored, req.vector)  # a named vector that does not exist is an error
            assert req.bm25 is not None  # req.kind names the one query given
            sparse = self._bm25_query(stored, req.bm25.query, "bm25")
            hits = await self._db(self.store.search_sparse, name, BM25_VECTOR, sparse, **common)
        elif kind == "neural_sparse":
            ns = req.neural_sparse
            assert ns is not None
            if req.vector is not None:
                raise BadRequest("vector", "names a dense vector; neural_sparse.vector names the sparse one")
            sname = self._sparse_name(stored, ns.vector, "neural_sparse.vector")
            sparse = await self._sparse_query(stored, sname, ns.query, "neural_sparse.query")
            hits = await self._db(self.store.search_sparse, name, sname, sparse, **common)
        elif kind == "hybrid" and req.hybrid is not None and req.hybrid.weights is not None:
            parts = await self._fused_parts(stored, req)
            hits = await self._db(self.store.search_fused, name, parts, fusion=req.hybrid.fusion, **common)
        else:
            vector = self._vector_name(stored, req.vector)
            if kind == "near_vector":
                assert req.near_vector is not None
                values = list(req.near_vector.vector)
                problem = check_vector(values, stored.vectors[vector].dimensions, "near_vector.vector")
                if problem:
                    raise BadRequest(*problem)
                values = [float(v) for v in values]
            elif kind == "near_text":
                assert req.near_text is not None
                values = await self._embed_query(stored, vector, "near_text.query", text=req.near_text.query)
            elif kind == "near_image":
                assert req.near_image is not None
                try:
                    if is_image_url(req.near_image.image):
                        image = await self.images.fetch(req.near_image.image.strip())
                    else:
                        image = obj.decode_base64_image(req.near_image.image)
                except ValueError as exc:  # ImageFetchError is a ValueError too
                    raise BadRequest("near_image.image", str(exc)) from None
                values = await self._embed_query(stored, vector, "near_image.image", image=image)
            else:  # hybrid
                h = req.hybrid
                assert h is not None
                sparse = self._bm25_query(stored, h.query, "hybrid")
                values = await self._embed_query(stored, vector, "hybrid.query", text=h.query)
                alpha = 0.5 if h.alpha is None else h.alpha
                hits = await self._db(self.store.search_hybrid, name, vector, values, BM25_VECTOR, sparse,
                                      alpha=alpha, fusion=h.fusion, **common)
            if kind != "hybrid":
                hits = await self._db(self.store.search_dense, name, vector, values, mmr=mmr, **common)
        wanted = None if req.properties is None else set(req.properties)
        out_hits = []
        for hit in hits:
            props = obj.public_payload(hit.payload)
            if wanted is not None:
                props = {k: v for k, v in props.items() if k in wanted}
            out_hits.append({"id": obj.external_id(hit.id, hit.payload), "score": float(hit.score),
                             "properties": props})
        return {"hits": out_hits, "took_ms": round((time.perf_counter() - started) * 1000, 3)}

    def _sparse_name(self, stored: StoredCollection, requested: str | None, field: str) -> str:
        sparse = stored.definition.sparse_vectorizers
        if requested is None:
            default = stored.definition.default_sparse_vector()
            if default is None:
                raise BadRequest(field, f"collection {stored.definition.name!r} has no sparse_vectorizers")
            return default
        if requested not in sparse:
            raise BadRequest(field, f"unknown sparse vector {requested!r}; this collection has "
                                    f"{sorted(sparse)}")
        return requested

    async def _sparse_query(self, stored: StoredCollection, vector: str, text: str, field: str) -> SparseVec:
        """The query's sparse vector from the vectorizer's query model (doc-only mode) or its model."""
        client = self._sparse_client(stored, vector, query=True)
        try:
            budget = self.settings.inference_query_retry_budget_s
            (out,) = await client.vectorize_sparse([text], budget_s=budget, urgent=True)
        except InferenceUnavailable as exc:
            _, label = self._resolve_sparse(vector, stored.definition.sparse_vectorizers[vector], query=True)
            raise _service_error(label, exc) from None
        except InferenceTooLarge as exc:
            raise BadRequest(field, exc.problem) from None
        except InferenceRejected as exc:
            raise BadRequest(field, exc.message) from None
        return out

    async def _fused_parts(self, stored: StoredCollection, req: SearchRequest) -> list[FusedPart]:
        """A weighted hybrid's lists: at most one dense vectorizer, bm25, at most one sparse vectorizer,
        each with the query text through its own model (the lists are fetched concurrently)."""
        h = req.hybrid
        assert h is not None and h.weights is not None
        weights = h.weights
        dense = stored.definition.vectorizers
        sparse = stored.definition.sparse_vectorizers
        kinds: dict[str, list[str]] = {"dense": [], "bm25": [], "sparse": []}
        for key in weights:
            if key == BM25_VECTOR:
                if stored.bm25_encoder is None:
                    raise BadRequest("hybrid.weights.bm25", f"collection {stored.definition.name!r} has no "
                                                            "bm25 fields")
                kinds["bm25"].append(key)
            elif key in dense:
                kinds["dense"].append(key)
            elif key in sparse:
                kinds["sparse"].append(key)
            else:
                known = sorted([*dense, *sparse, *([BM25_VECTOR] if stored.bm25_encoder else [])])
                raise BadRequest(f"hybrid.weights.{key}", f"is not a list of this collection; name a dense "
                                                          f"vectorizer, bm25 or a sparse vectorizer: {known}")
        for kind in ("dense", "sparse"):
            if len(kinds[kind]) > 1:
                raise BadRequest("hybrid.weights", f"fuses at most one {kind} vector, not {kinds[kind]}")
        if req.vector is not None and kinds["dense"] and req.vector != kinds["dense"][0]:
            raise BadRequest("vector", f"is {req.vector!r} but hybrid.weights names {kinds['dense'][0]!r}")

        async def part(key: str) -> FusedPart:
            weight = float(weights[key])
            if key == BM25_VECTOR:
                return FusedPart(key, self._bm25_query(stored, h.query, "hybrid"), weight)
            if key in dense:
                values = await self._embed_query(stored, key, "hybrid.query", text=h.query)
                return FusedPart(key, values, weight)
            return FusedPart(key, await self._sparse_query(stored, key, h.query, "hybrid.query"), weight)

        return list(await asyncio.gather(*(part(k) for k in weights)))

    def _mmr(self, req: SearchRequest, kind: str) -> Mmr | None:
        if req.diversity is None:
            return None
        if kind not in DENSE_KINDS:
            raise BadRequest("diversity", f"applies to {', '.join(DENSE_KINDS)} searches, not {kind}")
        mmr = req.diversity.mmr
        need = req.limit + req.offset
        candidates = mmr.candidates if mmr.candidates is not None else max(DEFAULT_MMR_CANDIDATES, need)
        if candidates < need:
            raise BadRequest("diversity.mmr.candidates", f"must be at least limit + offset ({need})")
        return Mmr(float(mmr.lambda_), candidates)

    async def _browse(self, stored: StoredCollection, req: SearchRequest,
                      common: dict[str, Any]) -> list[Hit]:
        """A search without a query: objects matching the filter, in order_by order (else by id)."""
        order = None
        if req.order_by is not None:
            key = req.order_by.field
            ftype = stored.field_types.get(key)
            if ftype is None:
                raise BadRequest("order_by.field", f"{key!r} is not a declared field; declare it as integer, "
                                                   "float or datetime (PATCH fields) to order by it")
            if not ftype.orderable:
                raise BadRequest("order_by.field", f"{key!r} is a {ftype.name} field; only integer, float "
                                                   "and datetime fields can be ordered by")
            order = OrderBy(key, req.order_by.direction)
        try:
            return await self._db(self.store.browse, stored.definition.name, order_by=order, **common)
        except BadRequest as exc:
            if order is not None and "index" in exc.message.lower():
                raise BadRequest("order_by.field", f"the index of {order.key!r} is not ready yet (GET the "
                                                   "collection to see its state)") from None
            raise

    async def facets(self, name: str, body: FacetsRequest | dict) -> dict[str, Any]:
        """The most frequent values of a declared keyword / integer / bool / uuid field, with counts."""
        started = time.perf_counter()
        req: FacetsRequest = parse(FacetsRequest, body)
        stored = await self._load(name)
        ftype = stored.field_types.get(req.field)
        if ftype is None:
            raise BadRequest("field", f"{req.field!r} is not a declared field; declare it as keyword, "
                                      "integer, bool or uuid (PATCH fields) to count its values")
        if not ftype.facetable:
            raise BadRequest("field", f"{req.field!r} is a {ftype.name} field; facets count keyword, "
                                      "integer, bool and uuid fields")
        flt = parse_filter(req.filter, "filter", stored.field_types, max_depth=self.settings.filter_max_depth)
        try:
            values = await self._db(self.store.facet, name, req.field, filter=flt, limit=req.limit,
                                    exact=req.exact)
        except BadRequest as exc:
            if "index" in exc.message.lower():
                raise BadRequest("field", f"the index of {req.field!r} is not ready yet (GET the collection "
                                          "to see its state)") from None
            raise
        return {"values": [{"value": v.value, "count": v.count} for v in values],
                "took_ms": round((time.perf_counter() - started) * 1000, 3)}

    async def reindex_bm25(self, name: str, body: ReindexBm25Request | dict | None = None) -> dict[str, Any]:
        """Measure the corpus's mean length and rewrite every BM25 vector (see gateway.service.reindex)."""
        request: ReindexBm25Request = parse(ReindexBm25Request, body or {})
        stored = await self._fresh(name)

        async def save(updated: StoredCollection) -> None:
            await self._db(self.store.save_definition, name, updated.to_record())
            self._forget_definition(name)

        log.info("rebuilding the BM25 vectors of %s", name)
        return await reindex_bm25(self._db, self.store, stored, request, save,
                                  self.settings.definition_cache_s)

    def _bm25_query(self, stored: StoredCollection, text: str, field: str):
        encoder = stored.bm25_encoder
        if encoder is None:
            raise BadRequest(field, f"collection {stored.definition.name!r} has no bm25 fields")
        return encoder.query(text)

    async def search_batch(self, name: str, body: BatchSearchRequest | dict) -> dict[str, Any]:
        """Several searches in one request; one result per search, in order: ``{hits, took_ms}`` or
        ``{error, field}`` (a bad search fails alone, naming ``searches.N.field``).

        Query texts and images are embedded in one Vectorize call per inference service and the
        searches run as one store batch query.
        """
        started = time.perf_counter()
        request: BatchSearchRequest = parse(BatchSearchRequest, body)
        most = self.settings.search_batch_size
        if len(request.searches) > most:
            raise BadRequest("searches", f"at most {most} searches per batch (SEARCH_BATCH_SIZE), "
                                         f"got {len(request.searches)}")
        stored = await self._load(name)

        async def prepare(i: int, raw: Any) -> queries.Query:
            where = f"searches.{i}"
            try:
                req = parse(SearchRequest, raw, where)
                return await queries.prepare(stored, req, where, self.images.fetch)
            except BadRequest as exc:
                return queries.Query.failed(where, exc)

        batch = list(await asyncio.gather(*(prepare(i, raw) for i, raw in enumerate(request.searches))))
        await self._embed_queries(stored, batch)
        ready = [q for q in batch if q.error is None and not q.alone]
        hit_lists = dict(zip(map(id, ready), await self._run_searches(name, ready), strict=True))
        alone = {id(q): await self._search_alone(name, q) for q in batch if q.alone and q.error is None}
        took_ms = _ms_since(started)
        results: list[dict[str, Any]] = []
        for q in batch:
            if id(q) in alone:
                results.append(alone[id(q)])
            elif q.error is not None:
                results.append(q.error.to_dict())
            else:
                results.append({"hits": q.hits_out(hit_lists[id(q)]), "took_ms": took_ms})
        return {"results": results, "took_ms": took_ms}

    async def _search_alone(self, name: str, q: queries.Query) -> dict[str, Any]:
        """A search of a batch that the store batch does not cover (browse, order_by, diversity, and the
        searches whose query goes through a sparse model: neural_sparse, hybrid with weights)."""
        assert q.req is not None
        try:
            return await self.search(name, q.req)
        except BadRequest as exc:
            return BadRequest(queries.at(q.where, exc.field) if exc.field else q.where, exc.detail).to_dict()

    async def _run_searches(self, name: str, ready: list[queries.Query]) -> list[list[Hit]]:
        """Hits of each query from one store batch; a query the store refuses fails alone (hits [])."""
        if not ready:
            return []
        try:
            return await self._db(self.store.search_batch, name, [q.spec() for q in ready])
        except BadRequest:
            if len(ready) == 1:
                raise
        out: list[list[Hit]] = []
        for q in ready:  # find the search the store refused: each on its own
            try:
                out.append((await self._db(self.store.search_batch, name, [q.spec()]))[0])
            except BadRequest as exc:
                q.fail(exc.field, exc.detail)
                out.append([])
        return out

    async def _embed_queries(self, stored: StoredCollection, batch: list[queries.Query]) -> None:
        """Query vectors for every waiting query: one Vectorize call per inference service.

        A text or image the model rejects fails its own query only; a service that does not answer
        fails the request (503 naming it).
        """
        by_address: dict[str, list[queries.Query]] = {}
        for q in batch:
            if q.waiting:
                assert q.vector is not None
                address, _ = self._resolve(q.vector, stored.definition.vectorizers[q.vector])
                by_address.setdefault(address, []).append(q)
        await asyncio.gather(*(self._embed_at(stored, address, waiting)
                               for address, waiting in by_address.items()))

    async def _embed_at(self, stored: StoredCollection, address: str, waiting: list[queries.Query]) -> None:
        client = self.pool.get(address)
        texts = list(dict.fromkeys(q.text for q in waiting if q.text is not None))
        images = list(dict.fromkeys(q.image for q in waiting if q.image is not None))
        text_errors: list[str | None] = [None] * len(texts)
        image_errors: list[str | None] = [None] * len(images)
        text_vectors: Any
        image_vectors: Any
        budget = self.settings.inference_query_retry_budget_s
        try:
            try:
                text_vectors, image_vectors = await client.vectorize(texts=texts, images=images,
                                                                     budget_s=budget, urgent=True)
            except InferenceRejected as exc:
                if len(texts) + len(images) == 1:
                    message = exc.problem if isinstance(exc, InferenceTooLarge) else exc.message
                    text_errors, image_errors = [message] * len(texts), [message] * len(images)
                    text_vectors, image_vectors = [None] * len(texts), [None] * len(images)
                else:  # find the culprits: each modality split in halves until they are found
                    text_vectors, text_errors = await obj.embed_isolating(client, "text", texts,
                                                                          budget_s=budget)
                    image_vectors, image_errors = await obj.embed_isolating(client, "image", images,
                                                                            budget_s=budget)
        except InferenceUnavailable as exc:
            assert waiting[0].vector is not None
            raise self._unavailable(stored, waiting[0].vector, exc) from None
        answers: dict[Any, tuple[Any, str | None]] = {}
        answers.update(zip(texts, zip(text_vectors, text_errors, strict=True), strict=True))
        answers.update(zip(images, zip(image_vectors, image_errors, strict=True), strict=True))
        for q in waiting:
            assert q.vector is not None
            vector, error = answers[q.text if q.text is not None else q.image]
            if error is not None or vector is None:
                q.fail(q.embed_field, error or "the model returned no vector")
                continue
            values = vector.tolist()
            problem = check_vector(values, stored.vectors[q.vector].dimensions, "vector")
            if problem:
                raise Unavailable(f"inference service {client.address}",
                                  f"inference service {client.address} returned a vector that {problem[1]}")
            q.values = values

    async def evaluate(self, name: str, body: Any) -> dict[str, Any]:
        """Retrieval quality of a collection from BEIR queries and qrels (see gateway.service.evaluate)."""
        from gateway.service.evaluate import evaluate

        return await evaluate(self, name, body)

    # -- health ---------------------------------------------------------------------------------------------
    async def ready(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """Storage reachable (required) and each configured model's inference service (reported)."""
        storage_ok = True
        try:
            await asyncio.wait_for(self._db(self.store.list_definitions), timeout_s)
        except Exception:
            storage_ok = False
        models: dict[str, str] = {}

        async def probe(model: str, address: str) -> None:
            try:
                client = self.pool.get(address)
                await asyncio.wait_for(client.meta(refresh=True, timeout_s=timeout_s), timeout_s)
                models[model] = "ok"
            except Exception:
                models[model] = "unavailable"

        await asyncio.gather(*(probe(m, a) for m, a in self.settings.models.items()))
        return {"ready": storage_ok, "storage": "ok" if storage_ok else "unavailable", "models": models}


def _object_out(rec: PointRecord, properties: list[str] | None, with_vectors: bool) -> dict[str, Any]:
    """A stored point as the API shows an object: the user's id, its UUID, properties, and with
    ``with_vectors`` its dense vectors and its sparse vectorizers' vectors."""
    external, props = obj.id_and_properties(rec.id, rec.payload)
    if properties is not None:
        wanted = set(properties)
        props = {k: v for k, v in props.items() if k in wanted}
    out: dict[str, Any] = {"id": external, "uuid": rec.id, "properties": props}
    if with_vectors:
        out["vectors"] = {k: list(v) for k, v in rec.dense.items()}
        out["sparse_vectors"] = obj.sparse_out(rec)
    return out


def _service_error(label: str, exc: InferenceUnavailable,
                   vec: VectorizerConfig | None = None) -> Unavailable | Overloaded:
    """503 for a service that did not answer, 429 for one with too much work (the gateway's own bound,
    or the service's queue for the whole retry budget). For an ``inference_url`` a caller chose, the
    peer's own words are not passed on (see _detail)."""
    if isinstance(exc, InferenceBusy):
        detail = exc.detail if exc.shed or vec is None or not vec.inference_url else "its queue is full"
        return Overloaded(label, f"{label} is overloaded ({detail}); retry in {exc.retry_after_s} s",
                          exc.retry_after_s)
    detail = _detail(vec, exc) if vec is not None else exc.detail
    return Unavailable(label, f"{label} is unavailable ({detail})")
