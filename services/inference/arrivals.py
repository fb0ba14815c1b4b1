"""When to stop waiting for a batch to fill: an arrival-rate estimate and a forward-pass cost model.

The batcher holds a partial batch for up to ``BATCH_WAIT_MS`` while the model is idle, hoping
more items arrive. :class:`EarlyCut` decides, from what it has seen, whether the rest of that
wait can pay off:

* :class:`ArrivalRate` keeps an exponentially weighted mean of the gaps between arrivals and of
  the items each arrival brings, so ``expected(window, now)`` is the number of items expected
  within ``window`` seconds. A quiet spell longer than the mean gap counts as the current gap.
* :class:`ForwardCost` fits a forward pass's time as ``overhead + per_item * n`` by exponentially
  weighted least squares over recent batches (per modality).

With ``n`` items waiting, ``w`` seconds of wait left and ``E`` items expected by then (at most
what still fits in the batch), cutting now costs the model ``(a + b*n) / n`` per item and
waiting costs ``(w + a + b*(n + E)) / (n + E)`` (the idle wait is model time spent too), so
waiting pays only if ``E * a > n * w``: the items gained must save more fixed overhead than the
wait costs. Until the overhead is known, the batch is cut when less than one item is expected.

Everything takes explicit timestamps (no clock of its own), so tests drive it with a virtual one.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ArrivalRate:
    """Arrivals per second, from an exponentially weighted mean of inter-arrival gaps.

    ``max_gap`` caps one gap (a long idle spell is "slow", not "slow for the next hundred
    arrivals"); it should exceed any wait the estimate is asked about.
    """

    def __init__(self, *, alpha: float = 0.25, max_gap: float = 0.25) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        if max_gap <= 0:
            raise ValueError("max_gap must be > 0")
        self.alpha = alpha
        self.max_gap = max_gap
        self.last: float | None = None
        self.gap: float | None = None  # mean seconds between arrivals
        self.items = 1.0  # mean items per arrival

    def observe(self, now: float, items: int = 1) -> None:
        """An arrival of ``items`` items at ``now``."""
        a = self.alpha
        if self.last is not None:
            gap = min(max(0.0, now - self.last), self.max_gap)
            self.gap = gap if self.gap is None else (1 - a) * self.gap + a * gap
            self.items = (1 - a) * self.items + a * items
        else:
            self.items = float(items)
        self.last = now if self.last is None else max(self.last, now)

    def expected(self, window: float, now: float) -> float | None:
        """Items expected to arrive within the next ``window`` seconds (None: not enough seen yet)."""
        if self.gap is None or self.last is None:
            return None
        gap = max(self.gap, now - self.last)  # a quiet spell longer than usual lowers the rate
        if gap <= 0:
            return float("inf") if window > 0 else 0.0
        return max(0.0, window) / gap * self.items


class ForwardCost:
    """``seconds = overhead + per_item * n``, fitted by exponentially weighted least squares."""

    def __init__(self, *, alpha: float = 0.1) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha = alpha
        self._w = self._x = self._y = self._xx = self._xy = 0.0

    def observe(self, n: int, seconds: float) -> None:
        decay = 1.0 - self.alpha
        x, y = float(n), float(seconds)
        self._w = decay * self._w + 1.0
        self._x = decay * self._x + x
        self._y = decay * self._y + y
        self._xx = decay * self._xx + x * x
        self._xy = decay * self._xy + x * y

    def overhead(self) -> float | None:
        """The fixed seconds per forward pass (>= 0), or None while the batch sizes seen are too
        alike to tell overhead from per-item cost."""
        w = self._w
        if w <= 0:
            return None
        mean_x = self._x / w
        var_x = self._xx / w - mean_x * mean_x
        if var_x < 0.25:  # sizes within about one item of each other: no slope to fit
            return None
        slope = (self._xy / w - mean_x * self._y / w) / var_x
        return max(0.0, self._y / w - slope * mean_x)


@dataclass
class EarlyCut:
    """Whether a partial batch should go now rather than wait out ``BATCH_WAIT_MS`` (see module doc)."""

    rate: ArrivalRate = field(default_factory=ArrivalRate)
    costs: dict[str, ForwardCost] = field(default_factory=dict)

    def observe_arrival(self, now: float, items: int) -> None:
        self.rate.observe(now, items)

    def observe_forward(self, modality: str, n: int, seconds: float) -> None:
        self.costs.setdefault(modality, ForwardCost()).observe(n, seconds)

    def cut_now(self, modality: str, waiting: int, room: int, wait_left: float, now: float) -> bool:
        """``waiting`` items of ``modality`` wait, ``room`` more would fit in the batch, and the wait
        ends in ``wait_left`` seconds: True when waiting is not expected to raise throughput."""
        if wait_left <= 0 or room <= 0:
            return True
        expected = self.rate.expected(wait_left, now)
        if expected is None:
            return False  # nothing known yet: keep the configured wait
        gain = min(expected, float(room))
        cost = self.costs.get(modality)
        overhead = cost.overhead() if cost is not None else None
        if overhead is None:
            return gain < 1.0
        return gain * overhead <= waiting * wait_left
