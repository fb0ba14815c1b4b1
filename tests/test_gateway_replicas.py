"""A model served by several replicas behind one name gets its calls spread over all of them."""

from __future__ import annotations

import asyncio

from gateway.inference_client import InferenceClient
from tests.gateway_support import InferenceUnderTest


def test_calls_are_spread_over_every_address_a_target_resolves_to():
    async def scenario():
        async with InferenceUnderTest() as first, InferenceUnderTest() as second:
            # one target, two backends: what a headless Kubernetes Service looks like to gRPC's resolver
            target = "ipv4:" + ",".join((first.address, second.address))
            client = InferenceClient(target, timeout_s=10, concurrency=4, batch_size=1)
            try:
                for i in range(20):
                    await client.vectorize(texts=[f"text {i}"])
            finally:
                await client.close()
            return first.vectorize_calls, second.vectorize_calls

    first_seen, second_seen = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert first_seen + second_seen == 20
    assert first_seen >= 5 and second_seen >= 5, (first_seen, second_seen)  # round robin, not pinned
