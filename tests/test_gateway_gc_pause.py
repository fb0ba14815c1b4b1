"""gateway.gc_pause: the collector is off inside, and back in the state it was found in afterwards."""

from __future__ import annotations

import gc

import pytest

from gateway.gc_pause import gc_paused


@pytest.fixture(autouse=True)
def collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_paused_inside_and_on_again_after_even_on_error():
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_overlapping_pauses_end_with_the_collector_on():
    outer, inner = gc_paused(), gc_paused()
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)  # the first pause ends first (another request, another thread)
    assert gc.isenabled()
    inner.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_found_off_stays_off():
    gc.disable()
    with gc_paused():
        pass
    assert not gc.isenabled()
