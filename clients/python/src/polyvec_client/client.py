"""The synchronous client: ``Client(url, api_key=...)`` (see :mod:`polyvec_client.aio` for the async twin)."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import httpx

from polyvec_client import _core as core
from polyvec_client import _paths as paths
from polyvec_client import query as q
from polyvec_client._core import Flow, Op
from polyvec_client._importer import Chunk, FailureHook, Planner, object_uuid
from polyvec_client._retry import RetryPolicy
from polyvec_client._transports import sync_transport
from polyvec_client.errors import PolyvecError
from polyvec_client.models import (
    CollectionInfo,
    ImportReport,
    Limits,
    Object,
    SearchError,
    SearchResult,
)
from polyvec_client.progress import Progress, ProgressCallback, make_progress

T = TypeVar("T")

DEFAULT_URL = "http://localhost:8000"


class ImportInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``insert_many``: the requests in flight were let finish; ``report`` says what the
    gateway acknowledged (``report.unsent_from``: the first input position that was not sent)."""

    def __init__(self, report: ImportReport) -> None:
        super().__init__("import interrupted")
        self.report = report


def resolve(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """The gateway URL and API key: the arguments, else POLYVEC_URL / POLYVEC_API_KEY, else the default."""
    return (url or os.environ.get("POLYVEC_URL") or DEFAULT_URL).rstrip("/"), \
        api_key if api_key is not None else os.environ.get("POLYVEC_API_KEY") or None


class Client:
    """A polyvec gateway over HTTP or gRPC.

    ``url`` (default: $POLYVEC_URL or http://localhost:8000): ``http(s)://HOST:PORT`` for the HTTP API,
    ``grpc://HOST:PORT`` (``grpcs://`` with TLS) for the gRPC API (the ``grpc`` extra); both give the
    same results and the same typed errors. ``api_key`` (default: $POLYVEC_API_KEY), ``timeout`` per
    request in seconds, ``retry`` (429/503 and unreachable gateways are retried with jittered backoff
    honouring Retry-After). ``transport``: an httpx transport (HTTP only). Use it as a context manager
    or call :meth:`close`.
    """

    def __init__(self, url: str | None = None, *, api_key: str | None = None, timeout: float = 600.0,
                 retry: RetryPolicy | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.url, api_key = resolve(url, api_key)
        self.retry = retry or RetryPolicy()
        self._transport = sync_transport(self.url, api_key, timeout, transport)
        self._limits: Limits | None = None
        self.collections = Collections(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    def run(self, flow: Flow[T]) -> T:
        """Run one of the core's flows (``polyvec_client._core``) over this client's transport."""
        return core.drive(flow, self._transport.send, self.retry)

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                content: bytes | None = None, idempotent: bool = True) -> Any:
        """One call of the HTTP API (retried as described above); the decoded JSON answer."""
        return self.run(core.one(Op("http", method, path, body=json, content=content, params=params,
                                    idempotent=idempotent), lambda a: a))

    def collection(self, name: str) -> Collection:
        return Collection(self, name)

    def limits(self, refresh: bool = False) -> Limits:
        """The gateway's per-request limits (IMPORT_BATCH_SIZE, ...), asked once."""
        if self._limits is None or refresh:
            self._limits = self.run(core.limits())
        return self._limits

    def ready(self) -> dict[str, Any]:
        """The gateway's /readyz answer (store and models); over gRPC its health check."""
        return self.run(core.ready())


class Collections:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, name_or_definition: str | dict[str, Any], *, vectorizers: dict[str, Any] | None = None,
               bm25: dict[str, Any] | None = None, distance: str | None = None,
               **fields: Any) -> CollectionInfo:
        """Create a collection from a definition dict, or a name plus definition fields."""
        return self._client.run(core.create_collection(paths.definition(
            name_or_definition, vectorizers=vectorizers, bm25=bm25, distance=distance, **fields)))

    def get(self, name: str) -> CollectionInfo:
        return self._client.run(core.get_collection(name))

    def list(self) -> list[CollectionInfo]:
        return self._client.run(core.list_collections())

    def delete(self, name: str) -> bool:
        return self._client.run(core.delete_collection(name))

    def exists(self, name: str) -> bool:
        return self._client.run(core.collection_exists(name))


class Collection:
    """One collection: objects in and out, counts, deletes; searches under ``.search``."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name
        self.search = Search(self)

    def __repr__(self) -> str:
        return f"Collection({self.name!r})"

    def info(self) -> CollectionInfo:
        return self.client.collections.get(self.name)

    # -- single objects ------------------------------------------------------------------------------------
    def insert(self, properties: dict[str, Any], *, id: str | None = None,
               vectors: dict[str, Sequence[float]] | None = None) -> str:
        """Store one object; returns its id (a UUID when you give none). Raises if it is refused."""
        return self.client.run(core.insert(self.name, properties, id, vectors))

    def get(self, object_id: str, *, with_vectors: bool = False) -> Object:
        return self.client.run(core.get_object(self.name, object_id, with_vectors))

    def put(self, object_id: str, properties: dict[str, Any], *,
            vectors: dict[str, Sequence[float]] | None = None) -> dict[str, Any]:
        """Replace an object's properties (created when missing); only changed fields are re-embedded."""
        return self.client.run(core.put_object(self.name, object_id, properties, vectors))

    def delete(self, object_id: str) -> bool:
        return self.client.run(core.delete_object(self.name, object_id))

    # -- many objects --------------------------------------------------------------------------------------
    def count(self, filter: dict[str, Any] | None = None, *, exact: bool = True) -> int:
        return self.client.run(core.count(self.name, filter, exact))

    def delete_many(self, filter: dict[str, Any] | None = None, *, ids: Sequence[str] | None = None,
                    all: bool = False) -> int:
        """Delete by filter (``all=True`` to allow deleting every object) or by ids; returns how many."""
        return self.client.run(core.delete_many(self.name, filter, ids, all))

    def page(self, filter: dict[str, Any] | None = None, *, limit: int = paths.DEFAULT_PAGE,
             cursor: str | None = None, properties: Sequence[str] | None = None,
             with_vectors: bool = False) -> tuple[list[Object], str | None]:
        """One page of objects and the cursor of the next (None after the last)."""
        return self.client.run(core.page(self.name, filter, limit, cursor, properties, with_vectors))

    def iterate(self, filter: dict[str, Any] | None = None, *, batch_size: int | None = None,
                properties: Sequence[str] | None = None, with_vectors: bool = False) -> Iterator[Object]:
        """Every object (matching ``filter``), page by page over the gateway's cursor.

        The next page is fetched while you process the current one. Objects written meanwhile may or
        may not appear; none that stays is skipped or repeated.
        """
        for page in self._raw_pages(filter, batch_size=batch_size, properties=properties,
                                    with_vectors=with_vectors):
            for data in page:
                yield Object.from_json(data)

    def _raw_pages(self, filter: dict[str, Any] | None = None, *, batch_size: int | None = None,
                   properties: Sequence[str] | None = None,
                   with_vectors: bool = False) -> Iterator[list[dict[str, Any]]]:
        """The gateway's pages as parsed JSON (``{id, uuid, properties, vectors?}`` each), the next one
        fetched while the caller handles this one: what :meth:`iterate` and ``polyvec export`` read."""
        limit = core.page_size(batch_size, self.client.limits())

        def fetch(cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
            return self.client.run(core.raw_page(self.name, filter, limit, cursor, properties, with_vectors))

        with ThreadPoolExecutor(1, thread_name_prefix="polyvec-scroll") as pool:
            pending = pool.submit(fetch, None)
            while True:
                objects, cursor = pending.result()
                if cursor is not None:
                    pending = pool.submit(fetch, cursor)
                yield objects
                if cursor is None:
                    return

    def existing_ids(self) -> Callable[[str], bool]:
        """A membership test for the ids stored now (16 bytes of UUID kept per object)."""
        present = {uuid.UUID(o.uuid).bytes for o in self.iterate(properties=[], batch_size=1000)}
        return lambda object_id: uuid.UUID(object_uuid(object_id)).bytes in present

    def insert_many(self, objects: Iterable[Any], *, batch_size: int | None = None, concurrency: int = 4,
                    progress: bool | ProgressCallback | Progress = True, id_field: str | None = None,
                    skip_existing: bool = False, total: int | None = None,
                    on_failure: FailureHook | None = None) -> ImportReport:
        """Import any iterable of objects, streaming: never more than ``concurrency`` + 1 chunks in memory.

        Items are ``{id?, properties, vectors?}`` or flat property dicts (id from ``id_field``). Chunks
        hold at most ``batch_size`` objects (default and ceiling: the gateway's IMPORT_BATCH_SIZE) and
        fit its MAX_REQUEST_BYTES; ``concurrency`` requests are in flight at once. Every object gets a
        result: ``report.ok``, and ``report.failed`` with ``(index, id, field, error)`` per refused object.
        ``skip_existing``: objects whose id is already stored are not sent (``report.skipped``).
        ``on_failure(failure, item)`` is called with each refused object as it is known (e.g. to write a
        file of failed objects while the import goes on).
        Ctrl-C lets the requests in flight finish, then raises :class:`ImportInterrupted` with the report.
        A fatal error (collection gone, gateway unreachable past the retries) carries ``.report`` too.
        """
        limits = self.client.limits()
        report = ImportReport()
        skip = self.existing_ids() if skip_existing else None
        planner = Planner(report, core.chunk_size(batch_size, limits), limits.max_request_bytes,
                          id_field=id_field, skip=skip, on_failure=on_failure)
        update, close = make_progress(progress, f"import {self.name}", total)
        started = time.monotonic()
        inflight: dict[Future[list[tuple[Chunk, Any]]], Chunk] = {}
        pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="polyvec-import")

        def settle(block_until: str, *, quiet: bool = False) -> None:
            done, _ = wait(list(inflight), return_when=block_until)
            for fut in done:
                inflight.pop(fut)
                try:
                    core.fold(report, fut.result(), on_failure)
                except PolyvecError:
                    if not quiet:
                        raise
            if update is not None:
                update(report.ok + len(report.failed) + report.skipped, len(report.failed))

        def submit(chunk: Chunk) -> None:
            while len(inflight) >= max(1, concurrency):
                settle(FIRST_COMPLETED)
            inflight[pool.submit(self.client.run, core.send_chunk(self.name, chunk))] = chunk
            report.sent += len(chunk)

        stop = threading.Event()
        restore = _catch_sigint(stop)
        next_index = 0
        try:
            try:
                for index, item in enumerate(objects):
                    for chunk in planner.add(index, item):
                        submit(chunk)
                    next_index = index + 1
                    if stop.is_set():
                        break
                if not stop.is_set():
                    last = planner.flush()
                    if last is not None:
                        submit(last)
                while inflight:
                    settle(FIRST_COMPLETED, quiet=stop.is_set())
                if stop.is_set():
                    raise KeyboardInterrupt
            except KeyboardInterrupt:
                report.interrupted = True
                unsent = planner.current.indices[0] if planner.current.indices else next_index
                report.unsent_from = unsent
                while inflight:  # what is on the wire is let finish: its results are real
                    settle(FIRST_COMPLETED, quiet=True)
                raise ImportInterrupted(report) from None
            except PolyvecError as exc:
                while inflight:
                    settle(FIRST_COMPLETED, quiet=True)
                exc.report = report  # type: ignore[attr-defined]
                raise
        finally:
            restore()
            pool.shutdown(wait=True)
            report.elapsed = time.monotonic() - started
            close()
        return report


class Search:
    """Searches of one collection; every method takes ``limit``, ``offset``, ``filter``, ``properties``."""

    def __init__(self, collection: Collection) -> None:
        self._col = collection

    def run(self, body: dict[str, Any]) -> SearchResult:
        """A search from a request body (see :mod:`polyvec_client.query`)."""
        return self._col.client.run(core.search(self._col.name, body))

    def raw(self, body: dict[str, Any]) -> dict[str, Any]:
        """A search from a request body; the answer as the HTTP API's JSON (``{hits, took_ms}``)."""
        return self._col.client.run(core.search_raw(self._col.name, body))

    def near_text(self, query: str, **options: Any) -> SearchResult:
        return self.run(q.near_text(query, **options))

    def near_image(self, image: q.ImageInput, **options: Any) -> SearchResult:
        """``image``: a file path, an http(s) URL (the gateway fetches it), encoded bytes or a PIL.Image."""
        return self.run(q.near_image(image, **options))

    def near_vector(self, vector: Sequence[float], **options: Any) -> SearchResult:
        return self.run(q.near_vector(vector, **options))

    def bm25(self, query: str, **options: Any) -> SearchResult:
        return self.run(q.bm25(query, **options))

    def neural_sparse(self, query: str, **options: Any) -> SearchResult:
        """Neural sparse search (``sparse_vector=`` picks the sparse vectorizer)."""
        return self.run(q.neural_sparse(query, **options))

    def hybrid(self, query: str, **options: Any) -> SearchResult:
        """``alpha=`` (dense + BM25) or ``weights={"dense": .5, "bm25": .2, "splade": .3}``, ``fusion=``."""
        return self.run(q.hybrid(query, **options))

    def batch(self, searches: Sequence[dict[str, Any]]) -> list[SearchResult | SearchError]:
        """Several searches (bodies from :mod:`polyvec_client.query`), one result each, in order.

        Sent in requests of the gateway's SEARCH_BATCH_SIZE; a bad search gets a SearchError naming
        ``searches.N.field`` and does not fail the others.
        """
        size = self._col.client.limits().search_batch_size
        return self._col.client.run(core.search_batch(self._col.name, searches, size))


def _catch_sigint(stop: threading.Event) -> Callable[[], None]:
    """While an import runs in the main thread, Ctrl-C sets ``stop`` instead of raising where it lands
    (half-way through folding an answer in); a second Ctrl-C interrupts at once. Returns the undo."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return lambda: None

    def on_sigint(signum: int, frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, on_sigint)

    def restore() -> None:
        if signal.getsignal(signal.SIGINT) is on_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    return restore
