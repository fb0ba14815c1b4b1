"""DynamicBatcher: results per caller and in order, real cross-request batching, length grouping,
bounded queue, failure isolation, cancellation, the no-batching switch and shutdown."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from PIL import Image

from services.inference.batcher import BatcherClosed, BatchFailed, DynamicBatcher, QueueFull
from tests.fake_encoders import FakeEncoder


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def make(enc: FakeEncoder, **kw) -> DynamicBatcher:
    opts = {"max_batch_size": 16, "batch_wait_ms": 20, "max_queue": 1024, "prep_threads": 2}
    opts.update(kw)
    return DynamicBatcher(enc, **opts)


def test_many_concurrent_callers_get_their_own_vectors_in_order():
    enc = FakeEncoder(forward_delay=0.01)

    async def main():
        b = make(enc)
        requests = [[f"caller {i} item {j} {'word ' * (i % 5)}" for j in range(1 + i % 3)] for i in range(60)]
        results = await asyncio.gather(*(b.encode_texts(texts, normalize=True) for texts in requests))
        await b.close()
        return requests, results

    requests, results = run(main())
    for texts, vectors in zip(requests, results, strict=True):
        assert vectors.dtype == np.float32 and vectors.shape == (len(texts), enc.dimensions)
        for text, vec in zip(texts, vectors, strict=True):
            np.testing.assert_allclose(vec, enc.expected_text(text, True), rtol=1e-5, atol=1e-6)
    sizes = enc.seen.sizes("text")
    assert sum(sizes) == sum(len(t) for t in requests)
    assert max(sizes) > 1 and len(sizes) < len(requests), sizes  # requests were combined
    assert max(sizes) <= 16
    assert enc.seen.forward_threads == {"polyvec-model"}  # ONE model thread
    assert enc.seen.prepare_threads and all(t.startswith("polyvec-prep") for t in enc.seen.prepare_threads)


def test_texts_and_images_are_batched_separately_and_routed_back():
    enc = FakeEncoder(forward_delay=0.005)
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)]

    async def main():
        b = make(enc)
        jobs = []
        for i in range(24):
            images = [Image.new("RGB", (8 + i, 8), colours[(i + k) % 4]) for k in range(i % 3)]
            texts = [f"text {i} {k}" for k in range((i + 1) % 3)]
            jobs.append((texts, images, b.encode(texts, images, normalize=bool(i % 2))))
        out = await asyncio.gather(*(j[2] for j in jobs))
        await b.close()
        return jobs, out

    jobs, out = run(main())
    for i, ((texts, images, _), (tv, iv)) in enumerate(zip(jobs, out, strict=True)):
        assert tv.shape == (len(texts), enc.dimensions) and iv.shape == (len(images), enc.dimensions)
        for t, v in zip(texts, tv, strict=True):
            np.testing.assert_allclose(v, enc.expected_text(t, bool(i % 2)), rtol=1e-5, atol=1e-5)
        for im, v in zip(images, iv, strict=True):
            np.testing.assert_allclose(v, enc.expected_image(im, bool(i % 2)), rtol=1e-5, atol=1e-5)
    modalities = {m for m, _ in enc.seen.batches}
    assert modalities == {"text", "image"}
    assert max(enc.seen.sizes("image")) > 1


def test_normalisation_is_per_request_within_one_batch():
    enc = FakeEncoder()

    async def main():
        b = make(enc, batch_wait_ms=200)
        raw, unit = await asyncio.gather(
            b.encode_texts(["alpha beta"], False), b.encode_texts(["gamma"], True)
        )
        await b.close()
        return raw, unit

    raw, unit = run(main())
    assert enc.seen.sizes() == [2]  # one forward pass for both
    np.testing.assert_allclose(raw[0], enc.expected_text("alpha beta", False), rtol=1e-6)
    assert abs(np.linalg.norm(raw[0]) - 1.0) > 0.1
    assert abs(np.linalg.norm(unit[0]) - 1.0) < 1e-5


def test_texts_grouped_by_similar_length():
    enc = FakeEncoder()
    short = [" ".join(["s"] * n) for n in (1, 2, 3, 4)]
    long = [" ".join(["l"] * n) for n in (40, 41, 42, 43)]
    interleaved = [x for pair in zip(short, long, strict=True) for x in pair]

    async def main():
        b = make(enc, max_batch_size=4, batch_wait_ms=0, pipeline_depth=1)
        enc.gate.clear()  # hold the model: one single-item batch fills the pipeline
        first = [asyncio.create_task(b.encode_texts(["hold one"], True))]
        await wait_until(lambda: b.queue_depth == 0 and len(enc.seen.prepares) == 1)
        rest = [asyncio.create_task(b.encode_texts([t], True)) for t in interleaved]
        await wait_until(lambda: b.queue_depth == len(interleaved))
        enc.gate.set()
        results = await asyncio.gather(*first, *rest)
        await b.close()
        return results

    results = run(main())
    for text, vec in zip(interleaved, results[1:], strict=True):
        np.testing.assert_allclose(vec[0], enc.expected_text(text, True), rtol=1e-5, atol=1e-6)
    batches = [sorted(batch) for batch in enc.seen.text_batches]
    assert batches[:1] == [["hold one"]]
    assert sorted(map(tuple, batches[1:])) == sorted([tuple(sorted(short)), tuple(sorted(long))]), batches


def test_queue_full_fails_at_once_and_recovers():
    enc = FakeEncoder()

    async def main():
        b = make(enc, max_batch_size=1, batch_wait_ms=0, max_queue=4, pipeline_depth=1)
        enc.gate.clear()
        running = asyncio.create_task(b.encode_texts(["in flight"], True))
        await wait_until(lambda: b.queue_depth == 0 and enc.seen.prepares)
        waiting = [asyncio.create_task(b.encode_texts([f"w{i}"], True)) for i in range(2)]
        await wait_until(lambda: b.queue_depth == 2)
        # refused at once: the call raises on its first step, before it ever waits (2 + 3 > 4)
        call = b.encode_texts(["a", "b", "c"], True)
        with pytest.raises(QueueFull, match="limit is 4"):
            call.send(None)
        assert b.queue_depth == 2  # the refused request left nothing behind
        fits = asyncio.create_task(b.encode_texts(["x", "y"], True))  # 2 + 2 == 4 still fits
        await wait_until(lambda: b.queue_depth == 4)
        enc.gate.set()
        done = await asyncio.gather(running, *waiting, fits)
        after = await b.encode_texts(["after"], True)
        await b.close()
        return done, after

    done, after = run(main())
    assert [d.shape[0] for d in done] == [1, 1, 1, 2]
    np.testing.assert_allclose(after[0], enc.expected_text("after", True), rtol=1e-5, atol=1e-6)


def test_a_failing_batch_fails_only_its_own_requests():
    enc = FakeEncoder()

    async def main():
        b = make(enc, max_batch_size=3, batch_wait_ms=0, pipeline_depth=1)
        enc.gate.clear()
        first = asyncio.create_task(b.encode_texts(["first"], True))
        await wait_until(lambda: b.queue_depth == 0 and enc.seen.prepares)
        group_a = [asyncio.create_task(b.encode_texts([t], True)) for t in ("one", "poison", "two")]
        await wait_until(lambda: b.queue_depth == 3)
        group_b = [asyncio.create_task(b.encode_texts([t], True)) for t in ("three", "four", "five")]
        await wait_until(lambda: b.queue_depth == 6)
        enc.gate.set()
        out_first = await first
        out_a = await asyncio.gather(*group_a, return_exceptions=True)
        out_b = await asyncio.gather(*group_b)
        later = await b.encode_texts(["later"], False)
        await b.close()
        return out_first, out_a, out_b, later

    out_first, out_a, out_b, later = run(main())
    assert out_first.shape == (1, enc.dimensions)
    # the shared batch failed; each request was then run on its own: only the poisoned one fails
    assert isinstance(out_a[1], BatchFailed), out_a
    assert "chokes on 'poison'" in str(out_a[1]) and "running" in str(out_a[1])
    for text, vec in zip(("one", "two"), (out_a[0], out_a[2]), strict=True):
        np.testing.assert_allclose(vec[0], enc.expected_text(text, True), rtol=1e-5, atol=1e-6)
    assert [3, 1, 1, 1] == enc.seen.sizes("text")[1:5]  # the failed batch, then one run per request
    for text, vec in zip(("three", "four", "five"), out_b, strict=True):
        np.testing.assert_allclose(vec[0], enc.expected_text(text, True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(later[0], enc.expected_text("later", False), rtol=1e-5)


def test_a_failing_image_preparation_fails_its_batch_only():
    enc = FakeEncoder()

    async def main():
        b = make(enc, batching=False)
        good = Image.new("RGB", (8, 8), (0, 200, 0))
        bad = Image.new("RGB", enc.poison_size, (0, 200, 0))
        results = await asyncio.gather(
            b.encode([], [good], True),
            b.encode(["text too"], [bad], True),
            b.encode([], [good], True),
            return_exceptions=True,
        )
        await b.close()
        return good, results

    good, results = run(main())
    np.testing.assert_allclose(results[0][1][0], enc.expected_image(good, True), rtol=1e-5)
    assert (
        isinstance(results[1], BatchFailed)
        and "preparing" in str(results[1])
        and "refuses" in str(results[1])
    )
    np.testing.assert_allclose(results[2][1][0], enc.expected_image(good, True), rtol=1e-5)


def test_disabled_batching_runs_one_forward_per_request():
    enc = FakeEncoder(forward_delay=0.002)

    async def main():
        b = make(enc, batching=False, batch_wait_ms=50)
        singles = [b.encode_texts([f"single {i}"], True) for i in range(20)]
        triple = b.encode_texts(["t one", "t two", "t three"], True)
        out = await asyncio.gather(*singles, triple)
        await b.close()
        return out

    out = run(main())
    assert sorted(enc.seen.sizes()) == [1] * 20 + [3]
    assert [v.shape[0] for v in out] == [1] * 20 + [3]
    assert [sorted(b) for b in enc.seen.text_batches if len(b) == 3] == [
        sorted(["t one", "t two", "t three"])
    ]


def test_cancelled_caller_items_are_dropped_before_they_run():
    enc = FakeEncoder()

    async def main():
        b = make(enc, batch_wait_ms=0, pipeline_depth=1)
        enc.gate.clear()
        first = asyncio.create_task(b.encode_texts(["first"], True))
        await wait_until(lambda: b.queue_depth == 0 and enc.seen.prepares)
        doomed = asyncio.create_task(b.encode_texts(["doomed a", "doomed b"], True))
        kept = asyncio.create_task(b.encode_texts(["kept"], True))
        await wait_until(lambda: b.queue_depth == 3)
        doomed.cancel()
        await asyncio.sleep(0.01)
        assert b.queue_depth == 1
        enc.gate.set()
        await first
        kept_vec = await kept
        await b.close()
        return doomed, kept_vec

    doomed, kept_vec = run(main())
    assert doomed.cancelled()
    seen = [t for batch in enc.seen.text_batches for t in batch]
    assert "doomed a" not in seen and "doomed b" not in seen and "kept" in seen
    np.testing.assert_allclose(kept_vec[0], enc.expected_text("kept", True), rtol=1e-5)


def test_batch_wait_clock_and_full_batches_go_at_once():
    enc = FakeEncoder()

    async def main():
        # a full batch goes at once: with a 60 s wait, waiting at all would show
        b = make(enc, max_batch_size=8, batch_wait_ms=60_000)
        start = time.perf_counter()
        await b.encode_texts([f"t{i}" for i in range(8)], True)
        full = time.perf_counter() - start
        await b.close()
        # two callers answered together; only one comes back: the batch waits for the other
        b = make(enc, max_batch_size=8, batch_wait_ms=1000)
        await asyncio.gather(b.encode_texts(["a"], True), b.encode_texts(["b"], True))
        start = time.perf_counter()
        await b.encode_texts(["a again"], True)
        waited = time.perf_counter() - start
        await b.close()
        return full, waited

    full, waited = run(main())
    assert full < 30, full  # generous for a loaded machine, and far below the 60 s wait
    assert waited >= 0.95, waited  # a lower bound: a slow machine only waits longer
    assert [1] == enc.seen.sizes("text")[-1:]


def test_a_lone_caller_does_not_wait_for_company():
    enc = FakeEncoder()

    async def main():
        b = make(enc, max_batch_size=8, batch_wait_ms=60_000)
        start = time.perf_counter()
        for i in range(5):  # one caller, one request at a time: nobody else can join its batch
            await b.encode_texts([f"lonely {i}"], True)
        elapsed = time.perf_counter() - start
        await b.close()
        return elapsed

    elapsed = run(main())
    assert elapsed < 30, elapsed  # generous for a loaded machine, and far below one 60 s wait
    assert enc.seen.sizes("text") == [1] * 5


def test_prepare_overlaps_the_forward_pass():
    enc = FakeEncoder()

    async def main():
        b = make(enc, max_batch_size=1, batch_wait_ms=0, pipeline_depth=2)
        enc.gate.clear()
        t1 = asyncio.create_task(b.encode_texts(["batch one"], True))
        await wait_until(lambda: len(enc.seen.prepares) == 1)
        t2 = asyncio.create_task(b.encode_texts(["batch two"], True))
        # batch two is prepared while batch one's forward pass is still held
        await wait_until(lambda: len(enc.seen.prepares) == 2)
        assert enc.seen.batches == []
        enc.gate.set()
        await asyncio.gather(t1, t2)
        await b.close()

    run(main())
    assert enc.seen.sizes() == [1, 1]


def test_partial_batches_grow_while_the_model_is_busy():
    enc = FakeEncoder()

    async def main():
        b = make(enc, max_batch_size=16, batch_wait_ms=0, pipeline_depth=2)
        enc.gate.clear()
        first = asyncio.create_task(b.encode_texts(["first"], True))
        await wait_until(lambda: b.queue_depth == 0 and enc.seen.prepares)
        singles = [asyncio.create_task(b.encode_texts([f"single {i}"], True)) for i in range(5)]
        await wait_until(lambda: b.queue_depth == 5)
        await asyncio.sleep(0.05)  # their wait is over, but the model is busy: they keep waiting
        assert b.queue_depth == 5
        enc.gate.set()
        await asyncio.gather(first, *singles)
        await b.close()

    run(main())
    assert enc.seen.sizes("text") == [1, 5]


def test_callers_whose_results_just_came_back_can_join_the_next_batch():
    enc = FakeEncoder()

    async def main():
        b = make(enc, max_batch_size=16, batch_wait_ms=2000, pipeline_depth=2)
        enc.gate.clear()
        first = asyncio.create_task(b.encode_texts(["first"], True))
        await wait_until(lambda: b.queue_depth == 0 and enc.seen.prepares)
        waiting = [asyncio.create_task(b.encode_texts([f"waiting {i}"], True)) for i in range(3)]
        await wait_until(lambda: b.queue_depth == 3)
        await asyncio.sleep(2.05)  # their own wait is over while the model is still busy
        enc.gate.set()
        await first
        # the caller sends its next item at once: the others' window restarted when the model went
        # idle, so it has 2 s (not a race a loaded machine can lose) to join them
        again = await b.encode_texts(["first again"], True)
        await asyncio.gather(*waiting)
        await b.close()
        return again

    again = run(main())
    np.testing.assert_allclose(again[0], enc.expected_text("first again", True), rtol=1e-5, atol=1e-6)
    assert enc.seen.sizes("text") == [1, 4]


def test_close_drains_then_refuses_and_close_without_drain_fails_waiting():
    enc = FakeEncoder(forward_delay=0.01)

    async def drain():
        b = make(enc)
        tasks = [asyncio.create_task(b.encode_texts([f"d{i}"], True)) for i in range(10)]
        await asyncio.sleep(0)
        await b.close(drain=True)
        out = await asyncio.gather(*tasks)
        with pytest.raises(BatcherClosed):
            await b.encode_texts(["too late"], True)
        return out

    assert [v.shape for v in run(drain())] == [(1, enc.dimensions)] * 10

    enc2 = FakeEncoder()

    async def abort():
        b = make(enc2, batch_wait_ms=0, pipeline_depth=1)
        enc2.gate.clear()
        first = asyncio.create_task(b.encode_texts(["in flight"], True))
        await wait_until(lambda: b.queue_depth == 0 and enc2.seen.prepares)
        waiting = asyncio.create_task(b.encode_texts(["waiting"], True))
        await wait_until(lambda: b.queue_depth == 1)
        closing = asyncio.create_task(b.close(drain=False))
        with pytest.raises(BatcherClosed):
            await waiting
        enc2.gate.set()
        await closing
        return await first

    assert run(abort()).shape == (1, enc2.dimensions)  # the started batch still finished


def test_empty_input_returns_empty_arrays_without_a_forward_pass():
    enc = FakeEncoder()

    async def main():
        b = make(enc)
        out = await b.encode([], [], True)
        await b.close()
        return out

    texts, images = run(main())
    assert texts.shape == (0, enc.dimensions) and images.shape == (0, enc.dimensions)
    assert enc.seen.batches == []


# --- found by mutation testing (mutmut over batcher.py; see the issue 7 report) -------------------


@pytest.mark.parametrize("setting", ["max_batch_size", "max_queue", "prep_threads", "pipeline_depth"])
def test_every_size_setting_must_be_at_least_one(setting):
    with pytest.raises(ValueError, match="must be >= 1"):
        DynamicBatcher(FakeEncoder(), **{setting: 0})
    b = DynamicBatcher(FakeEncoder(), **{setting: 1})  # 1 is fine
    b.close_sync()


def test_check_room_boundary_and_message():
    enc = FakeEncoder()

    async def main():
        b = make(enc, max_batch_size=1, batch_wait_ms=0, max_queue=3, pipeline_depth=1)
        enc.gate.clear()
        first = asyncio.create_task(b.encode_texts(["in flight"], True))
        await wait_until(lambda: b.queue_depth == 0 and enc.seen.prepares)
        waiting = asyncio.create_task(b.encode_texts(["w1", "w2"], True))
        await wait_until(lambda: b.queue_depth == 2)
        b.check_room(1)  # 2 + 1 == 3 fits
        with pytest.raises(QueueFull) as err:
            b.check_room(2)  # 2 + 2 > 3
        assert str(err.value) == "queue full: 2 items waiting, this request adds 2, limit is 3"
        enc.gate.set()
        await asyncio.gather(first, waiting)
        assert b.queue_depth == 0 and not b.closed
        await b.close()
        assert b.closed

    run(main())


def test_a_model_that_returns_the_wrong_number_of_rows_fails_the_batch():
    class Short(FakeEncoder):
        def forward_texts(self, prepared):
            return super().forward_texts(prepared)[:-1]

    async def main():
        b = make(Short(), batching=False)
        with pytest.raises(BatchFailed) as err:
            await b.encode_texts(["one", "two"], True)
        await b.close()
        return str(err.value)

    message = run(main())
    assert message == ("running the text batch failed: RuntimeError: model returned shape (1, 24) for a "
                       "batch of 2 items")


def test_a_failing_length_estimate_falls_back_to_the_character_count():
    class NoEstimate(FakeEncoder):
        def text_length(self, text):
            raise RuntimeError("no estimate")

    enc = NoEstimate()
    short = ["a", "bb", "ccc"]
    long = ["x" * 300, "y" * 301, "z" * 302]

    async def main():
        b = make(enc, max_batch_size=3, batch_wait_ms=0, pipeline_depth=1)
        enc.gate.clear()
        first = asyncio.create_task(b.encode_texts(["hold"], True))
        await wait_until(lambda: b.queue_depth == 0 and enc.seen.prepares)
        rest = [asyncio.create_task(b.encode_texts([t], True)) for pair in zip(short, long, strict=True)
                for t in pair]
        await wait_until(lambda: b.queue_depth == 6)
        enc.gate.set()
        await asyncio.gather(first, *rest)
        await b.close()

    run(main())
    batches = [sorted(batch) for batch in enc.seen.text_batches[1:]]
    assert sorted(batches) == sorted([sorted(short), sorted(long)]), batches  # grouped by len(text)


def test_the_modality_whose_oldest_item_is_oldest_goes_first():
    enc = FakeEncoder()
    image = Image.new("RGB", (8, 8), (10, 200, 10))

    async def main():
        b = make(enc, max_batch_size=8, batch_wait_ms=0, pipeline_depth=1)
        enc.gate.clear()
        first = asyncio.create_task(b.encode_texts(["hold"], True))
        await wait_until(lambda: b.queue_depth == 0 and enc.seen.prepares)
        older = asyncio.create_task(b.encode([], [image], True))
        await wait_until(lambda: b.queue_depth == 1)
        newer = asyncio.create_task(b.encode_texts(["newer text"], True))
        await wait_until(lambda: b.queue_depth == 2)
        enc.gate.set()
        await asyncio.gather(first, older, newer)
        await b.close()

    run(main())
    assert [m for m, _ in enc.seen.batches] == ["text", "image", "text"]


def test_a_negative_batch_wait_is_no_wait():
    b = DynamicBatcher(FakeEncoder(), batch_wait_ms=-5)
    assert b.batch_wait == 0.0
    b.close_sync()


def test_metrics_record_batches_failures_and_the_queue_depth():
    from services.inference.metrics import Metrics

    enc = FakeEncoder()
    metrics = Metrics()

    async def main():
        b = make(enc, max_batch_size=4, batch_wait_ms=0, pipeline_depth=1, metrics=metrics)
        enc.gate.clear()
        first = asyncio.create_task(b.encode_texts(["hold"], True))
        await wait_until(lambda: b.queue_depth == 0 and enc.seen.prepares)
        rest = [asyncio.create_task(b.encode_texts([t], True)) for t in ("a", "b", "c")]
        await wait_until(lambda: b.queue_depth == 3)
        depth_while_waiting = metrics.queue_depth._value.get()
        enc.gate.set()
        await asyncio.gather(first, *rest)
        with pytest.raises(BatchFailed):
            await b.encode_texts(["poison"], True)
        await b.close()
        return depth_while_waiting

    started = time.perf_counter()
    depth_while_waiting = run(main())
    wall = time.perf_counter() - started
    text = metrics.render().decode()
    forward = next(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith('polyvec_inference_forward_seconds_sum{modality="text"}'))
    assert 0 < forward <= wall  # the forward passes' own time, within the run's
    assert depth_while_waiting == 3
    assert metrics.queue_depth._value.get() == 0
    assert 'polyvec_inference_batch_size_count{modality="text"} 2.0' in text  # the two that ran
    assert 'polyvec_inference_batch_size_sum{modality="text"} 4.0' in text  # 1 + 3 items
    assert 'polyvec_inference_batch_failures_total{modality="text"} 1.0' in text


@pytest.mark.parametrize("batch_fails", [False, True], ids=["batch-runs", "batch-fails"])
def test_a_caller_that_leaves_after_its_batch_was_cut(batch_fails):
    """Its items are skipped when the batch is delivered (the callers after it still get theirs) and,
    when the shared batch fails, it is not re-run: nobody is waiting for it."""
    enc = FakeEncoder()
    shared = ["leaver", "poison", "stayer"] if batch_fails else ["leaver", "stayer"]

    async def main():
        b = make(enc, max_batch_size=len(shared), batch_wait_ms=0, pipeline_depth=2)
        enc.gate.clear()
        first = asyncio.create_task(b.encode_texts(["hold"], True))
        await wait_until(lambda: b.queue_depth == 0 and len(enc.seen.prepares) == 1)
        tasks = [asyncio.create_task(b.encode_texts([t], True)) for t in shared]
        # a full batch is cut (and prepared) ahead while the model is busy
        await wait_until(lambda: b.queue_depth == 0 and len(enc.seen.prepares) == 2)
        tasks[0].cancel()
        await asyncio.gather(tasks[0], return_exceptions=True)  # it has left before the model runs
        enc.gate.set()
        await first
        out = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
        await b.close()
        return out

    out = run(main())
    assert isinstance(out[0], asyncio.CancelledError)
    np.testing.assert_allclose(out[-1][0], enc.expected_text("stayer", True), rtol=1e-5, atol=1e-6)
    if batch_fails:
        assert isinstance(out[1], BatchFailed)
        assert enc.seen.text_batches[1:] == [shared, ["poison"], ["stayer"]]  # no re-run of "leaver"
    else:
        assert enc.seen.text_batches[1:] == [shared]


def test_vectors_are_float32_whatever_the_model_returns():
    class Float64(FakeEncoder):
        def forward_texts(self, prepared):
            return super().forward_texts(prepared).astype(np.float64)

        def forward_images(self, prepared):
            return super().forward_images(prepared).astype(np.float64)

    enc = Float64()
    image = Image.new("RGB", (8, 8), (200, 10, 10))

    async def main():
        b = make(enc)
        out = [await b.encode(["a text", "two texts"], [image], normalize) for normalize in (False, True)]
        await b.close()
        return out

    for normalize, (texts, images) in zip((False, True), run(main()), strict=True):
        assert texts.dtype == np.float32 and images.dtype == np.float32
        np.testing.assert_allclose(texts[1], enc.expected_text("two texts", normalize), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(images[0], enc.expected_image(image, normalize), rtol=1e-5, atol=1e-6)


def test_a_shared_image_batch_whose_preparation_fails_is_re_prepared_per_caller():
    enc = FakeEncoder()
    good = Image.new("RGB", (8, 8), (0, 0, 220))
    bad = Image.new("RGB", enc.poison_size, (0, 0, 220))

    async def main():
        b = make(enc, max_batch_size=2, batch_wait_ms=0, pipeline_depth=1)
        enc.gate.clear()
        first = asyncio.create_task(b.encode_texts(["hold"], True))
        await wait_until(lambda: b.queue_depth == 0 and enc.seen.prepares)
        tasks = [asyncio.create_task(b.encode_images([im], False)) for im in (good, bad)]
        await wait_until(lambda: b.queue_depth == 2)
        enc.gate.set()
        await first
        out = await asyncio.gather(*tasks, return_exceptions=True)
        await b.close()
        return out

    good_out, bad_out = run(main())
    np.testing.assert_allclose(good_out[0], enc.expected_image(good, False), rtol=1e-5, atol=1e-6)
    assert isinstance(bad_out, BatchFailed)
    assert str(bad_out) == ("preparing the image batch failed: ValueError: the fake preprocessor refuses "
                            "(13, 7) images")
    assert enc.seen.prepares == [("text", 1), ("image", 2), ("image", 1), ("image", 1)]
    assert enc.seen.batches == [("text", 1), ("image", 1)]  # only the good image ran


def test_a_caller_that_leaves_takes_its_tokens_out_of_the_budget_count():
    """With MAX_BATCH_TOKENS the batcher counts the waiting texts' tokens to know when a batch is full:
    a caller that leaves while waiting takes exactly its own tokens with it, and a batch that is cut
    exactly the tokens of its texts (an empty text counts 0)."""
    enc = FakeEncoder()

    async def main():
        b = make(enc, max_batch_size=8, max_batch_tokens=100, batch_wait_ms=0, pipeline_depth=1)
        enc.gate.clear()
        first = asyncio.create_task(b.encode_texts(["hold"], True))
        await wait_until(lambda: b.queue_depth == 0 and enc.seen.prepares)
        kept = asyncio.create_task(b.encode_texts(["three little words", "?"], True))
        leaver = asyncio.create_task(b.encode_texts([" ".join(["nine"] * 9), "!!!"], True))
        await wait_until(lambda: b.queue_depth == 4)
        counted = [b._pending_tokens]  # private: the count _is_full compares with the budget
        leaver.cancel()
        await asyncio.gather(leaver, return_exceptions=True)
        counted.append(b._pending_tokens)
        enc.gate.set()
        await asyncio.gather(first, kept)
        counted.append(b._pending_tokens)
        await b.close()
        return counted

    assert run(main()) == [3 + 0 + 9 + 0, 3 + 0, 0]  # the cut batch's own tokens leave it too


def test_stage_spans_name_the_modality_and_the_sizes():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from services import tracing

    enc = FakeEncoder()
    exporter = InMemorySpanExporter()
    assert tracing.setup("polyvec-inference", exporter=exporter)
    try:
        async def main():
            b = make(enc, max_batch_size=2, batch_wait_ms=0, pipeline_depth=1)
            with tracing.tracer().start_as_current_span("caller"):
                await b.encode_texts(["one", "two", "three"], True)  # two batches: 2 + 1
            await b.close()

        run(main())
        spans = exporter.get_finished_spans()
    finally:
        tracing.shutdown()
    caller = next(s for s in spans if s.name == "caller")
    stages = [s for s in spans if s.name != "caller"]
    assert all(s.parent is not None and s.parent.span_id == caller.context.span_id for s in stages)
    by_name: dict[str, list[dict]] = {}
    for s in stages:
        by_name.setdefault(s.name, []).append(dict(s.attributes))
    assert by_name["inference.queue_wait"] == [{"polyvec.modality": "text", "polyvec.items": 3}]
    for name in ("inference.batch", "inference.forward"):
        assert sorted(by_name[name], key=lambda a: a["polyvec.batch_size"]) == [
            {"polyvec.modality": "text", "polyvec.batch_size": 1},
            {"polyvec.modality": "text", "polyvec.batch_size": 2}], name
    assert set(by_name) == {"inference.queue_wait", "inference.batch", "inference.forward"}


def test_the_batch_span_shows_the_preparation_done_while_the_model_was_busy():
    """Trace spans time each stage where it ran: the second batch was prepared during the first one's
    forward pass (the pipeline), so its inference.batch span ends before that forward pass does."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from services import tracing

    enc = FakeEncoder()
    exporter = InMemorySpanExporter()
    assert tracing.setup("polyvec-inference", exporter=exporter)
    try:
        async def traced(name: str, text: str):
            with tracing.tracer().start_as_current_span(name):
                return await b.encode_texts([text], True)

        async def main():
            nonlocal b
            b = make(enc, max_batch_size=1, batch_wait_ms=0, pipeline_depth=2)
            enc.gate.clear()
            first = asyncio.create_task(traced("first", "hold"))
            await wait_until(lambda: len(enc.seen.prepares) == 1)
            second = asyncio.create_task(traced("second", "next"))
            # prepared while the model waits (private: the batch waiting for the model thread)
            await wait_until(lambda: bool(b._model_q.queue) and b._model_q.queue[0].prepared.done())
            enc.gate.set()
            await asyncio.gather(first, second)
            await b.close()

        b = None
        run(main())
        spans = exporter.get_finished_spans()
    finally:
        tracing.shutdown()
    parents = {s.name: s.context.span_id for s in spans if s.name in ("first", "second")}

    def stage(caller: str, name: str):
        (span,) = [s for s in spans if s.name == name and s.parent and s.parent.span_id == parents[caller]]
        return span

    first_forward = stage("first", "inference.forward")
    second_batch = stage("second", "inference.batch")
    assert second_batch.end_time < first_forward.end_time
    assert second_batch.end_time <= stage("second", "inference.forward").start_time


