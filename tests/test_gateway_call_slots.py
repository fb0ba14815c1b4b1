"""The gateway's per-service bounds (gateway.call_slots) and retry pacing (gateway.retry), no server."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.call_slots import Admission, CallSlots, Overdue, Shed
from gateway.retry import Backoff, Budget


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_its_ceiling_with_jitter():
    backoff = Backoff(base_s=0.1, max_s=1.0, rng=random.Random(1))
    assert [backoff.ceiling(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    for attempt in range(1, 8):
        cap = backoff.ceiling(attempt)
        pauses = [backoff.pause(attempt) for _ in range(200)]
        assert all(cap / 2 <= p <= cap for p in pauses)
        assert max(pauses) - min(pauses) > cap / 4  # jittered, not one fixed value


def test_budget_stops_retrying_when_spent_and_shortens_the_last_pause():
    clock = Clock()
    budget = Budget(1.0, Backoff(base_s=0.1, max_s=0.4, rng=random.Random(3)), clock=clock)
    pauses = []
    while (pause := budget.next_pause()) is not None:
        pauses.append(pause)
        clock.now += pause
    assert sum(pauses) == pytest.approx(1.0)  # the last attempt lands at the end of the budget
    assert len(pauses) == budget.retries >= 4
    assert pauses[1] > pauses[0] / 2 and max(pauses) <= 0.4
    assert Budget(0, Backoff(), clock=clock).next_pause() is None  # budget 0: no retry


def test_admission_sheds_past_its_limit_and_counts_nested_uses_once():
    async def scenario():
        admission = Admission("svc", 2)
        async with admission.admit():
            async with admission.admit():  # the same request again (nested): no second place
                assert admission.active == 1
            inner = asyncio.create_task(_hold(admission))  # a task started inside shares the place
            await inner
            assert admission.active == 1
        assert admission.active == 0

        release = asyncio.Event()
        holders = [asyncio.create_task(_hold(admission, release, fresh=True)) for _ in range(2)]
        while admission.active < 2:
            await asyncio.sleep(0)
        with pytest.raises(Shed):
            await _hold(admission, fresh=True)
        assert admission.shed == 1
        release.set()
        await asyncio.gather(*holders)
        assert admission.active == 0
        await _hold(admission, fresh=True)  # room again

    run(scenario())


async def _hold(admission: Admission, release: asyncio.Event | None = None, fresh: bool = False) -> None:
    if fresh:
        from gateway.call_slots import _ADMITTED

        _ADMITTED.set(frozenset())
    async with admission.admit():
        if release is not None:
            await release.wait()


def test_slots_bound_calls_and_items_and_serve_urgent_waiters_first():
    async def scenario():
        slots = CallSlots(calls=2, items=10)
        order: list[str] = []
        gates = {name: asyncio.Event() for name in ("a", "b", "c", "d", "q")}

        async def call(name: str, n: int, urgent: bool = False) -> None:
            async with slots.hold(n, urgent=urgent):
                order.append(name)
                await gates[name].wait()

        a = asyncio.create_task(call("a", 6))
        b = asyncio.create_task(call("b", 6))  # 6 + 6 > 10 items: waits although a call slot is free
        c = asyncio.create_task(call("c", 2))  # FIFO: waits behind b although it would fit
        await asyncio.sleep(0.01)
        assert order == ["a"] and slots.waiting == 2
        q = asyncio.create_task(call("q", 1, urgent=True))  # a search query: before b and c
        await asyncio.sleep(0.01)
        assert order == ["a", "q"] and slots.calls_in_flight == 2
        gates["q"].set()
        await q
        assert order == ["a", "q"]  # b still does not fit beside a
        gates["a"].set()
        await a
        await asyncio.sleep(0.01)
        assert order == ["a", "q", "b", "c"] and slots.items_in_flight == 8
        gates["b"].set()
        gates["c"].set()
        await asyncio.gather(b, c)
        assert (slots.calls_in_flight, slots.items_in_flight, slots.waiting) == (0, 0, 0)
        # a call larger than the item bound still runs alone (never a deadlock)
        gates["d"].set()
        await call("d", 50)

    run(scenario())


def test_a_cancelled_waiter_gives_its_place_back():
    async def scenario():
        slots = CallSlots(calls=1)
        release = asyncio.Event()

        async def holder() -> None:
            async with slots.hold(1):
                await release.wait()

        first = asyncio.create_task(holder())
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(holder())
        await asyncio.sleep(0.01)
        assert slots.waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert slots.waiting == 0
        release.set()
        await first
        assert slots.calls_in_flight == 0
        async with slots.hold(1):
            assert slots.calls_in_flight == 1

    run(scenario())


def test_a_waiter_past_its_deadline_leaves_the_queue_while_the_slot_is_still_held():
    """No admitted query waits beyond its deadline, however long the call ahead of it takes."""

    async def scenario():
        slots = CallSlots(calls=1)
        release = asyncio.Event()
        started = asyncio.Event()

        async def holder() -> None:
            async with slots.hold(1):
                started.set()
                await release.wait()

        first = asyncio.create_task(holder())
        await started.wait()
        patient = asyncio.create_task(_use(slots, []))  # no deadline: waits as long as it takes
        with pytest.raises(Overdue):
            async with slots.hold(1, urgent=True, deadline_s=0.05):
                pytest.fail("granted although the only slot was never given back")
        assert not release.is_set() and slots.calls_in_flight == 1  # it gave up; nothing was released
        assert slots.waiting == 1 and not patient.done()  # it left the queue; the other waiter stays
        release.set()
        await asyncio.gather(first, patient)
        assert (slots.calls_in_flight, slots.waiting) == (0, 0)
        async with slots.hold(1, deadline_s=0):  # a free slot is taken at once, even with no time left
            assert slots.calls_in_flight == 1

    run(scenario())


async def _use(slots: CallSlots, order: list[str], name: str = "", first: bool = False) -> None:
    async with slots.hold(1, first=first):
        order.append(name)


def test_a_call_tried_again_keeps_its_turn_ahead_of_later_arrivals():
    """A call the service refused for a passing reason goes back to the head of the queue, not behind
    every request that arrived while it was being refused (that re-queueing defeated the bound)."""

    async def scenario():
        slots = CallSlots(calls=1)
        order: list[str] = []
        release = asyncio.Event()
        started = asyncio.Event()

        async def holder() -> None:
            async with slots.hold(1):
                started.set()
                await release.wait()

        first = asyncio.create_task(holder())
        await started.wait()
        later = [asyncio.create_task(_use(slots, order, name)) for name in ("b", "c")]
        while slots.waiting < 2:
            await asyncio.sleep(0)
        retried = asyncio.create_task(_use(slots, order, "retry", first=True))
        while slots.waiting < 3:
            await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, retried, *later)
        assert order == ["retry", "b", "c"]

    run(scenario())


def test_admission_tells_how_long_the_admitted_requests_take_to_leave():
    """Retry-After for a shed request: the time the admitted ones take to leave at the rate they left
    lately, whatever calls of other sizes (imports) took."""

    async def scenario():
        clock = Clock()
        admission = Admission("svc", 100, clock=clock)
        assert admission.drain_s() is None  # nothing has left yet: no rate
        for _ in range(10):  # ten requests leave, one every 0.1 s: 10 per second
            await _hold(admission, fresh=True)
            clock.now += 0.1
        release = asyncio.Event()
        holders = [asyncio.create_task(_hold(admission, release, fresh=True)) for _ in range(20)]
        while admission.active < 20:
            await asyncio.sleep(0)
        assert admission.drain_s() == pytest.approx(2.0)  # 20 admitted at 10 per second
        clock.now += 1.0  # nobody left for a second: a stalled service reads as slower
        assert admission.drain_s() == pytest.approx(20 * 2.0 / 10)  # 10 left in the last 2 s
        release.set()
        await asyncio.gather(*holders)

    run(scenario())
