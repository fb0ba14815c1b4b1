"""The asyncio client: ``AsyncClient(url, api_key=...)``, the same surface as :class:`polyvec_client.Client`
with ``await`` (and ``async for`` over :meth:`AsyncCollection.iterate`). Both run the same flows of
:mod:`polyvec_client._core`; only the waiting differs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from typing import Any, TypeVar

import httpx

from polyvec_client import _core as core
from polyvec_client import _paths as paths
from polyvec_client import query as q
from polyvec_client._core import Flow, Op
from polyvec_client._importer import Chunk, FailureHook, Planner, object_uuid
from polyvec_client._retry import RetryPolicy
from polyvec_client._transports import async_transport
from polyvec_client.client import ImportInterrupted, resolve
from polyvec_client.errors import PolyvecError
from polyvec_client.models import CollectionInfo, ImportReport, Limits, Object, SearchError, SearchResult
from polyvec_client.progress import Progress, ProgressCallback, make_progress

T = TypeVar("T")


class AsyncClient:
    """A polyvec gateway over HTTP or gRPC, for asyncio. Arguments as :class:`polyvec_client.Client`."""

    def __init__(self, url: str | None = None, *, api_key: str | None = None, timeout: float = 600.0,
                 retry: RetryPolicy | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url, api_key = resolve(url, api_key)
        self.retry = retry or RetryPolicy()
        self._transport = async_transport(self.url, api_key, timeout, transport)
        self._limits: Limits | None = None
        self.collections = AsyncCollections(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._transport.close()

    async def run(self, flow: Flow[T]) -> T:
        """Run one of the core's flows over this client's transport."""
        return await core.adrive(flow, self._transport.send, self.retry)

    async def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                      content: bytes | None = None, idempotent: bool = True) -> Any:
        return await self.run(core.one(Op("http", method, path, body=json, content=content, params=params,
                                          idempotent=idempotent), lambda a: a))

    def collection(self, name: str) -> AsyncCollection:
        return AsyncCollection(self, name)

    async def limits(self, refresh: bool = False) -> Limits:
        if self._limits is None or refresh:
            self._limits = await self.run(core.limits())
        return self._limits

    async def ready(self) -> dict[str, Any]:
        return await self.run(core.ready())


class AsyncCollections:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(self, name_or_definition: str | dict[str, Any], *,
                     vectorizers: dict[str, Any] | None = None, bm25: dict[str, Any] | None = None,
                     distance: str | None = None, **fields: Any) -> CollectionInfo:
        return await self._client.run(core.create_collection(paths.definition(
            name_or_definition, vectorizers=vectorizers, bm25=bm25, distance=distance, **fields)))

    async def get(self, name: str) -> CollectionInfo:
        return await self._client.run(core.get_collection(name))

    async def list(self) -> list[CollectionInfo]:
        return await self._client.run(core.list_collections())

    async def delete(self, name: str) -> bool:
        return await self._client.run(core.delete_collection(name))

    async def exists(self, name: str) -> bool:
        return await self._client.run(core.collection_exists(name))


class AsyncCollection:
    def __init__(self, client: AsyncClient, name: str) -> None:
        self.client = client
        self.name = name
        self.search = AsyncSearch(self)

    def __repr__(self) -> str:
        return f"AsyncCollection({self.name!r})"

    async def info(self) -> CollectionInfo:
        return await self.client.collections.get(self.name)

    async def insert(self, properties: dict[str, Any], *, id: str | None = None,
                     vectors: dict[str, Sequence[float]] | None = None) -> str:
        return await self.client.run(core.insert(self.name, properties, id, vectors))

    async def get(self, object_id: str, *, with_vectors: bool = False) -> Object:
        return await self.client.run(core.get_object(self.name, object_id, with_vectors))

    async def put(self, object_id: str, properties: dict[str, Any], *,
                  vectors: dict[str, Sequence[float]] | None = None) -> dict[str, Any]:
        return await self.client.run(core.put_object(self.name, object_id, properties, vectors))

    async def delete(self, object_id: str) -> bool:
        return await self.client.run(core.delete_object(self.name, object_id))

    async def count(self, filter: dict[str, Any] | None = None, *, exact: bool = True) -> int:
        return await self.client.run(core.count(self.name, filter, exact))

    async def delete_many(self, filter: dict[str, Any] | None = None, *, ids: Sequence[str] | None = None,
                          all: bool = False) -> int:
        return await self.client.run(core.delete_many(self.name, filter, ids, all))

    async def page(self, filter: dict[str, Any] | None = None, *, limit: int = paths.DEFAULT_PAGE,
                   cursor: str | None = None, properties: Sequence[str] | None = None,
                   with_vectors: bool = False) -> tuple[list[Object], str | None]:
        return await self.client.run(core.page(self.name, filter, limit, cursor, properties, with_vectors))

    async def iterate(self, filter: dict[str, Any] | None = None, *, batch_size: int | None = None,
                      properties: Sequence[str] | None = None,
                      with_vectors: bool = False) -> AsyncIterator[Object]:
        """Every object (matching ``filter``); the next page is fetched while you handle this one."""
        limit = core.page_size(batch_size, await self.client.limits())
        pending = asyncio.ensure_future(self.page(filter, limit=limit, properties=properties,
                                                  with_vectors=with_vectors))
        try:
            while True:
                objects, cursor = await pending
                if cursor is not None:
                    pending = asyncio.ensure_future(self.page(
                        filter, limit=limit, cursor=cursor, properties=properties, with_vectors=with_vectors))
                for o in objects:
                    yield o
                if cursor is None:
                    return
        finally:
            if not pending.done():
                pending.cancel()

    async def existing_ids(self) -> Callable[[str], bool]:
        present = {uuid.UUID(o.uuid).bytes async for o in self.iterate(properties=[], batch_size=1000)}
        return lambda object_id: uuid.UUID(object_uuid(object_id)).bytes in present

    async def insert_many(self, objects: Iterable[Any] | AsyncIterable[Any], *, batch_size: int | None = None,
                          concurrency: int = 4, progress: bool | ProgressCallback | Progress = True,
                          id_field: str | None = None, skip_existing: bool = False,
                          total: int | None = None, on_failure: FailureHook | None = None) -> ImportReport:
        """As :meth:`polyvec_client.Client.collection(...).insert_many`; takes sync or async iterables.

        Cancellation (or Ctrl-C) lets the requests in flight finish, then raises ImportInterrupted.
        """
        limits = await self.client.limits()
        report = ImportReport()
        skip = await self.existing_ids() if skip_existing else None
        planner = Planner(report, core.chunk_size(batch_size, limits), limits.max_request_bytes,
                          id_field=id_field, skip=skip, on_failure=on_failure)
        update, close = make_progress(progress, f"import {self.name}", total)
        started = time.monotonic()
        inflight: set[asyncio.Task[list[tuple[Chunk, Any]]]] = set()
        width = max(1, concurrency)

        def fold(task: asyncio.Task[list[tuple[Chunk, Any]]], quiet: bool) -> None:
            try:
                core.fold(report, task.result(), on_failure)
            except PolyvecError:
                if not quiet:
                    raise

        async def settle(quiet: bool = False) -> None:
            done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                inflight.discard(task)
                fold(task, quiet)
            if update is not None:
                update(report.ok + len(report.failed) + report.skipped, len(report.failed))

        async def submit(chunk: Chunk) -> None:
            while len(inflight) >= width:
                await settle()
            inflight.add(asyncio.ensure_future(self.client.run(core.send_chunk(self.name, chunk))))
            report.sent += len(chunk)

        async def items() -> AsyncIterator[Any]:
            if isinstance(objects, AsyncIterable):
                async for item in objects:
                    yield item
            else:
                for item in objects:
                    yield item

        try:
            try:
                index = 0
                async for item in items():
                    for chunk in planner.add(index, item):
                        await submit(chunk)
                    index += 1
                last = planner.flush()
                if last is not None:
                    await submit(last)
                while inflight:
                    await settle()
            except (KeyboardInterrupt, asyncio.CancelledError):
                report.interrupted = True
                report.unsent_from = planner.current.indices[0] if planner.current.indices else None
                if inflight:  # what is on the wire is let finish: its results are real
                    await asyncio.shield(asyncio.wait(set(inflight)))
                    for task in inflight:
                        fold(task, True)
                    inflight.clear()
                raise ImportInterrupted(report) from None
            except PolyvecError as exc:
                while inflight:
                    await settle(quiet=True)
                exc.report = report  # type: ignore[attr-defined]
                raise
        finally:
            report.elapsed = time.monotonic() - started
            close()
        return report

class AsyncSearch:
    def __init__(self, collection: AsyncCollection) -> None:
        self._col = collection

    async def run(self, body: dict[str, Any]) -> SearchResult:
        return await self._col.client.run(core.search(self._col.name, body))

    async def raw(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._col.client.run(core.search_raw(self._col.name, body))

    async def near_text(self, query: str, **options: Any) -> SearchResult:
        return await self.run(q.near_text(query, **options))

    async def near_image(self, image: q.ImageInput, **options: Any) -> SearchResult:
        return await self.run(q.near_image(image, **options))

    async def near_vector(self, vector: Sequence[float], **options: Any) -> SearchResult:
        return await self.run(q.near_vector(vector, **options))

    async def bm25(self, query: str, **options: Any) -> SearchResult:
        return await self.run(q.bm25(query, **options))

    async def neural_sparse(self, query: str, **options: Any) -> SearchResult:
        return await self.run(q.neural_sparse(query, **options))

    async def hybrid(self, query: str, **options: Any) -> SearchResult:
        return await self.run(q.hybrid(query, **options))

    async def batch(self, searches: Sequence[dict[str, Any]]) -> list[SearchResult | SearchError]:
        size = (await self._col.client.limits()).search_batch_size
        return await self._col.client.run(core.search_batch(self._col.name, searches, size))
