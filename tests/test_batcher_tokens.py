"""MAX_BATCH_TOKENS: text batches are runs of similar lengths holding at most that many padded tokens.

The fake encoder's ``text_length`` is the word count, so the tests know every text's length.
"""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from services.inference.batcher import DynamicBatcher
from services.inference.config import CPU_MAX_BATCH_TOKENS, InferenceSettings, SettingsError
from services.inference.service import InferenceService
from tests.fake_encoders import FakeEncoder


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def words(n: int, tag: str) -> str:
    return " ".join([tag] + [f"w{k}" for k in range(n - 1)])


def padded(batch: list[str]) -> int:
    return len(batch) * max(len(t.split()) for t in batch)


def test_batches_hold_at_most_the_token_budget_and_group_similar_lengths():
    enc = FakeEncoder()
    rng = random.Random(3)
    lengths = [rng.randint(1, 40) for _ in range(64)] + [90]  # one text alone over the budget
    texts = [words(n, f"t{i}") for i, n in enumerate(lengths)]

    async def main():
        b = DynamicBatcher(enc, max_batch_size=32, max_batch_tokens=128, batch_wait_ms=0, pipeline_depth=1)
        enc.gate.clear()  # hold the model so every text waits together
        first = asyncio.create_task(b.encode_texts(["warm up"], True))
        while not enc.seen.prepares:
            await asyncio.sleep(0.005)
        bulk = asyncio.create_task(b.encode_texts(texts, True))
        while b.queue_depth < len(texts):
            await asyncio.sleep(0.005)
        enc.gate.set()
        await first
        out = await bulk
        await b.close()
        return out

    out = run(main())
    for text, vec in zip(texts, out, strict=True):  # every caller's order kept
        np.testing.assert_allclose(vec, enc.expected_text(text, True), rtol=1e-5, atol=1e-6)
    batches = enc.seen.text_batches[1:]
    assert sorted(t for batch in batches for t in batch) == sorted(texts)
    assert [words(90, "t64")] in batches  # over the budget: it still runs, alone
    for batch in batches:
        assert len(batch) <= 32
        assert len(batch) == 1 or padded(batch) <= 128, (padded(batch), batch)
    # grouped by length: far fewer padded tokens than batches of 32 in arrival order
    arrival = sum(padded(texts[i:i + 32]) for i in range(0, len(texts), 32))
    assert sum(padded(batch) for batch in batches) < 0.8 * arrival
    assert sum(padded(batch) for batch in batches) <= 1.25 * sum(lengths)


def test_no_token_budget_keeps_arrival_batches_of_max_batch_size():
    enc = FakeEncoder()
    texts = [words(n, f"t{i}") for i, n in enumerate([30, 2, 25, 3, 28, 1, 27, 4])]

    async def main():
        b = DynamicBatcher(enc, max_batch_size=8, max_batch_tokens=0, batch_wait_ms=0, pipeline_depth=1)
        out = await b.encode_texts(texts, False)
        await b.close()
        return out

    run(main())
    assert enc.seen.text_batches == [texts]


def test_a_full_token_budget_goes_without_waiting():
    """The batch wait is for filling a batch: once the waiting texts fill the budget, it goes."""
    enc = FakeEncoder()

    async def main():
        b = DynamicBatcher(enc, max_batch_size=32, max_batch_tokens=40, batch_wait_ms=60_000,
                           pipeline_depth=1)
        b._returning = 99  # as if many callers were still to come back: only a full batch goes
        out = await b.encode_texts([words(20, "a"), words(20, "b")], False)
        await b.close()
        return out

    out = run(main())  # would time out if it waited for BATCH_WAIT_MS
    assert out.shape == (2, enc.dimensions)


def test_setting_defaults_by_device_and_bad_values_name_the_variable():
    settings = InferenceSettings.from_env({"MODEL": "m"})
    assert settings.max_batch_tokens is None
    cpu = InferenceService(FakeEncoder(), settings)
    assert cpu.batcher.max_batch_tokens == CPU_MAX_BATCH_TOKENS
    assert cpu.limits()["max_batch_tokens"] == CPU_MAX_BATCH_TOKENS
    gpu_encoder = FakeEncoder()
    gpu_encoder.info = gpu_encoder.info.__class__(**{**gpu_encoder.info.__dict__, "device": "cuda:0"})
    gpu = InferenceService(gpu_encoder, settings)
    assert gpu.batcher.max_batch_tokens == 0
    off = InferenceService(FakeEncoder(), InferenceSettings.from_env({"MODEL": "m", "MAX_BATCH_TOKENS": "0"}))
    assert off.batcher.max_batch_tokens == 0
    for service in (cpu, gpu, off):
        service.batcher.close_sync()
    with pytest.raises(SettingsError, match="MAX_BATCH_TOKENS"):
        InferenceSettings.from_env({"MODEL": "m", "MAX_BATCH_TOKENS": "-1"})
    with pytest.raises(SettingsError, match="MAX_BATCH_TOKENS"):
        InferenceSettings.from_env({"MODEL": "m", "MAX_BATCH_TOKENS": "lots"})