def test_a_failed_batch_is_logged_with_its_modality_size_stage_and_cause(caplog):
    enc = FakeEncoder()

    async def main():
        b = make(enc, batching=False)
        with pytest.raises(BatchFailed):
            await b.encode_texts(["one", "poison", "two"], True)
        await b.close()

    with caplog.at_level("WARNING", logger="services.inference.batcher"):
        run(main())
    assert [r.getMessage() for r in caplog.records if r.name == "services.inference.batcher"] == [
        "text batch of 3 failed while running: the fake model chokes on 'poison'"]


def test_close_drains_by_default_and_later_calls_are_refused_saying_why():
    enc = FakeEncoder()

    async def main():
        b = make(enc, batch_wait_ms=0, pipeline_depth=1)
        enc.gate.clear()
        first = asyncio.create_task(b.encode_texts(["in flight"], True))
        await wait_until(lambda: b.queue_depth == 0 and enc.seen.prepares)
        waiting = asyncio.create_task(b.encode_texts(["waiting"], True))
        await wait_until(lambda: b.queue_depth == 1)
        closing = asyncio.create_task(b.close())  # no argument: drain
        await wait_until(lambda: b.closed)
        with pytest.raises(BatcherClosed) as err:
            await b.encode_texts(["too late"], True)
        enc.gate.set()
        await closing
        return await first, await waiting, str(err.value)

    first, waiting, message = run(main())
    np.testing.assert_allclose(waiting[0], enc.expected_text("waiting", True), rtol=1e-5, atol=1e-6)
    assert message == "the service is shutting down"


