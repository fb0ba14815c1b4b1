"""The gateway's grpc.aio inference client against a real gRPC server on loopback."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from gateway.inference_client import InferenceClient, InferencePool, InferenceRejected, InferenceUnavailable
from services.up import free_port
from tests.fake_inference import FakeInferenceServer, png_bytes, text_vector


def run(coro):
    return asyncio.run(coro)


def test_meta_and_vectors_in_order():
    async def scenario():
        async with FakeInferenceServer(dims=16) as fake:
            client = InferenceClient(fake.address, batch_size=3)
            meta = await client.meta()
            assert (meta.dimensions, meta.name, meta.modalities) == (16, "fake-clip", ["text", "image"])
            texts = [f"word{i} shared" for i in range(7)]
            tv, iv = await client.vectorize(texts=texts, images=[png_bytes("red"), png_bytes("blue")])
            assert tv.shape == (7, 16) and iv.shape == (2, 16)
            for i, t in enumerate(texts):
                assert np.allclose(tv[i], text_vector(t, 16), atol=1e-6)
            assert np.allclose(iv[0], text_vector("red", 16), atol=1e-6)
            # 7 texts in calls of 3 -> 3 calls, 2 images -> 1 call
            assert fake.servicer.vectorize_calls == 4
            await client.close()

    run(scenario())


def test_retries_unavailable_with_backoff():
    async def scenario():
        async with FakeInferenceServer() as fake:
            fake.servicer.fail_next_unavailable = 2
            client = InferenceClient(fake.address, retries=3, backoff_s=0.01)
            tv, _ = await client.vectorize(texts=["hello"])
            assert tv.shape[0] == 1
            assert fake.servicer.vectorize_calls == 3  # two UNAVAILABLE answers, then success
            fake.servicer.fail_next_unavailable = 5
            fake.servicer.vectorize_calls = 0
            with pytest.raises(InferenceUnavailable) as info:
                await client.vectorize(texts=["hello"])
            assert fake.address in str(info.value)
            assert fake.servicer.vectorize_calls == 4  # 1 + 3 retries
            await client.close()

    run(scenario())


def test_rejected_is_not_retried():
    async def scenario():
        async with FakeInferenceServer() as fake:
            client = InferenceClient(fake.address, retries=3)
            with pytest.raises(InferenceRejected, match="images\\[0\\]"):
                await client.vectorize(images=[b"not an image"])
            assert fake.servicer.vectorize_calls == 1
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
        async with FakeInferenceServer(delay_s=3.0) as fake:
            client = InferenceClient(fake.address, timeout_s=0.5, retries=3, backoff_s=0.01)
            started = time.monotonic()
            with pytest.raises(InferenceUnavailable):
                await client.vectorize(texts=["x"])
            assert time.monotonic() - started < 1.5  # the deadline covers the retries too
            await client.close()

    run(scenario())


def test_concurrency_is_bounded_per_address():
    async def scenario():
        async with FakeInferenceServer(delay_s=0.05) as fake:
            pool = InferencePool(concurrency=2, batch_size=1)
            client = pool.get(fake.address)
            assert pool.get(fake.address) is client  # one client (one channel) per address
            tv, _ = await client.vectorize(texts=[f"t{i}" for i in range(8)])
            assert tv.shape[0] == 8
            assert fake.servicer.vectorize_calls == 8
            assert fake.servicer.max_in_flight == 2
            await pool.close()

    run(scenario())
