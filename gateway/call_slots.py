"""Per inference service: how many requests the gateway lets wait, and how many calls and items are in flight.

:class:`Admission` bounds the gateway requests that use one service at a time (``INFERENCE_CONCURRENCY``
of them can have a call in flight, ``INFERENCE_MAX_WAITING`` more may wait); the next one is refused at
once (:class:`Shed`), so memory and latency stay bounded whatever the number of clients.

:class:`CallSlots` holds the calls of admitted requests: at most ``calls`` in flight, and at most
``items`` texts/images in flight (the service's ``MAX_QUEUE``, so one gateway alone never overflows the
service's queue). Waiters are served first come, first served, urgent ones (search queries) before the
others (import batches), so a large import does not stand between a search and the model. A call that is
tried again (the service refused it for a passing reason) goes back to the head of its queue: it keeps
the turn it had waited for instead of queueing behind every request that came after it. A waiter may
carry a deadline: past it, it leaves the queue and gets :class:`Overdue` (so no admitted search waits
longer than the bound, whatever the model's speed).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar


class Shed(Exception):
    """The service already has as many requests as the gateway lets wait for it."""

    def __init__(self, active: int) -> None:
        super().__init__(f"{active} requests are already using or waiting for it")
        self.active = active


class Overdue(Exception):
    """A call waited ``waited_s`` seconds for a slot without getting one (its deadline)."""

    def __init__(self, waited_s: float) -> None:
        super().__init__(f"waited {waited_s:g} s for a free call slot")
        self.waited_s = waited_s


# the services (by address) the current request was admitted to: nested uses count once
_ADMITTED: ContextVar[frozenset[str]] = ContextVar("polyvec_admitted", default=frozenset())


class Admission:
    """Counts the requests using one service; refuses the one past ``limit`` (see module doc).

    It also measures how fast requests leave (the last ``RATE_WINDOW`` of them), so that a refused client
    can be told when to come back: :meth:`drain_s`, the time the requests now here take to leave.
    """

    RATE_WINDOW = 64

    def __init__(self, key: str, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.key = key
        self.limit = max(1, limit)
        self.active = 0
        self.shed = 0  # requests refused so far (observability, tests)
        self.clock = clock
        self._left: deque[float] = deque(maxlen=self.RATE_WINDOW)  # when the latest requests left

    def drain_s(self) -> float | None:
        """Seconds until the requests now admitted have left, at the rate requests left lately (None:
        too few have left yet to say)."""
        if len(self._left) < 2:
            return None
        span = self.clock() - self._left[0]  # up to now: a stalled service reads as slow, not fast
        if span <= 0:
            return None
        return self.active * span / len(self._left)

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold one place for the current request (a no-op when it already holds one here)."""
        admitted = _ADMITTED.get()
        if self.key in admitted:
            yield
            return
        if self.active >= self.limit:
            self.shed += 1
            raise Shed(self.active)
        self.active += 1
        token = _ADMITTED.set(admitted | {self.key})
        try:
            yield
        finally:
            _ADMITTED.reset(token)
            self.active -= 1
            self._left.append(self.clock())


class CallSlots:
    """At most ``calls`` calls and ``items`` items in flight; FIFO, urgent waiters first."""

    def __init__(self, calls: int, items: int = 0) -> None:
        self.calls = max(1, calls)
        self.items = items  # 0: no bound on items
        self.calls_in_flight = 0
        self.items_in_flight = 0
        self._urgent: deque[tuple[int, asyncio.Future]] = deque()
        self._normal: deque[tuple[int, asyncio.Future]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._urgent) + len(self._normal)

    def set_items(self, items: int) -> None:
        self.items = max(0, items)
        self._wake()

    def _fits(self, n: int) -> bool:
        if self.calls_in_flight >= self.calls:
            return False
        # a call larger than the bound still goes when nothing else is in flight (never a deadlock)
        return not self.items or self.items_in_flight == 0 or self.items_in_flight + n <= self.items

    def _take(self, n: int) -> None:
        self.calls_in_flight += 1
        self.items_in_flight += n

    @asynccontextmanager
    async def hold(self, n: int, *, urgent: bool = False, first: bool = False,
                   deadline_s: float | None = None) -> AsyncIterator[None]:
        """Wait for room for one call of ``n`` items, hold it for the body, then give it back.

        ``first``: join the head of the queue (a call tried again keeps its turn). ``deadline_s``: wait
        at most this long, then leave the queue and raise :class:`Overdue` (None: no deadline).
        """
        await self._acquire(n, urgent, first, deadline_s)
        try:
            yield
        finally:
            self._release(n)

    async def _acquire(self, n: int, urgent: bool, first: bool = False,
                       deadline_s: float | None = None) -> None:
        if not self._urgent and not self._normal and self._fits(n):
            self._take(n)
            return
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        entry = (n, future)
        waiters = self._urgent if urgent else self._normal
        if first:
            waiters.appendleft(entry)
        else:
            waiters.append(entry)
        self._wake()
        try:
            async with asyncio.timeout(None if deadline_s is None else max(0.0, deadline_s)):
                try:
                    await future
                except asyncio.CancelledError:
                    if future.done() and not future.cancelled():
                        self._release(n)  # granted, but the caller went away (or ran out of time) first
                    else:
                        for queue in (self._urgent, self._normal):
                            if entry in queue:
                                queue.remove(entry)
                        self._wake()
                    raise
        except TimeoutError:
            raise Overdue(max(0.0, deadline_s or 0.0)) from None

    def _release(self, n: int) -> None:
        self.calls_in_flight -= 1
        self.items_in_flight -= n
        self._wake()

    def _wake(self) -> None:
        while True:
            waiters = self._urgent or self._normal
            if not waiters:
                return
            n, future = waiters[0]
            if future.done():  # cancelled meanwhile
                waiters.popleft()
                continue
            if not self._fits(n):
                return
            waiters.popleft()
            self._take(n)
            future.set_result(None)