def test_a_failed_part_of_a_mixed_request_fails_it_while_the_other_part_still_waits():
    """Texts and images of one call are separate batches: when the text batch fails first, the call
    fails with that BatchFailed at once (the image part, still waiting for the model, is dropped)."""

    class SlowImages(FakeEncoder):
        images_go = None

        def forward_images(self, prepared):
            self.images_go.wait(30)
            return super().forward_images(prepared)

    import threading

    enc = SlowImages()
    enc.images_go = threading.Event()
    image = Image.new("RGB", (8, 8), (9, 9, 9))

    async def main():
        b = make(enc, batch_wait_ms=0)
        try:
            with pytest.raises(BatchFailed) as err:
                await b.encode(["poison"], [image], True)
            return str(err.value)
        finally:
            enc.images_go.set()
            await b.close()

    assert run(main()) == "running the text batch failed: RuntimeError: the fake model chokes on 'poison'"


@pytest.mark.parametrize("bad,message", [
    ({"max_batch_size": 0}, "max_batch_size, max_queue, prep_threads and pipeline_depth must be >= 1"),
    ({"max_batch_tokens": -1}, "max_batch_tokens must be >= 0 (0: no token limit)"),
])
def test_bad_settings_are_refused_with_their_exact_message(bad, message):
    with pytest.raises(ValueError) as err:
        DynamicBatcher(FakeEncoder(), **bad)
    assert str(err.value) == message
    b = DynamicBatcher(FakeEncoder(), batch_wait_ms=250)
    assert b.batch_wait == 0.25
    b.close_sync()


