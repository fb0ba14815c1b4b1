"""The gRPC front over loopback: Vectorize, Meta, health, error codes, overload, garbage."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from protos import inference_pb2, inference_pb2_grpc
from services.inference.config import CPU_MAX_BATCH_TOKENS, InferenceSettings
from services.inference.grpc_server import SERVICE_NAME
from services.inference.main import start_servers
from services.inference.service import InferenceService
from services.inference.wire import unpack_vectors
from tests.fake_encoders import FakeEncoder


def settings(**kw) -> InferenceSettings:
    base = {"model": "fake", "host": "127.0.0.1", "grpc_port": 0, "http_port": None, "batch_wait_ms": 2}
    base.update(kw)
    return InferenceSettings(**base).validate()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def jpeg(colour, size=(16, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@contextlib.asynccontextmanager
async def serving(target, **kw):
    running = await start_servers(target, settings(**kw))
    channel = grpc.aio.insecure_channel(running.grpc_target)
    try:
        yield running, inference_pb2_grpc.InferenceStub(channel), channel
    finally:
        await channel.close()
        await running.stop(grace=1)


async def expect_error(call, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, (err.value.code(), err.value.details())
    return err.value.details()


def test_vectorize_round_trip_order_and_packed_floats():
    enc = FakeEncoder()
    images = [jpeg((250, 0, 0)), jpeg((0, 0, 250)), jpeg((0, 250, 0))]
    texts = ["a red square", "blue", "green things", "the end"]

    async def main():
        async with serving(enc) as (_, stub, _ch):
            resp = await stub.Vectorize(inference_pb2.VectorizeRequest(texts=texts, images=images))
            raw = await stub.Vectorize(inference_pb2.VectorizeRequest(texts=texts[:1], normalize=False))
            return resp, raw

    resp, raw = run(main())
    assert not enc.closed  # a caller's own encoder stays usable after the servers stop
    d = enc.dimensions
    assert resp.model == enc.info.name and resp.dimensions == d
    assert resp.text_vectors.count == 4 and resp.image_vectors.count == 3
    assert len(resp.text_vectors.data) == 4 * d * 4
    tv = np.frombuffer(resp.text_vectors.data, dtype="<f4").reshape(4, d)
    np.testing.assert_array_equal(tv, unpack_vectors(resp.text_vectors, d))
    for text, vec in zip(texts, tv, strict=True):
        np.testing.assert_allclose(vec, enc.expected_text(text, True), rtol=1e-5, atol=1e-6)
    iv = unpack_vectors(resp.image_vectors, d)
    for data, vec in zip(images, iv, strict=True):
        expected = enc.expected_image(Image.open(io.BytesIO(data)).convert("RGB"), True)
        np.testing.assert_allclose(vec, expected, rtol=1e-5, atol=1e-6)
    assert np.linalg.norm(iv, axis=1) == pytest.approx([1, 1, 1], abs=1e-5)
    np.testing.assert_allclose(
        unpack_vectors(raw.text_vectors, d)[0], enc.expected_text(texts[0], False), rtol=1e-5
    )
    assert raw.image_vectors.count == 0 and raw.image_vectors.data == b""


def test_two_identical_images_get_identical_vectors():
    enc = FakeEncoder()
    img = jpeg((120, 30, 200), size=(33, 17))

    async def main():
        async with serving(enc) as (_, stub, _ch):
            return await stub.Vectorize(inference_pb2.VectorizeRequest(images=[img, jpeg((1, 2, 3)), img]))

    iv = unpack_vectors(run(main()).image_vectors, enc.dimensions)
    assert np.array_equal(iv[0], iv[2])
    assert not np.allclose(iv[0], iv[1])


def test_meta_reports_model_and_limits():
    enc = FakeEncoder(dims=30, normalize=False)

    async def main():
        async with serving(enc, max_batch_size=7, max_queue=99, batch_wait_ms=3.25,
                           batch_early_cut=False) as (_, stub, _ch):
            return await stub.Meta(inference_pb2.MetaRequest())

    meta = run(main())
    assert (meta.name, meta.type, meta.dimensions) == ("fake-bow-histogram", "fake", 30)
    assert list(meta.modalities) == ["text", "image"]
    assert (meta.device, meta.precision, meta.normalize, meta.max_text_tokens) == ("cpu", "fp32", False, 77)
    assert (meta.limits.max_batch_size, meta.limits.max_queue, meta.limits.batch_wait_ms) == (7, 99, 3)
    assert meta.limits.batch_wait_us == 3250
    assert meta.limits.max_image_pixels == 40_000_000 and meta.limits.max_items_per_request == 1024
    # MAX_BATCH_TOKENS unset: the CPU default is what the batcher uses, and what Meta reports
    assert meta.limits.max_batch_tokens == CPU_MAX_BATCH_TOKENS
    assert meta.limits.batch_early_cut is False


def test_health_not_serving_until_the_model_is_attached():
    enc = FakeEncoder()
    s = settings()

    async def main():
        service = InferenceService(None, s)
        async with serving(service) as (running, stub, channel):
            health = health_pb2_grpc.HealthStub(channel)
            before = [
                (await health.Check(health_pb2.HealthCheckRequest(service=name))).status
                for name in ("", SERVICE_NAME)
            ]
            loading = await expect_error(
                stub.Vectorize(inference_pb2.VectorizeRequest(texts=["x"])), grpc.StatusCode.UNAVAILABLE
            )
            meta_loading = await expect_error(
                stub.Meta(inference_pb2.MetaRequest()), grpc.StatusCode.UNAVAILABLE
            )
            await running.attach(enc, owned=True)
            after = [
                (await health.Check(health_pb2.HealthCheckRequest(service=name))).status
                for name in ("", SERVICE_NAME)
            ]
            unknown = await expect_error(
                health.Check(health_pb2.HealthCheckRequest(service="nope")), grpc.StatusCode.NOT_FOUND
            )
            resp = await stub.Vectorize(inference_pb2.VectorizeRequest(texts=["x"]))
            return before, loading, meta_loading, after, unknown, resp

    before, loading, meta_loading, after, _, resp = run(main())
    NOT_SERVING, SERVING = health_pb2.HealthCheckResponse.NOT_SERVING, health_pb2.HealthCheckResponse.SERVING
    assert before == [NOT_SERVING, NOT_SERVING]
    assert "loading" in loading and "loading" in meta_loading
    assert after == [SERVING, SERVING]
    assert resp.text_vectors.count == 1
    assert enc.closed  # the service owned the model it was handed by the loader, and released it


def test_errors_map_to_invalid_argument_naming_the_item():
    enc = FakeEncoder()
    text_only = FakeEncoder(modalities=("text",), name="text-only")

    async def main():
        out = {}
        async with serving(enc, max_items_per_request=5) as (_, stub, _ch):

            def call(**kw):
                return stub.Vectorize(inference_pb2.VectorizeRequest(**kw))

            code = grpc.StatusCode.INVALID_ARGUMENT
            out["empty"] = await expect_error(call(), code)
            out["corrupt"] = await expect_error(
                call(texts=["ok"], images=[jpeg((1, 1, 1)), b"garbage"]), code
            )
            out["truncated"] = await expect_error(call(images=[jpeg((9, 9, 9))[:200]]), code)
            out["too_many"] = await expect_error(call(texts=["t"] * 6), code)
            out["ok_after"] = await call(texts=["still fine"], images=[jpeg((5, 5, 5))])
        async with serving(text_only) as (_, stub, _ch):
            out["modality"] = await expect_error(
                stub.Vectorize(inference_pb2.VectorizeRequest(texts=["a"], images=[jpeg((1, 1, 1))])),
                grpc.StatusCode.INVALID_ARGUMENT,
            )
        return out

    out = run(main())
    assert "no texts and no images" in out["empty"]
    assert out["corrupt"].startswith("images[1]: ")
    assert out["truncated"].startswith("images[0]: ")
    assert "MAX_ITEMS_PER_REQUEST" in out["too_many"] and "6 items" in out["too_many"]
    assert out["modality"].startswith("images: ") and "does not embed images" in out["modality"]
    assert out["ok_after"].text_vectors.count == 1 and out["ok_after"].image_vectors.count == 1


def test_oversized_message_is_refused_by_grpc():
    enc = FakeEncoder()

    async def main():
        async with serving(enc, max_request_bytes=1000) as (_, stub, _ch):
            details = await expect_error(
                stub.Vectorize(inference_pb2.VectorizeRequest(images=[b"\xff" * 200_000])),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
            ok = await stub.Vectorize(inference_pb2.VectorizeRequest(texts=["small"]))
            return details, ok

    details, ok = run(main())
    size = inference_pb2.VectorizeRequest(images=[b"\xff" * 200_000]).ByteSize()
    # the receive limit is MAX_REQUEST_BYTES plus 64 KiB for protobuf framing
    assert details.endswith(f"Received message larger than max ({size} vs. {1000 + 64 * 1024})"), details
    assert ok.text_vectors.count == 1


def test_resource_exhausted_when_the_queue_is_full():
    enc = FakeEncoder()

    async def main():
        async with serving(enc, max_queue=2, max_batch_size=1, batch_wait_ms=0) as (running, stub, _ch):
            batcher = running.service.batcher
            enc.gate.clear()

            def call(text):
                return asyncio.ensure_future(stub.Vectorize(inference_pb2.VectorizeRequest(texts=[text])))

            busy = [call("in flight one")]
            await _until(lambda: len(enc.seen.prepares) == 1)
            busy.append(call("in flight two"))
            await _until(lambda: len(enc.seen.prepares) == 2 and batcher.queue_depth == 0)
            busy += [call("queued one"), call("queued two")]
            await _until(lambda: batcher.queue_depth == 2)
            # the model is held: a call that waited for room would wait until the 30 s deadline
            start = time.perf_counter()
            details = await expect_error(
                stub.Vectorize(inference_pb2.VectorizeRequest(texts=["one too many"]), timeout=30),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
            elapsed = time.perf_counter() - start
            enc.gate.set()
            done = await asyncio.gather(*busy)
            return details, elapsed, done, running.service.metrics.render().decode()

    details, elapsed, done, metrics = run(main())
    assert "queue full" in details
    assert elapsed < 15, elapsed  # refused at once; generous for a loaded machine
    assert [r.text_vectors.count for r in done] == [1, 1, 1, 1]
    assert 'polyvec_inference_requests_total{endpoint="grpc.Vectorize",status="overloaded"} 1.0' in metrics


def test_server_survives_garbage():
    enc = FakeEncoder()

    async def main():
        async with serving(enc) as (running, stub, channel):
            # bytes that are not a VectorizeRequest
            raw_call = channel.unary_unary(f"/{SERVICE_NAME}/Vectorize")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await raw_call(b"\xff\xff\xff\xff\x0f not protobuf")
            # a method that does not exist
            missing = channel.unary_unary(f"/{SERVICE_NAME}/Nope")
            with pytest.raises(grpc.aio.AioRpcError) as err2:
                await missing(b"")
            # raw TCP garbage, then hang up
            reader, writer = await asyncio.open_connection("127.0.0.1", running.grpc_port)
            writer.write(b"GET / HTTP/1.1\r\n\r\n" + bytes(range(256)) * 4)
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            ok = await stub.Vectorize(
                inference_pb2.VectorizeRequest(texts=["alive"], images=[jpeg((7, 7, 7))])
            )
            return (err.value.code(), err.value.details()), err2.value.code(), ok

    (code, details), code2, ok = run(main())
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert details.startswith("request: the bytes are not a valid polyvec.inference.v1.VectorizeRequest")
    assert code2 == grpc.StatusCode.UNIMPLEMENTED
    assert ok.text_vectors.count == 1 and ok.image_vectors.count == 1


def test_port_in_use_is_a_clear_error():
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]

    async def main():
        with pytest.raises(OSError, match=f"cannot listen for gRPC on 127.0.0.1:{port}"):
            await start_servers(FakeEncoder(), settings(grpc_port=port))

    try:
        run(main())
    finally:
        blocker.close()


async def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def test_stop_lets_in_flight_calls_finish_then_refuses():
    enc = FakeEncoder(forward_delay=0.05)

    async def main():
        running = await start_servers(enc, settings(max_batch_size=2))
        channel = grpc.aio.insecure_channel(running.grpc_target)
        stub = inference_pb2_grpc.InferenceStub(channel)
        batcher = running.service.batcher
        enc.gate.clear()  # the model holds its first batch until the stop has begun
        calls = [
            asyncio.ensure_future(stub.Vectorize(inference_pb2.VectorizeRequest(texts=[f"in flight {i}"])))
            for i in range(6)
        ]
        # every call has reached the service (its text is prepared or queued): all six are in flight
        await _until(lambda: sum(n for _, n in enc.seen.prepares) + batcher.queue_depth == 6)
        stopping = asyncio.ensure_future(running.stop(grace=5))
        await asyncio.sleep(0.05)
        enc.gate.set()
        await stopping
        results = await asyncio.gather(*calls, return_exceptions=True)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Vectorize(inference_pb2.VectorizeRequest(texts=["after stop"]), timeout=2)
        await channel.close()
        return results

    results = run(main())
    assert all(isinstance(r, inference_pb2.VectorizeResponse) for r in results), results
    assert [r.text_vectors.count for r in results] == [1] * 6
