"""Images are prepared one by one as they arrive (when the encoder merges prepared images), so a batch
cut when the model comes free does not make the model wait for its preparation; bounded, isolating
failures, and never waiting on the preparation pool from inside it."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from PIL import Image

from services.inference.batcher import BatchFailed, DynamicBatcher
from tests.fake_encoders import FakeEncoder


class MergingEncoder(FakeEncoder):
    """The fake encoder with a merge of images prepared one by one (its prepared form is a list)."""

    merges_prepared_images = True

    def __init__(self, *, prepare_delay: float = 0.0, **kw) -> None:
        super().__init__(**kw)
        self.prepare_delay = prepare_delay
        self.merged: list[int] = []  # parts per merge

    def prepare_images(self, images):
        if self.prepare_delay:
            time.sleep(self.prepare_delay)
        return super().prepare_images(images)

    def merge_prepared_images(self, parts):
        self.merged.append(len(parts))
        return [row for part in parts for row in part]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def pictures(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (8, 8), ((37 * i) % 256, (91 * i) % 256, (11 * i) % 256)) for i in range(n)]


def encode_each(enc: MergingEncoder, imgs: list[Image.Image], **batcher) -> list:
    """One request per image, all at once, through a batcher made with ``batcher``; each request's
    (text vectors, image vectors), or the error it got."""

    async def main():
        b = DynamicBatcher(enc, **batcher)
        out = await asyncio.gather(*(b.encode([], [im], True) for im in imgs), return_exceptions=True)
        await b.close()
        return out

    return run(main())


def assert_image_vectors(enc: MergingEncoder, imgs: list[Image.Image], results: list) -> None:
    """Each one-image request got its image's vector."""
    for im, (_, vectors) in zip(imgs, results, strict=True):
        np.testing.assert_allclose(vectors[0], enc.expected_image(im, True), rtol=1e-5, atol=1e-6)


async def first_pass_running(enc: MergingEncoder) -> None:
    deadline = time.monotonic() + 10
    while not enc.seen.batches and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def test_images_are_prepared_one_by_one_and_merged_into_their_batch():
    enc = MergingEncoder(forward_delay=0.05, prepare_delay=0.01)
    imgs = pictures(20)
    out = encode_each(enc, imgs, max_batch_size=16, batch_wait_ms=5, prep_threads=2)  # 32 ahead at most
    assert_image_vectors(enc, imgs, out)
    assert [n for m, n in enc.seen.prepares if m == "image"] == [1] * 20  # each image on its own
    assert sum(enc.merged) == 20 and sum(enc.seen.sizes("image")) == 20
    assert max(enc.seen.sizes("image")) > 1  # and still batched across requests


def test_preparation_runs_while_the_model_is_busy():
    """While a forward pass runs, the images that arrive are prepared: the next batch is ready when
    the model comes free (before: prepared only once cut, with the model waiting)."""
    enc = MergingEncoder(forward_delay=0.3, prepare_delay=0.02)
    imgs = pictures(6)

    async def main():
        b = DynamicBatcher(enc, max_batch_size=8, batch_wait_ms=1, prep_threads=2)
        first = asyncio.create_task(b.encode([], [imgs[0]], True))
        await first_pass_running(enc)
        rest = [asyncio.create_task(b.encode([], [im], True)) for im in imgs[1:]]
        await asyncio.sleep(0.2)  # the pass still runs (0.3 s): the five arrivals are prepared by now
        prepared_during_pass = sum(1 for m, n in enc.seen.prepares if m == "image") - 1
        await asyncio.gather(first, *rest)
        await b.close()
        return prepared_during_pass

    assert run(main()) == 5
    assert enc.seen.sizes("image") == [1, 5]


def test_at_most_twice_a_batch_of_waiting_images_is_prepared_ahead():
    enc = MergingEncoder(forward_delay=0.3)

    async def main():
        b = DynamicBatcher(enc, max_batch_size=2, batch_wait_ms=1, prep_threads=2, pipeline_depth=1)
        first = asyncio.create_task(b.encode([], pictures(1), True))
        await first_pass_running(enc)
        rest = [asyncio.create_task(b.encode([], [im], True)) for im in pictures(10)]
        await asyncio.sleep(0.05)
        ahead = sum(it.early is not None for it in b._pending["image"])
        waiting = len(b._pending["image"])
        out = await asyncio.gather(first, *rest)
        await b.close()
        return ahead, waiting, out

    ahead, waiting, out = run(main())
    assert waiting == 10 and ahead == 4  # 2 x max_batch_size; the others are prepared when cut
    assert_image_vectors(enc, pictures(10), out[1:])


def test_a_bad_image_prepared_ahead_fails_only_its_request():
    enc = MergingEncoder(forward_delay=0.05)
    good = pictures(6)
    bad = Image.new("RGB", enc.poison_size, (0, 200, 0))
    out = encode_each(enc, good[:3] + [bad] + good[3:], max_batch_size=8, batch_wait_ms=20, prep_threads=2)
    assert isinstance(out[3], BatchFailed) and "refuses" in str(out[3])
    assert_image_vectors(enc, good, out[:3] + out[4:])


def test_one_preparation_thread_never_waits_on_itself():
    """A batch's preparation runs in the pool that also holds the images' own preparations and waits for
    them: with one thread that is safe only because each image's preparation is queued before its batch's
    (a batcher that queued them later would hang here)."""
    enc = MergingEncoder(forward_delay=0.01, prepare_delay=0.005)
    imgs = pictures(40)
    out = encode_each(enc, imgs, max_batch_size=8, batch_wait_ms=2, prep_threads=1, pipeline_depth=2)
    assert_image_vectors(enc, imgs, out)


def test_without_batching_images_are_prepared_with_their_request():
    enc = MergingEncoder()

    async def main():
        b = DynamicBatcher(enc, batching=False)
        out = await b.encode([], pictures(3), True)
        await b.close()
        return out

    _, vectors = run(main())
    assert vectors.shape == (3, enc.dimensions) and enc.merged == []
    assert [n for m, n in enc.seen.prepares if m == "image"] == [3]