def test_close_without_drain_fails_every_waiting_caller_saying_why_and_close_sync_drains_by_default():
    enc = FakeEncoder()

    async def abort():
        b = make(enc, batch_wait_ms=0, pipeline_depth=1)
        enc.gate.clear()
        first = asyncio.create_task(b.encode_texts(["in flight"], True))
        await wait_until(lambda: b.queue_depth == 0 and enc.seen.prepares)
        waiting = [asyncio.create_task(b.encode_texts([t], True)) for t in ("w1", "w2", "w3")]
        await wait_until(lambda: b.queue_depth == 3)
        closing = asyncio.create_task(b.close(drain=False))
        failed = await asyncio.gather(*waiting, return_exceptions=True)
        enc.gate.set()
        await closing
        await first
        return failed

    failed = run(abort())
    assert [type(e) for e in failed] == [BatcherClosed] * 3
    assert {str(e) for e in failed} == {"the service shut down before this request ran"}

    enc2 = FakeEncoder()

    async def default():
        b = make(enc2, batch_wait_ms=0, pipeline_depth=1)
        enc2.gate.clear()
        first = asyncio.create_task(b.encode_texts(["in flight"], True))
        await wait_until(lambda: b.queue_depth == 0 and enc2.seen.prepares)
        waiting = asyncio.create_task(b.encode_texts(["waiting"], True))
        await wait_until(lambda: b.queue_depth == 1)
        closing = asyncio.create_task(asyncio.to_thread(b.close_sync))  # no argument: drain
        await wait_until(lambda: b.closed)
        enc2.gate.set()
        await closing
        await first
        return await waiting

    np.testing.assert_allclose(run(default())[0], enc2.expected_text("waiting", True), rtol=1e-5, atol=1e-6)
