"""Payload indexes of declared fields: their state as the store reports it, and builds in the background.

A declared field's index is ``ready`` once the store lists an index of its type, ``failed`` when the last
build of it failed (the error is kept in the collection's stored record, so every gateway shows it), and
``building`` otherwise. Collections get their indexes when they are created (empty: instant); fields added
later (``PATCH /v1/collections/{name}``) are indexed by a background task of the gateway that took the
PATCH. Should that gateway stop before the build ends, PATCH the same fields again: it starts a build for
every declared field whose index is missing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.errors import GatewayError, NotFound
from gateway.fields import FieldType
from gateway.service.collections import StoredCollection
from gateway.storage.base import IndexInfo, Store

log = logging.getLogger(__name__)

Db = Callable[..., Awaitable[Any]]


def index_states(stored: StoredCollection, existing: dict[str, IndexInfo]) -> dict[str, dict[str, Any]]:
    """Per declared field: {"state": "ready" | "building" | "failed", "type", "points"?, "error"?}."""
    out: dict[str, dict[str, Any]] = {}
    for key, ftype in stored.field_types.items():
        info = existing.get(key)
        state: dict[str, Any] = {"type": ftype.name}
        if info is not None and info.kind == ftype.base:
            state["state"] = "ready"
            if info.points is not None:
                state["points"] = info.points
        elif info is not None:
            state.update(state="failed", error=f"the store holds a {info.kind} index on this field")
        elif key in stored.index_errors:
            state.update(state="failed", error=stored.index_errors[key])
        else:
            state["state"] = "building"
        out[key] = state
    return out


def missing(stored: StoredCollection, existing: dict[str, IndexInfo]) -> dict[str, FieldType]:
    """Declared fields without an index of their type."""
    return {key: ftype for key, ftype in stored.field_types.items()
            if existing.get(key) is None or existing[key].kind != ftype.base}


class IndexBuilder:
    """Runs payload index builds of one gateway in background tasks, one task per collection at a time."""

    def __init__(self, store: Store, db: Db, changed: Callable[[str], None]) -> None:
        self.store = store
        self._db = db
        self._changed = changed  # told when a collection's stored record changed
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def running(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done()

    def start(self, name: str, fields: dict[str, FieldType]) -> None:
        """Build the indexes of ``fields`` in the background (after a build of the collection in flight)."""
        if not fields:
            return
        previous = self._tasks.get(name)
        self._tasks[name] = asyncio.create_task(self._build(name, fields, previous),
                                                name=f"index-build-{name}")

    async def _build(self, name: str, fields: dict[str, FieldType],
                     previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.gather(previous, return_exceptions=True)
        for key, ftype in fields.items():
            try:
                await self._db(self.store.create_payload_index, name, key, ftype.index())
                error = None
                log.info("built the %s index of %s.%s", ftype.name, name, key)
            except NotFound:
                return  # the collection was deleted meanwhile
            except GatewayError as exc:
                error = exc.message
            except Exception as exc:  # noqa: BLE001 - recorded for GET, never lost in a task
                error = f"{type(exc).__name__}: {exc}"
            if error is not None:
                log.warning("building the %s index of %s.%s failed: %s", ftype.name, name, key, error)
            try:
                await self._record(name, key, error)
            except GatewayError as exc:
                log.warning("could not record the index state of %s.%s: %s", name, key, exc)

    async def _record(self, name: str, key: str, error: str | None) -> None:
        record = await self._db(self.store.load_definition, name)
        if record is None:
            return
        errors = dict(record.get("index_errors") or {})
        if error is None and key not in errors:
            return
        if error is None:
            errors.pop(key)
        else:
            errors[key] = error
        await self._db(self.store.save_definition, name, {**record, "index_errors": errors})
        self._changed(name)

    async def wait(self, name: str) -> None:
        """Until the builds of ``name`` in flight are done (tests and shutdown)."""
        task = self._tasks.get(name)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        tasks = [t for t in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
