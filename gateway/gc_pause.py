"""Python's cyclic garbage collector paused while a page of many short-lived objects is built."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for a stretch of synchronous work (no waiting inside).

    A scrolled page of 1,000 objects makes some 6,000 dicts and records that live until the page is
    written. With the collector on, they trigger collections of the young generations and, surviving
    those, push the oldest generation into full collections that walk the gateway's whole heap:
    15-25% of the gateway's CPU in a 30,000-object export (bench/client_io.py export). These objects
    hold no reference cycles, so nothing waits for the collector, which runs as usual afterwards.
    Overlapping pauses (other threads) are safe: whoever found it on turns it back on.
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
