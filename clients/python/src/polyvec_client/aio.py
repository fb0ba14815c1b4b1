"""The asyncio client: ``AsyncClient(url, api_key=...)``, the same surface as :class:`polyvec_client.Client`
with ``await`` (and ``async for`` over :meth:`AsyncCollection.iterate`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import httpx

from polyvec_client import _paths as paths
from polyvec_client import query as q
from polyvec_client._http import AsyncHTTP, Request, RetryPolicy
from polyvec_client._importer import Chunk, FailureHook, Planner, absorb, fail_chunk, object_uuid
from polyvec_client.client import ImportInterrupted, resolve
from polyvec_client.errors import BadRequestError, NotFoundError, PayloadTooLargeError, PolyvecError
from polyvec_client.models import CollectionInfo, ImportReport, Limits, Object, SearchError, SearchResult
from polyvec_client.progress import Progress, ProgressCallback, make_progress


class AsyncClient:
    """A polyvec gateway over HTTP, for asyncio. Arguments as :class:`polyvec_client.Client`."""

    def __init__(self, url: str | None = None, *, api_key: str | None = None, timeout: float = 600.0,
                 retry: RetryPolicy | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url, api_key = resolve(url, api_key)
        self._http = AsyncHTTP(self.url, api_key=api_key, timeout=timeout, retry=retry or RetryPolicy(),
                               transport=transport)
        self._limits: Limits | None = None
        self.collections = AsyncCollections(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    async def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                      content: bytes | None = None, idempotent: bool = True) -> Any:
        return await self._http.send(Request(method, path, json=json, params=params, content=content,
                                             idempotent=idempotent))

    def collection(self, name: str) -> AsyncCollection:
        return AsyncCollection(self, name)

    async def limits(self, refresh: bool = False) -> Limits:
        if self._limits is None or refresh:
            try:
                self._limits = Limits.from_json(await self.request("GET", "/v1/limits"))
            except NotFoundError:
                self._limits = Limits()
        return self._limits

    async def ready(self) -> dict[str, Any]:
        return await self.request("GET", "/readyz")


class AsyncCollections:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(self, name_or_definition: str | dict[str, Any], *,
                     vectorizers: dict[str, Any] | None = None, bm25: dict[str, Any] | None = None,
                     distance: str | None = None, **fields: Any) -> CollectionInfo:
        body = paths.definition(name_or_definition, vectorizers=vectorizers, bm25=bm25, distance=distance,
                                **fields)
        return CollectionInfo.from_json(await self._client.request("POST", "/v1/collections", json=body))

    async def get(self, name: str) -> CollectionInfo:
        return CollectionInfo.from_json(await self._client.request("GET", paths.col(name)))

    async def list(self) -> list[CollectionInfo]:
        answer = await self._client.request("GET", "/v1/collections")
        return [CollectionInfo.from_json(c) for c in answer["collections"]]

    async def delete(self, name: str) -> bool:
        return bool((await self._client.request("DELETE", paths.col(name)))["deleted"])

    async def exists(self, name: str) -> bool:
        try:
            await self.get(name)
        except NotFoundError:
            return False
        return True


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
        item: dict[str, Any] = {"properties": properties}
        if id is not None:
            item["id"] = id
        if vectors is not None:
            item["vectors"] = {k: list(v) for k, v in vectors.items()}
        answer = await self.client.request("POST", paths.col(self.name, "objects"), json={"objects": [item]},
                                           idempotent=id is not None)
        result = answer["results"][0]
        if result["status"] != "ok":
            field = (result.get("field") or "").removeprefix("objects.0.") or None
            raise BadRequestError(result.get("error", "refused"), status=200, field=field)
        return str(result["id"])

    async def get(self, object_id: str, *, with_vectors: bool = False) -> Object:
        params = {"with_vectors": "true"} if with_vectors else None
        answer = await self.client.request("GET", paths.obj(self.name, object_id), params=params)
        return Object.from_json(answer)

    async def put(self, object_id: str, properties: dict[str, Any], *,
                  vectors: dict[str, Sequence[float]] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"properties": properties}
        if vectors is not None:
            body["vectors"] = {k: list(v) for k, v in vectors.items()}
        return await self.client.request("PUT", paths.obj(self.name, object_id), json=body)

    async def delete(self, object_id: str) -> bool:
        return bool((await self.client.request("DELETE", paths.obj(self.name, object_id)))["deleted"])

    async def count(self, filter: dict[str, Any] | None = None, *, exact: bool = True) -> int:
        body: dict[str, Any] = {"exact": exact}
        if filter is not None:
            body["filter"] = filter
        return int((await self.client.request("POST", paths.col(self.name, "count"), json=body))["count"])

    async def delete_many(self, filter: dict[str, Any] | None = None, *, ids: Sequence[str] | None = None,
                          all: bool = False) -> int:
        body = paths.delete_body(filter, ids, all)
        answer = await self.client.request("POST", paths.col(self.name, "objects", "delete"), json=body)
        return int(answer["deleted"])

    async def page(self, filter: dict[str, Any] | None = None, *, limit: int = paths.DEFAULT_PAGE,
                   cursor: str | None = None, properties: Sequence[str] | None = None,
                   with_vectors: bool = False) -> tuple[list[Object], str | None]:
        body = paths.scroll_body(filter, limit, cursor, properties, with_vectors)
        answer = await self.client.request("POST", paths.col(self.name, "objects", "scroll"), json=body)
        return [Object.from_json(o) for o in answer["objects"]], answer["next_cursor"]

    async def iterate(self, filter: dict[str, Any] | None = None, *, batch_size: int | None = None,
                      properties: Sequence[str] | None = None,
                      with_vectors: bool = False) -> AsyncIterator[Object]:
        """Every object (matching ``filter``); the next page is fetched while you handle this one."""
        limit = min(batch_size or paths.DEFAULT_PAGE, (await self.client.limits()).max_page_size)
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
        size = min(batch_size or limits.import_batch_size, limits.import_batch_size)
        report = ImportReport()
        skip = await self.existing_ids() if skip_existing else None
        planner = Planner(report, size, limits.max_request_bytes, id_field=id_field, skip=skip,
                          on_failure=on_failure)
        update, close = make_progress(progress, f"import {self.name}", total)
        started = time.monotonic()
        inflight: set[asyncio.Task[list[tuple[Chunk, Any]]]] = set()
        width = max(1, concurrency)

        def fold(task: asyncio.Task[list[tuple[Chunk, Any]]], quiet: bool) -> None:
            try:
                results = task.result()
            except PolyvecError:
                if not quiet:
                    raise
                return
            for chunk, answer in results:
                if isinstance(answer, PolyvecError):
                    fail_chunk(report, chunk, answer.message, answer.field, on_failure)
                else:
                    absorb(report, chunk, answer, on_failure)

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
            inflight.add(asyncio.ensure_future(self._send_chunk(chunk)))
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

    async def _send_chunk(self, chunk: Chunk) -> list[tuple[Chunk, Any]]:
        try:
            answer = await self.client.request("POST", paths.col(self.name, "objects"), content=chunk.body(),
                                               idempotent=chunk.idempotent)
            return [(chunk, answer)]
        except (BadRequestError, PayloadTooLargeError) as exc:
            splittable = isinstance(exc, PayloadTooLargeError) or exc.field == "objects"
            if splittable and len(chunk) > 1:
                a, b = chunk.halves()
                return await self._send_chunk(a) + await self._send_chunk(b)
            return [(chunk, exc)]


class AsyncSearch:
    def __init__(self, collection: AsyncCollection) -> None:
        self._col = collection

    async def run(self, body: dict[str, Any]) -> SearchResult:
        answer = await self._col.client.request("POST", paths.col(self._col.name, "search"), json=body)
        return SearchResult.from_json(answer)

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
        out: list[SearchResult | SearchError] = []
        for start in range(0, len(searches), size):
            answer = await self._col.client.request("POST", paths.col(self._col.name, "search", "batch"),
                                                    json={"searches": list(searches[start:start + size])})
            out += paths.renumber(paths.batch_results(answer), start)
        return out
