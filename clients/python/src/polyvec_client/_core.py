"""The sans-IO core of the client: what each call sends, what its answer means, and when to retry.

Every call of the gateway API is written once here, as a generator (a *flow*): it yields :class:`Op`
(one transport-neutral operation: its name, its collection or object, its JSON body, and the HTTP
method and path beside them) and receives the decoded answer, always in the HTTP API's JSON shape
whichever transport carried it, or has the typed error thrown in. The sync client runs flows with
:func:`drive`, the async one with :func:`adrive`; the transports (``_http``, ``_grpc``) only carry one
operation. Nothing here does I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from polyvec_client import _paths as paths
from polyvec_client._importer import Chunk, FailureHook, absorb, fail_chunk
from polyvec_client._retry import RETRY_STATUSES, RetryPolicy
from polyvec_client.errors import (
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PolyvecError,
    TransportError,
)
from polyvec_client.models import CollectionInfo, ImportReport, Limits, Object, SearchError, SearchResult

T = TypeVar("T")


@dataclass(frozen=True)
class Op:
    """One gateway operation. ``name`` picks the gRPC method; ``method``/``path`` are its HTTP route.

    ``body`` is the JSON body (``content`` when it is already encoded: import chunks); ``collection``
    and ``key`` (an object id or a collection name) are what the gRPC request carries outside the body.
    """

    name: str
    method: str
    path: str
    collection: str | None = None
    key: str | None = None
    body: Any = None
    content: bytes | None = None
    params: dict[str, Any] | None = None
    idempotent: bool = True


Flow = Generator[Op, Any, T]


# -- running flows ---------------------------------------------------------------------------------------
class Attempts:
    """The retry decisions of one operation: :meth:`pause` says how long to wait before trying again,
    or raises the error when it is not worth retrying (a 4xx, a non-idempotent request that may have
    run, tries or time budget used up)."""

    def __init__(self, policy: RetryPolicy, op: Op) -> None:
        self.policy = policy
        self.op = op
        self.started = time.monotonic()
        self.attempt = 0

    def pause(self, error: PolyvecError) -> float:
        if isinstance(error, TransportError):
            if error.may_have_run and not self.op.idempotent:
                raise error
        elif error.status not in RETRY_STATUSES:
            raise error
        if self.attempt + 1 >= self.policy.attempts:
            raise error
        pause = self.policy.delay(self.attempt, error.retry_after)
        if time.monotonic() + pause - self.started > self.policy.budget_s:
            raise error
        self.attempt += 1
        return pause


def drive(flow: Flow[T], send: Callable[[Op], Any], policy: RetryPolicy) -> T:
    """Run a flow to its result over a blocking transport ``send``."""
    try:
        op = next(flow)
        while True:
            attempts = Attempts(policy, op)
            while True:
                try:
                    answer = send(op)
                    break
                except PolyvecError as exc:
                    try:
                        time.sleep(attempts.pause(exc))
                    except PolyvecError:
                        answer = exc
                        break
            op = flow.throw(answer) if isinstance(answer, PolyvecError) else flow.send(answer)
    except StopIteration as stop:
        return stop.value


async def adrive(flow: Flow[T], send: Callable[[Op], Awaitable[Any]], policy: RetryPolicy) -> T:
    """Run a flow to its result over an asyncio transport ``send``."""
    try:
        op = next(flow)
        while True:
            attempts = Attempts(policy, op)
            while True:
                try:
                    answer = await send(op)
                    break
                except PolyvecError as exc:
                    try:
                        await asyncio.sleep(attempts.pause(exc))
                    except PolyvecError:
                        answer = exc
                        break
            op = flow.throw(answer) if isinstance(answer, PolyvecError) else flow.send(answer)
    except StopIteration as stop:
        return stop.value


def one(op: Op, parse: Callable[[Any], T]) -> Flow[T]:
    """A flow of one operation whose answer ``parse`` turns into the result."""
    return parse((yield op))


# -- collections -----------------------------------------------------------------------------------------
def limits() -> Flow[Limits]:
    try:
        answer = yield Op("limits", "GET", "/v1/limits")
    except NotFoundError:  # a gateway older than /v1/limits: its documented defaults
        return Limits()
    return Limits.from_json(answer)


def ready() -> Flow[dict[str, Any]]:
    return one(Op("ready", "GET", "/readyz"), dict)


def create_collection(body: dict[str, Any]) -> Flow[CollectionInfo]:
    return one(Op("create_collection", "POST", "/v1/collections", key=body.get("name"), body=body),
               CollectionInfo.from_json)


def get_collection(name: str) -> Flow[CollectionInfo]:
    return one(Op("get_collection", "GET", paths.col(name), key=name), CollectionInfo.from_json)


def list_collections() -> Flow[list[CollectionInfo]]:
    return one(Op("list_collections", "GET", "/v1/collections"),
               lambda a: [CollectionInfo.from_json(c) for c in a["collections"]])


def delete_collection(name: str) -> Flow[bool]:
    return one(Op("delete_collection", "DELETE", paths.col(name), key=name), lambda a: bool(a["deleted"]))


def collection_exists(name: str) -> Flow[bool]:
    try:
        yield from get_collection(name)
    except NotFoundError:
        return False
    return True


# -- objects ---------------------------------------------------------------------------------------------
def _with_vectors(body: dict[str, Any], vectors: dict[str, Sequence[float]] | None) -> dict[str, Any]:
    if vectors is not None:
        body["vectors"] = {k: list(v) for k, v in vectors.items()}
    return body


def insert(name: str, properties: dict[str, Any], object_id: str | None,
           vectors: dict[str, Sequence[float]] | None) -> Flow[str]:
    item = _with_vectors({"properties": properties}, vectors)
    if object_id is not None:
        item["id"] = object_id
    answer = yield Op("import", "POST", paths.col(name, "objects"), collection=name,
                      body={"objects": [item]}, idempotent=object_id is not None)
    result = answer["results"][0]
    if result["status"] != "ok":
        field = (result.get("field") or "").removeprefix("objects.0.") or None
        raise BadRequestError(result.get("error", "refused"), status=200, field=field)
    return str(result["id"])


def get_object(name: str, object_id: str, with_vectors: bool) -> Flow[Object]:
    return one(Op("get_object", "GET", paths.obj(name, object_id), collection=name, key=object_id,
                  params={"with_vectors": "true"} if with_vectors else None), Object.from_json)


def put_object(name: str, object_id: str, properties: dict[str, Any],
               vectors: dict[str, Sequence[float]] | None) -> Flow[dict[str, Any]]:
    return one(Op("put_object", "PUT", paths.obj(name, object_id), collection=name, key=object_id,
                  body=_with_vectors({"properties": properties}, vectors)), dict)


def delete_object(name: str, object_id: str) -> Flow[bool]:
    return one(Op("delete_object", "DELETE", paths.obj(name, object_id), collection=name, key=object_id),
               lambda a: bool(a["deleted"]))


def count(name: str, filter: dict[str, Any] | None, exact: bool) -> Flow[int]:
    body: dict[str, Any] = {"exact": exact}
    if filter is not None:
        body["filter"] = filter
    return one(Op("count", "POST", paths.col(name, "count"), collection=name, body=body),
               lambda a: int(a["count"]))


def delete_many(name: str, filter: dict[str, Any] | None, ids: Sequence[str] | None, all: bool) -> Flow[int]:
    return one(Op("delete_objects", "POST", paths.col(name, "objects", "delete"), collection=name,
                  body=paths.delete_body(filter, ids, all)), lambda a: int(a["deleted"]))


def raw_page(name: str, filter: dict[str, Any] | None, limit: int, cursor: str | None,
             properties: Sequence[str] | None,
             with_vectors: bool) -> Flow[tuple[list[dict[str, Any]], str | None]]:
    """One scroll page as parsed JSON objects, and the next cursor (None after the last page)."""
    body = paths.scroll_body(filter, limit, cursor, properties, with_vectors)
    return one(Op("scroll", "POST", paths.col(name, "objects", "scroll"), collection=name, body=body),
               lambda a: (a["objects"], a.get("next_cursor")))


def page(name: str, filter: dict[str, Any] | None, limit: int, cursor: str | None,
         properties: Sequence[str] | None, with_vectors: bool) -> Flow[tuple[list[Object], str | None]]:
    objects, cursor = yield from raw_page(name, filter, limit, cursor, properties, with_vectors)
    return [Object.from_json(o) for o in objects], cursor


def page_size(batch_size: int | None, known: Limits) -> int:
    return min(batch_size or paths.DEFAULT_PAGE, known.max_page_size)


# -- import ----------------------------------------------------------------------------------------------
def send_chunk(name: str, chunk: Chunk) -> Flow[list[tuple[Chunk, Any]]]:
    """Send one import chunk; a chunk the gateway finds too large is split in halves and sent again.
    Each part's answer, or the error that refused it as a whole."""
    try:
        answer = yield Op("import", "POST", paths.col(name, "objects"), collection=name,
                          content=chunk.body(), idempotent=chunk.idempotent)
        return [(chunk, answer)]
    except (BadRequestError, PayloadTooLargeError) as exc:
        splittable = isinstance(exc, PayloadTooLargeError) or exc.field == "objects"
        if splittable and len(chunk) > 1:
            a, b = chunk.halves()
            return (yield from send_chunk(name, a)) + (yield from send_chunk(name, b))
        return [(chunk, exc)]


