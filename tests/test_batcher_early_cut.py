"""BATCH_EARLY_CUT: a partial batch goes before BATCH_WAIT_MS is over when the arrival rate shows
that waiting will not pay. Everything runs on a virtual clock: the estimates take explicit
timestamps, and the batcher reads the test's clock, so no test depends on how fast this machine is.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from services.inference.arrivals import ArrivalRate, EarlyCut, ForwardCost
from services.inference.batcher import DynamicBatcher
from services.inference.config import InferenceSettings, SettingsError
from services.inference.service import InferenceService
from tests.fake_encoders import FakeEncoder


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


class VirtualClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.t


async def wait_until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


# ------------------------------------------------------------------ the estimates
def test_arrival_rate_from_gaps_and_items_and_a_quiet_spell_lowers_it():
    rate = ArrivalRate(alpha=0.5, max_gap=10.0)
    assert rate.expected(1.0, 0.0) is None  # nothing seen
    rate.observe(0.0)
    assert rate.expected(1.0, 0.0) is None  # one arrival: no gap yet
    for k in range(1, 30):
        rate.observe(k * 0.010)  # one item every 10 ms
    last = 29 * 0.010
    assert rate.expected(0.020, last) == pytest.approx(2.0)
    # nothing for 100 ms: the current gap is at least that long
    assert rate.expected(0.020, last + 0.100) == pytest.approx(0.2)
    for k in range(30, 60):
        rate.observe(k * 0.010, items=3)  # now three items per arrival
    assert rate.expected(0.020, 59 * 0.010) == pytest.approx(6.0, rel=1e-3)


def test_one_long_gap_is_capped_so_a_burst_after_idling_counts_as_a_burst():
    rate = ArrivalRate(alpha=0.5, max_gap=0.25)
    rate.observe(0.0)
    rate.observe(3600.0)  # an hour of nothing
    assert rate.gap == pytest.approx(0.25)
    for k in range(1, 8):
        rate.observe(3600.0 + k * 0.001)
    assert rate.gap < 0.003
    with pytest.raises(ValueError):
        ArrivalRate(alpha=0)
    with pytest.raises(ValueError):
        ArrivalRate(max_gap=0)


def test_forward_cost_fits_the_fixed_overhead():
    cost = ForwardCost(alpha=0.1)
    assert cost.overhead() is None
    for n in (4, 4, 4, 4):
        cost.observe(n, 0.02 + 0.001 * n)
    assert cost.overhead() is None  # one size only: overhead and per-item cost cannot be told apart
    for n in (1, 8, 16, 2, 32, 4) * 3:
        cost.observe(n, 0.02 + 0.001 * n)
    assert cost.overhead() == pytest.approx(0.02, rel=1e-6)
    flat = ForwardCost()
    for n in (1, 8, 16, 32) * 3:
        flat.observe(n, 0.001 * n - 0.0005)  # a fit below zero means no fixed cost at all
    assert flat.overhead() == 0.0


def test_early_cut_waits_only_when_the_items_expected_save_more_than_the_wait_costs():
    cut = EarlyCut(ArrivalRate(alpha=1.0, max_gap=10.0))
    assert cut.cut_now("text", waiting=2, room=30, wait_left=0.002, now=0.0) is False  # nothing known
    cut.observe_arrival(0.0, 1)
    cut.observe_arrival(0.001, 1)  # one item per millisecond
    # overhead unknown: wait while at least one item is expected by the deadline
    assert cut.cut_now("text", 2, 30, 0.002, 0.001) is False
    assert cut.cut_now("text", 2, 30, 0.0005, 0.001) is True
    for n in (1, 8, 16, 32):
        cut.observe_forward("text", n, 0.010 + 0.0005 * n)  # 10 ms fixed per forward pass
    # 2 waiting, 2 ms left, 2 expected: 2 x 10 ms saved > 2 x 2 ms of waiting -> wait
    assert cut.cut_now("text", 2, 30, 0.002, 0.001) is False
    # 25 waiting: 2 x 10 ms saved < 25 x 2 ms -> go now
    assert cut.cut_now("text", 25, 30, 0.002, 0.001) is True
    # room for one more only: 1 x 10 ms < 8 x 2 ms -> go now
    assert cut.cut_now("text", 8, 1, 0.002, 0.001) is True
    assert cut.cut_now("text", 8, 0, 0.002, 0.001) is True  # nothing more fits
    # arrivals have stopped 50 ms ago: 0.04 expected -> go now
    assert cut.cut_now("text", 2, 30, 0.002, 0.051) is True
    # another modality's cost is its own: images have no fit yet -> the item-count rule
    assert cut.cut_now("image", 2, 30, 0.002, 0.001) is False


# ------------------------------------------------------------------ in the batcher
#: BATCH_WAIT_MS, in virtual seconds: so long that a batch that waits it out (in real time, the
#: scheduler's own timeout) fails the test, unless the test moves the clock past it
WAIT_S = 600.0


def make(early_cut: bool) -> tuple[DynamicBatcher, VirtualClock, FakeEncoder]:
    """A batcher on a virtual clock, one batch in flight at a time."""
    enc = FakeEncoder()
    clock = VirtualClock()
    b = DynamicBatcher(enc, max_batch_size=16, batch_wait_ms=WAIT_S * 1000, pipeline_depth=1,
                       early_cut=early_cut, clock=clock)
    return b, clock, enc


async def _setup(b: DynamicBatcher, clock: VirtualClock, enc: FakeEncoder, arrival_gap: float,
                 idle_after: float):
    """A batch of one request runs (held); four single-text requests arrive ``arrival_gap`` apart
    meanwhile; ``idle_after`` seconds later the model is free. The callers the last answer could
    bring back (one) have not come back, so without an early cut the four wait out BATCH_WAIT_MS.
    Returns the four callers' tasks."""
    enc.gate.clear()
    warm = asyncio.create_task(b.encode_texts(["warm"], True))
    await wait_until(lambda: enc.seen.prepares)  # cut at once (nobody else to wait for), held
    tasks = []
    for i in range(4):
        with clock.lock:
            clock.t += arrival_gap
        tasks.append(asyncio.create_task(b.encode_texts([f"single {i}"], True)))
        await wait_until(lambda i=i: b.queue_depth == i + 1)
    with clock.lock:
        clock.t += idle_after
    enc.gate.set()
    await warm
    await wait_until(lambda: b._in_pipeline == 0)
    return tasks


