"""Progress of a long import or export: a bar on a terminal, plain periodic lines anywhere else.

The bar (tqdm) shows objects done, objects/s, the ETA when the total is known, and the running count of
failed objects. When the stream is not a terminal (a log file, CI, a pipe) a line like
``import products: 12,000 objects (40%), 1,950 objects/s, ETA 0:00:09, 3 failed`` is written every
``interval_s`` seconds and once at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

ProgressCallback = Callable[[int, int], None]  # (objects done, objects failed)


def _eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """``update(done, failed)`` with running totals; ``close()`` at the end."""

    def __init__(self, label: str, total: int | None = None, *, stream: IO[str] | None = None,
                 bar: bool | None = None, interval_s: float = 5.0, failures: bool = True) -> None:
        self.label = label
        self.failures = failures
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        if bar is None:
            isatty = getattr(self.stream, "isatty", None)
            bar = bool(isatty and isatty())
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.last_line = self.started
        self.done = 0
        self.failed = 0
        self._bar: Any = None
        self._closed = False
        if bar:
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm is a dependency
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=label, unit=" obj", unit_scale=True, file=self.stream,
                                 dynamic_ncols=True, smoothing=0.05, mininterval=0.2)

    def update(self, done: int, failed: int = 0) -> None:
        step = done - self.done
        self.done, self.failed = done, failed
        if self._bar is not None:
            if self.failures:
                self._bar.set_postfix_str(f"{failed:,} failed", refresh=False)
            self._bar.update(step)
            return
        now = time.monotonic()
        if now - self.last_line >= self.interval_s:
            self.last_line = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = max(1e-9, now - self.started)
        rate = self.done / elapsed
        parts = [f"{self.label}: {self.done:,} objects"]
        if self.total:
            parts[0] += f" ({100.0 * self.done / self.total:.0f}%)"
        parts.append(f"{rate:,.0f} objects/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {_eta((self.total - self.done) / rate)}")
        if self.failures:
            parts.append(f"{self.failed:,} failed")
        print(", ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        else:
            self._line(time.monotonic())


def make_progress(progress: bool | ProgressCallback | Progress, label: str,
                  total: int | None) -> tuple[ProgressCallback | None, Callable[[], None]]:
    """(update, close) for ``progress``: True = a :class:`Progress` on stderr, False = none, or yours."""
    if progress is False or progress is None:
        return None, lambda: None
    if progress is True:
        reporter = Progress(label, total)
        return reporter.update, reporter.close
    if isinstance(progress, Progress):
        return progress.update, progress.close
    return progress, lambda: None