def chunk_size(batch_size: int | None, known: Limits) -> int:
    return min(batch_size or known.import_batch_size, known.import_batch_size)


def fold(report: ImportReport, results: list[tuple[Chunk, Any]], on_failure: FailureHook | None) -> None:
    """Fold the answers of sent chunks into the report."""
    for chunk, answer in results:
        if isinstance(answer, PolyvecError):
            fail_chunk(report, chunk, answer.message, answer.field, on_failure)
        else:
            absorb(report, chunk, answer, on_failure)


# -- search ----------------------------------------------------------------------------------------------
def search_raw(name: str, body: dict[str, Any]) -> Flow[dict[str, Any]]:
    return one(Op("search", "POST", paths.col(name, "search"), collection=name, body=body), dict)


def search(name: str, body: dict[str, Any]) -> Flow[SearchResult]:
    return SearchResult.from_json((yield from search_raw(name, body)))


def search_batch(name: str, searches: Sequence[dict[str, Any]],
                 size: int) -> Flow[list[SearchResult | SearchError]]:
    """Several searches in requests of the gateway's SEARCH_BATCH_SIZE; errors name the whole batch's N."""
    out: list[SearchResult | SearchError] = []
    for start in range(0, len(searches), size):
        answer = yield Op("search_batch", "POST", paths.col(name, "search", "batch"), collection=name,
                          body={"searches": list(searches[start:start + size])})
        out += paths.renumber(paths.batch_results(answer), start)
    return out
