"""The gateway's grpc.aio inference client against the real inference server (in-process, loopback)."""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np
import pytest

from gateway.inference_client import (
    InferenceBusy,
    InferenceClient,
    InferencePool,
    InferenceRejected,
    InferenceTooLarge,
    InferenceUnavailable,
)
from gateway.retry import Backoff
from services.inference.service import NotReady, Overloaded
from services.up import free_port
from tests.gateway_support import InferenceUnderTest, png_bytes, png_image

FAST = Backoff(base_s=0.01, max_s=0.05, rng=random.Random(7))


def run(coro, timeout: float = 120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(predicate, timeout: float = 60.0) -> None:
    """Wait for ``predicate()`` to hold (polling the event loop), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_meta_and_vectors_in_order():
    async def scenario():
        async with InferenceUnderTest(dims=16) as inference:
            client = InferenceClient(inference.address, batch_size=3)
            meta = await client.meta()
            assert (meta.dimensions, meta.name, meta.modalities) == (16, "fake-clip", ["text", "image"])
            texts = [f"word{i} shared" for i in range(7)]
            tv, iv = await client.vectorize(texts=texts, images=[png_bytes("red"), png_bytes("blue")])
            assert tv.shape == (7, 16) and iv.shape == (2, 16)
            for i, t in enumerate(texts):
                assert np.allclose(tv[i], inference.text_vector(t), atol=1e-6)
            assert np.allclose(iv[0], inference.image_vector(png_image("red")), atol=1e-6)
            assert np.allclose(iv[1], inference.image_vector(png_image("blue")), atol=1e-6)
            # 7 texts in calls of 3 -> 3 calls, 2 images -> 1 call
            assert inference.vectorize_calls == 4
            await client.close()

    run(scenario())


def test_calls_are_sized_to_the_limits_the_service_states_in_meta():
    async def scenario():
        async with InferenceUnderTest(max_items_per_request=5, max_queue=8,
                                      max_request_bytes=1000) as inference:
            client = InferenceClient(inference.address, batch_size=64, concurrency=2)
            meta = await client.meta()
            assert (meta.max_items_per_request, meta.max_queue, meta.max_request_bytes) == (5, 8, 1000)
            # items per call: min(batch 64, 5 per request, queue 8 / 2 calls in flight) = 4
            tv, _ = await client.vectorize(texts=[f"t{i}" for i in range(10)])
            assert tv.shape[0] == 10
            assert inference.service.call_sizes == [4, 4, 2]
            # bytes per call: 300-byte texts, 1000 bytes a request -> 3 a call
            inference.service.call_sizes.clear()
            await client.vectorize(texts=[f"{i}" + "x" * 299 for i in range(7)])
            assert inference.service.call_sizes == [3, 3, 1]
            assert inference.service.max_items_in_flight <= 8 and inference.service.refused == 0
            await client.close()

    run(scenario())


def test_an_item_that_can_never_fit_is_refused_at_once_naming_it():
    async def scenario():
        async with InferenceUnderTest(max_request_bytes=1000) as inference:
            client = InferenceClient(inference.address)
            with pytest.raises(InferenceTooLarge) as info:
                await client.vectorize(texts=["small", "é" * 600])  # 1200 bytes of UTF-8
            assert info.value.kind == "texts" and info.value.index == 1
            assert "1200 bytes" in info.value.message and "MAX_REQUEST_BYTES" in info.value.message
            assert inference.address in info.value.message
            assert inference.vectorize_calls == 0  # no call was made
            assert client.oversize(b"x" * 1000) is None and client.oversize(b"x" * 1001) is not None
            await client.close()

    run(scenario())


def test_resource_exhausted_is_backpressure_retried_inside_the_budget():
    async def scenario():
        async with InferenceUnderTest() as inference:
            client = InferenceClient(inference.address, retry_budget_s=60, backoff=FAST)
            inference.fail_next(Overloaded("queue full: test"), 6)  # more than the old fixed 3 retries
            tv, _ = await client.vectorize(texts=["hello"])
            assert tv.shape[0] == 1
            assert inference.vectorize_calls == 7 and client.retries == 6
            # a spent budget: the last refusal comes out as InferenceBusy (429), not as an outage
            inference.fail_next(Overloaded("queue full: test"), 1000)
            with pytest.raises(InferenceBusy) as info:
                await client.vectorize(texts=["hello"], budget_s=0.2)
            assert "queue full: test" in info.value.message and "0.2 s" in info.value.message
            assert info.value.retry_after_s >= 1 and not info.value.shed
            # budget 0: one attempt only
            calls = inference.vectorize_calls
            with pytest.raises(InferenceBusy):
                await client.vectorize(texts=["hello"], budget_s=0)
            assert inference.vectorize_calls == calls + 1
            await client.close()

    run(scenario())


def test_unavailable_is_retried_inside_the_budget_and_named_when_spent():
    async def scenario():
        async with InferenceUnderTest() as inference:
            inference.fail_next(NotReady("warming up"), 4)
            client = InferenceClient(inference.address, retry_budget_s=60, backoff=FAST)
            tv, _ = await client.vectorize(texts=["hello"])
            assert tv.shape[0] == 1 and inference.vectorize_calls == 5
            inference.fail_next(NotReady("warming up"), 1000)
            with pytest.raises(InferenceUnavailable) as info:
                await client.vectorize(texts=["hello"], budget_s=0.2)
            assert not isinstance(info.value, InferenceBusy)
            assert inference.address in str(info.value) and "warming up" in str(info.value)
            await client.close()

    run(scenario())


def test_a_call_survives_a_restart_of_the_service_inside_the_budget():
    async def scenario():
        async with InferenceUnderTest() as inference:
            client = InferenceClient(inference.address, retry_budget_s=60, backoff=FAST)
            await client.vectorize(texts=["before"])
            await inference.stop()
            call = asyncio.create_task(client.vectorize(texts=["during", "the restart"]))
            await until(lambda: client.retries >= 3)  # refused while the service is down
            assert not call.done()
            await inference.start()  # back on the same port
            tv, _ = await call
            assert tv.shape[0] == 2
            assert inference.texts_seen == ["during", "the restart"]
            await client.close()

    run(scenario())


def test_rejected_is_not_retried():
    async def scenario():
        async with InferenceUnderTest() as inference:
            client = InferenceClient(inference.address, backoff=FAST)
            with pytest.raises(InferenceRejected, match="images\\[0\\]"):
                await client.vectorize(images=[b"not an image"])
            assert inference.vectorize_calls == 1 and client.retries == 0
            await client.close()

    run(scenario())


def test_down_service_gives_up_after_the_budget_naming_it():
    async def scenario():
        address = f"127.0.0.1:{free_port()}"
        client = InferenceClient(address, timeout_s=60, retry_budget_s=0.3, backoff=FAST)
        started = time.monotonic()
        with pytest.raises(InferenceUnavailable) as info:
            await client.vectorize(texts=["x"])
        assert time.monotonic() - started < 30  # the budget, not the 60 s deadline
        assert address in str(info.value) and "0.3 s" in str(info.value)
        assert client.retries >= 1
        await client.close()

    run(scenario())


def test_deadline_bounds_a_stuck_service_and_is_not_retried():
    async def scenario():
        async with InferenceUnderTest() as inference:
            inference.encoder.gate.clear()  # the model is stuck: only the deadline can end the call
            client = InferenceClient(inference.address, timeout_s=0.5, retry_budget_s=60, backoff=FAST)
            started = time.monotonic()
            with pytest.raises(InferenceUnavailable, match="no answer within 0.5 s"):
                await client.vectorize(texts=["x"])
            # without the deadline the call would wait for the gate (30 s); one attempt, not one per retry
            assert time.monotonic() - started < 10
            assert inference.vectorize_calls == 1 and client.retries == 0
            await client.close()

    run(scenario())


def test_concurrency_is_bounded_per_address():
    async def scenario():
        async with InferenceUnderTest(forward_delay=0.05) as inference:
            pool = InferencePool(concurrency=2, batch_size=1)
            client = pool.get(inference.address)
            assert pool.get(inference.address) is client  # one client (one channel) per address
            tv, _ = await client.vectorize(texts=[f"t{i}" for i in range(8)])
            assert tv.shape[0] == 8
            assert inference.vectorize_calls == 8
            assert inference.service.max_in_flight == 2
            await pool.close()

    run(scenario())


def test_requests_past_the_waiting_bound_are_shed_at_once():
    async def scenario():
        async with InferenceUnderTest() as inference:
            inference.encoder.gate.clear()  # hold the model: calls pile up
            client = InferenceClient(inference.address, concurrency=1, max_waiting=2)
            held = [asyncio.create_task(client.vectorize(texts=[f"q{i}"])) for i in range(3)]
            await until(lambda: client.admission.active == 3 and client.slots.waiting == 2)
            with pytest.raises(InferenceBusy) as info:
                await client.vectorize(texts=["one too many"])
            assert info.value.shed and info.value.retry_after_s >= 1
            assert "INFERENCE_MAX_WAITING" in info.value.message
            assert client.admission.shed == 1
            inference.encoder.gate.set()
            for task in held:
                assert (await task)[0].shape[0] == 1
            assert client.admission.active == 0
            await client.vectorize(texts=["after the crowd"])  # recovered
            assert "one too many" not in inference.texts_seen
            await client.close()

    run(scenario())


def test_one_request_counts_once_however_many_calls_it_makes():
    async def scenario():
        async with InferenceUnderTest() as inference:
            client = InferenceClient(inference.address, concurrency=1, max_waiting=0, batch_size=2)
            async with client.admitted():
                assert client.admission.active == 1
                # ten calls of two items, from several tasks: all within the one admitted request
                outs = await asyncio.gather(*(client.vectorize(texts=[f"a{i}", f"b{i}"]) for i in range(5)))
                assert all(tv.shape[0] == 2 for tv, _ in outs)
                with pytest.raises(InferenceBusy):  # another request does not fit beside it
                    await asyncio.create_task(_outside(client))
            assert client.admission.active == 0
            await client.close()

    async def _outside(client):
        from gateway.call_slots import _ADMITTED

        _ADMITTED.set(frozenset())  # a request of its own (its task does not share the admission)
        return await client.vectorize(texts=["other"])

    run(scenario())
