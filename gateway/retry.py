"""Retrying inside a time budget, with jittered exponential backoff.

A call that the peer refused for a passing reason (its queue is full, it is restarting) is tried again
after a pause that doubles each time, from ``base_s`` up to ``max_s``, with "equal jitter" (half of the
pause fixed, half random) so that many callers refused together do not all come back together. The
retries stop once ``budget_s`` seconds have passed since the first attempt; the last pause is shortened
so that one more attempt lands at the end of the budget.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base_s: float = 0.05
    max_s: float = 1.0
    rng: random.Random = field(default_factory=random.Random)

    def ceiling(self, attempt: int) -> float:
        """The longest pause before retry number ``attempt`` (1, 2, ...)."""
        return min(self.max_s, self.base_s * 2 ** max(0, attempt - 1))

    def pause(self, attempt: int) -> float:
        """The pause before retry number ``attempt``: between half the ceiling and the ceiling."""
        cap = self.ceiling(attempt)
        return cap / 2 + self.rng.uniform(0, cap / 2)


class Budget:
    """The retry budget of one call: ``next_pause()`` says how long to wait, or None to give up."""

    def __init__(self, budget_s: float, backoff: Backoff,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.budget_s = max(0.0, budget_s)
        self.backoff = backoff
        self.clock = clock
        self.started = clock()
        self.retries = 0

    @property
    def remaining_s(self) -> float:
        return self.budget_s - (self.clock() - self.started)

    def next_pause(self) -> float | None:
        remaining = self.remaining_s
        if remaining <= 0:
            return None
        self.retries += 1
        return min(self.backoff.pause(self.retries), remaining)