def advance(b: DynamicBatcher, clock: VirtualClock, dt: float) -> None:
    with b._cond:
        with clock.lock:
            clock.t += dt
        b._cond.notify_all()


def test_without_early_cut_a_partial_batch_waits_out_batch_wait_ms():
    b, clock, enc = make(False)

    async def main():
        tasks = await _setup(b, clock, enc, arrival_gap=0.5, idle_after=0.5)
        with b._cond:
            modality, timeout = b._due_modality(clock())
        assert modality is None and timeout == pytest.approx(WAIT_S)  # the whole wait, from going idle
        assert b.queue_depth == 4
        advance(b, clock, WAIT_S)
        await asyncio.gather(*tasks)
        await b.close()

    run(main())
    assert enc.seen.sizes("text") == [1, 4]
    assert b.early_cut is False


def test_slow_arrivals_cut_the_partial_batch_without_waiting():
    b, clock, enc = make(True)

    async def main():
        # one arrival per 1000 s, then 1000 s without any: 0.6 items expected in the 600 s left
        tasks = await _setup(b, clock, enc, arrival_gap=1000.0, idle_after=1000.0)
        await asyncio.gather(*tasks)  # the virtual clock never reaches the deadline
        await b.close()

    run(main())
    assert enc.seen.sizes("text") == [1, 4]
    assert b.early_cut is True


def test_fast_arrivals_keep_the_wait_then_the_deadline_cuts():
    b, clock, enc = make(True)

    async def main():
        # one arrival per millisecond: many more expected within the wait
        tasks = await _setup(b, clock, enc, arrival_gap=0.001, idle_after=0.001)
        with b._cond:
            modality, timeout = b._due_modality(clock())
        assert modality is None and timeout == pytest.approx(WAIT_S)
        assert b.queue_depth == 4
        advance(b, clock, WAIT_S)
        await asyncio.gather(*tasks)
        await b.close()

    run(main())
    assert enc.seen.sizes("text") == [1, 4]


def test_an_arrival_that_makes_the_batch_due_wakes_the_scheduler():
    """Fast arrivals keep the batch waiting; an arrival after a long quiet spell shows the rate has
    dropped, and the batch (now five) goes at once."""
    b, clock, enc = make(True)

    async def main():
        tasks = await _setup(b, clock, enc, arrival_gap=0.001, idle_after=0.001)
        with b._cond:
            assert b._due_modality(clock())[0] is None
            b._returning = 99  # as if many callers were still to come back: only the rate can cut early
        with clock.lock:
            clock.t += WAIT_S - 1  # not yet at the deadline; with 1 s left, under one item is expected
        tasks.append(asyncio.create_task(b.encode_texts(["late"], True)))
        await asyncio.gather(*tasks)
        await b.close()

    run(main())
    assert enc.seen.sizes("text") == [1, 5]


def test_setting_leaves_it_off_by_default_on_by_choice_and_meta_reports_it():
    on = InferenceService(FakeEncoder(), InferenceSettings.from_env({"MODEL": "m", "BATCH_EARLY_CUT": "1"}))
    off = InferenceService(FakeEncoder(), InferenceSettings.from_env({"MODEL": "m"}))
    try:
        assert on.batcher.early_cut is True and on.limits()["batch_early_cut"] is True
        assert off.batcher.early_cut is False and off.limits()["batch_early_cut"] is False
    finally:
        on.batcher.close_sync()
        off.batcher.close_sync()
    with pytest.raises(SettingsError, match="BATCH_EARLY_CUT"):
        InferenceSettings.from_env({"MODEL": "m", "BATCH_EARLY_CUT": "sometimes"})