def best_run(lengths: list[int], limit: int, budget: int) -> list[int]:
    """The batch the rule asks for, by brute force over every run (arrival numbers, in length order).

    Texts ordered by (length, arrival); among the runs that include the oldest text (arrival 0), hold
    at most ``limit`` texts and, with a ``budget``, at most that many padded tokens (texts x the
    longest; one text alone always fits): the longest, then the least spread of lengths, then the
    one of the shortest texts."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    p = order.index(0)
    candidates = []
    for s in range(p + 1):
        for e in range(p, len(order)):
            size = e - s + 1
            longest = lengths[order[e]]
            if size > limit or (budget and size > 1 and size * longest > budget):
                continue
            candidates.append(((-size, longest - lengths[order[s]], s), order[s:e + 1]))
    return min(candidates)[1]


@pytest.mark.parametrize("seed", range(6))
def test_the_batch_cut_is_the_longest_run_of_similar_lengths_that_fits(seed):
    """_similar_lengths against :func:`best_run` on many small queues: ties, empty texts (0 tokens),
    texts over the budget, the oldest text at either end of its run, with and without a budget."""
    from services.inference.batcher import _Item

    rng = random.Random(seed)
    b = DynamicBatcher(FakeEncoder(), max_batch_size=8, max_batch_tokens=1, batch_wait_ms=0)
    try:
        for _ in range(300):
            n = rng.randint(1, 9)
            lengths = [rng.choice([0, 1, 2, 2, 3, 5, 5, 8, 13]) for _ in range(n)]
            limit = rng.randint(1, 6)
            budget = rng.choice([0, 0, 4, 6, 10, 16, 30])
            items = [_Item(None, 0, f"text {i}", i, 0.0, length) for i, length in enumerate(lengths)]
            chosen = b._similar_lengths(items, limit, budget)
            assert [it.seq for it in chosen] == best_run(lengths, limit, budget), (lengths, limit, budget)
    finally:
        b.close_sync()


def test_the_token_budget_is_for_texts_only():
    """Images have no tokens: with MAX_BATCH_TOKENS set they still batch by MAX_BATCH_SIZE alone, in
    arrival order (no length is asked of an image)."""
    from PIL import Image

    enc = FakeEncoder()
    images = [Image.new("RGB", (8 + i, 8), (40 * i, 0, 0)) for i in range(5)]

    async def main():
        b = DynamicBatcher(enc, max_batch_size=4, max_batch_tokens=2, batch_wait_ms=0, pipeline_depth=1)
        enc.gate.clear()
        first = asyncio.create_task(b.encode_texts(["hold"], True))
        while not enc.seen.prepares:
            await asyncio.sleep(0.005)
        bulk = asyncio.create_task(b.encode_images(images, False))
        while b.queue_depth < len(images):
            await asyncio.sleep(0.005)
        enc.gate.set()
        await first
        out = await bulk
        await b.close()
        return out

    out = run(main())
    for image, vec in zip(images, out, strict=True):
        np.testing.assert_allclose(vec, enc.expected_image(image, False), rtol=1e-5, atol=1e-6)
    assert enc.seen.batches == [("text", 1), ("image", 4), ("image", 1)]


def run_tokens(lengths: list[int], padding_cost: float = 1.0) -> float:
    """What a run of texts of ``lengths`` (in length order) counts against the budget: its padded
    tokens, or with a padded position worth ``padding_cost`` of a token, that share of them plus the
    rest of the texts' own tokens."""
    return padding_cost * len(lengths) * lengths[-1] + (1 - padding_cost) * sum(lengths)


def split_costs(lengths: list[int], limit: int, budget: int, pass_tokens: int,
                padding_cost: float = 1.0) -> tuple[float, int]:
    """(cost, passes) of the cheapest split of texts of ``lengths`` (already in length order) into
    consecutive runs of at most ``limit`` texts and ``budget`` tokens, by brute force."""
    if not lengths:
        return (0.0, 0)
    options = []
    for size in range(1, min(limit, len(lengths)) + 1):
        tokens = run_tokens(lengths[:size], padding_cost)
        if size > 1 and tokens > budget:
            break
        rest = split_costs(lengths[size:], limit, budget, pass_tokens, padding_cost)
        options.append((rest[0] + pass_tokens + tokens, rest[1] + 1))
    return min(options)


