"""The gateway's grpc.aio inference client against the real inference server (in-process, loopback)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from gateway.inference_client import InferenceClient, InferencePool, InferenceRejected, InferenceUnavailable
from services.inference.service import NotReady
from services.up import free_port
from tests.gateway_support import InferenceUnderTest, png_bytes, png_image


def run(coro):
    return asyncio.run(coro)


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


def test_retries_unavailable_with_backoff():
    async def scenario():
        async with InferenceUnderTest() as inference:
            inference.fail_next(NotReady("warming up"), 2)
            client = InferenceClient(inference.address, retries=3, backoff_s=0.01)
            tv, _ = await client.vectorize(texts=["hello"])
            assert tv.shape[0] == 1
            assert inference.vectorize_calls == 3  # two UNAVAILABLE answers, then success
            inference.fail_next(NotReady("warming up"), 5)
            inference.service.vectorize_calls = 0
            with pytest.raises(InferenceUnavailable) as info:
                await client.vectorize(texts=["hello"])
            assert inference.address in str(info.value)
            assert inference.vectorize_calls == 4  # 1 + 3 retries
            await client.close()

    run(scenario())


def test_rejected_is_not_retried():
    async def scenario():
        async with InferenceUnderTest() as inference:
            client = InferenceClient(inference.address, retries=3)
            with pytest.raises(InferenceRejected, match="images\\[0\\]"):
                await client.vectorize(images=[b"not an image"])
            assert inference.vectorize_calls == 1
            await client.close()

    run(scenario())


def test_down_service_fails_fast_naming_it():
    async def scenario():
        address = f"127.0.0.1:{free_port()}"
        client = InferenceClient(address, timeout_s=5, retries=2, backoff_s=0.01)
        started = time.monotonic()
        with pytest.raises(InferenceUnavailable) as info:
            await client.vectorize(texts=["x"])
        assert time.monotonic() - started < 5
        assert address in str(info.value)
        await client.close()

    run(scenario())


def test_deadline_bounds_a_slow_service():
    async def scenario():
        async with InferenceUnderTest() as inference:
            inference.encoder.gate.clear()  # the model is stuck: only the deadline can end the call
            client = InferenceClient(inference.address, timeout_s=0.5, retries=3, backoff_s=0.01)
            started = time.monotonic()
            with pytest.raises(InferenceUnavailable):
                await client.vectorize(texts=["x"])
            # without the deadline the call would wait for the gate (30 s); one attempt, not one per retry
            assert time.monotonic() - started < 10
            assert inference.vectorize_calls == 1
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
