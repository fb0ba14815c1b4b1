"""How long to keep trying: the retry policy both transports share (decisions in ``_core.Attempts``).

429 and 503 (and 502/504 from a proxy in front; RESOURCE_EXHAUSTED with a retry-after and UNAVAILABLE
over gRPC) are retried with full-jitter exponential backoff, or after the gateway's ``Retry-After`` when
it sends one, within a time budget; so are requests that never reached the gateway (connection
refused). A request that may have been processed (the connection broke after sending) is retried only
when it is idempotent.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying: ``attempts`` tries at most, within ``budget_s`` seconds."""

    attempts: int = 10
    backoff_s: float = 0.2
    max_backoff_s: float = 10.0
    budget_s: float = 120.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before try ``attempt + 1`` (attempt counts from 0)."""
        if retry_after is not None:
            return retry_after * random.uniform(1.0, 1.2) + random.uniform(0.0, 0.05)
        return random.uniform(0.0, min(self.max_backoff_s, self.backoff_s * 2 ** attempt))