class CheapPadding(FakeEncoder):
    """A model whose padded positions cost a share of a real token (as a masked LM whose vocabulary head
    runs on real tokens only); binary fractions, so costs add up exactly in any order."""

    def __init__(self, padding_cost: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self._padding_cost = padding_cost

    @property
    def padded_token_cost(self) -> float:
        return self._padding_cost


@pytest.mark.parametrize("padding_cost", [1.0, 0.5, 0.125])
@pytest.mark.parametrize("seed", range(4))
def test_the_cut_is_the_oldest_texts_run_in_a_cheapest_split(seed, padding_cost):
    """_cheapest_run against brute force: the run it returns holds the oldest text, fits the limits,
    and some cheapest split of all the waiting texts (least cost, then fewest passes) contains it;
    for a model whose padding costs less than real tokens too."""
    from services.inference.batcher import _Item

    rng = random.Random(seed)
    b = DynamicBatcher(CheapPadding(padding_cost), max_batch_size=8, max_batch_tokens=1, batch_wait_ms=0)
    c = padding_cost
    try:
        for _ in range(200):
            n = rng.randint(1, 9)
            lengths = [rng.choice([0, 1, 2, 3, 5, 8, 13, 21]) for _ in range(n)]
            limit = rng.randint(1, 6)
            budget = rng.choice([4, 10, 30, 1000])
            pass_tokens = rng.choice([0, 3, 10, 64])
            items = [_Item(None, 0, f"text {i}", i, 0.0, length) for i, length in enumerate(lengths)]
            chosen = b._cheapest_run(items, limit, budget, pass_tokens)
            case = (lengths, limit, budget, pass_tokens)
            assert 0 in [it.seq for it in chosen], case
            assert len(chosen) <= limit and (len(chosen) == 1 or run_tokens(
                [it.length for it in chosen], c) <= budget), case
            order = sorted(range(n), key=lambda i: (lengths[i], i))
            s = order.index(chosen[0].seq)
            e = s + len(chosen)
            assert [it.seq for it in chosen] == order[s:e], case  # a run in length order
            ordered = [lengths[i] for i in order]
            before = split_costs(ordered[:s], limit, budget, pass_tokens, c)
            after = split_costs(ordered[e:], limit, budget, pass_tokens, c)
            own = pass_tokens + run_tokens(ordered[s:e], c)
            got = (before[0] + own + after[0], before[1] + 1 + after[1])
            assert got == split_costs(ordered, limit, budget, pass_tokens, c), case
    finally:
        b.close_sync()


@pytest.mark.parametrize("pass_tokens, padding_cost, passes", [(64, 1.0, 2), (10_000, 1.0, 1), (64, 0.09, 1)])
def test_a_mixed_crowd_runs_as_passes_of_similar_lengths(pass_tokens, padding_cost, passes):
    """Short and long texts waiting together, well within the token budget: with a small per-pass
    cost they run as a pass of the short ones and a pass of the long ones (not one pass padded to
    the longest); with a per-pass cost above the padding saved, as one pass; and as one pass for a
    model whose padded positions cost 9% of a token (SPLADE-tiny's), as splitting would save it less
    than the pass costs. Each caller gets its own vectors either way."""
    enc = CheapPadding(padding_cost)
    short = [words(n, f"s{n}") for n in (1, 2, 3, 4)]
    long = [words(n, f"l{n}") for n in (40, 41, 42, 43)]
    interleaved = [x for pair in zip(short, long, strict=True) for x in pair]

    async def main():
        b = DynamicBatcher(enc, max_batch_size=32, max_batch_tokens=1024, batch_wait_ms=0, pipeline_depth=1,
                           pass_tokens=pass_tokens)
        enc.gate.clear()  # hold the model so every text waits together
        first = asyncio.create_task(b.encode_texts(["hold one"], True))
        while not enc.seen.prepares:
            await asyncio.sleep(0.005)
        rest = [asyncio.create_task(b.encode_texts([t], True)) for t in interleaved]
        while b.queue_depth < len(interleaved):
            await asyncio.sleep(0.005)
        enc.gate.set()
        out = await asyncio.gather(first, *rest)
        await b.close()
        return out

    out = run(main())
    for text, vec in zip(interleaved, out[1:], strict=True):
        np.testing.assert_allclose(vec[0], enc.expected_text(text, True), rtol=1e-5, atol=1e-6)
    batches = [sorted(batch) for batch in enc.seen.text_batches[1:]]
    if passes == 2:
        assert sorted(batches) == sorted([sorted(short), sorted(long)]), batches
    else:
        assert batches == [sorted(interleaved)], batches


def test_pass_tokens_must_not_be_negative():
    with pytest.raises(ValueError, match="pass_tokens must be >= 0"):
        DynamicBatcher(FakeEncoder(), pass_tokens=-1)


def test_batch_pass_tokens_setting_reaches_the_batcher_and_bad_values_name_it():
    def service(env: dict) -> InferenceService:
        return InferenceService(FakeEncoder(), InferenceSettings.from_env({"MODEL": "m", **env}))

    assert service({"BATCH_PASS_TOKENS": "7"}).batcher.pass_tokens == 7
    assert service({}).batcher.pass_tokens == 64
    for bad in ("-1", "many"):
        with pytest.raises(SettingsError, match="BATCH_PASS_TOKENS"):
            InferenceSettings.from_env({"MODEL": "m", "BATCH_PASS_TOKENS": bad})
