"""The batcher's early cut (BATCH_EARLY_CUT) A/B on a simulated model, in one run.

The model is simulated: a forward pass of n texts sleeps ``overhead + per_item * n`` (defaults
8 ms + 5 ms per text, from the README's raw all-MiniLM-L6-v2 rows on 2 cores: 75 texts/s at batch
1, 189 at batch 32), so the batching
policy is measured apart from CPU contention: a sleeping model does not compete with the other
jobs on a shared machine, and the comparison is of the policy alone. The real model's A/B is
``bench/inference.py --ab BATCH_EARLY_CUT=0,1``.

Loads, each run with the early cut off (A) and on (B), alternating for ``--rounds`` rounds:

  closed loop   N clients, each sending one text, waiting for it, pausing a random time
                (exponential, mean ``--think-ms``), again;
  open loop     texts arriving as a Poisson process at a given rate (``--rates``).

Printed per load: texts/s, mean and p95 latency, mean batch size, and B/A of each
(best round for throughput, least for latency).

    python bench/batcher_policy.py [--seconds 5] [--rounds 3] [--clients 32,8] [--think-ms 0,5,20]
                                   [--rates 50,150] [--overhead-ms 8] [--per-item-ms 5]
                                   [--batch-wait-ms 2]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.inference.batcher import DynamicBatcher  # noqa: E402
from services.inference.loaders.base import TEXT, Encoder, EncoderInfo  # noqa: E402


class SimulatedModel(Encoder):
    """Text model whose forward pass of n texts sleeps ``overhead + per_item * n`` seconds."""

    def __init__(self, overhead: float, per_item: float) -> None:
        self.info = EncoderInfo(name="simulated", type="simulated", dimensions=8, modalities=(TEXT,),
                                device="cpu", precision="fp32", normalize=False, max_text_tokens=0)
        self.overhead = overhead
        self.per_item = per_item
        self.batch_sizes: list[int] = []

    def text_length(self, text: str) -> int:
        return 1

    def prepare_texts(self, texts: list[str]) -> list[str]:
        return texts

    def forward_texts(self, prepared: list[str]) -> np.ndarray:
        n = len(prepared)
        self.batch_sizes.append(n)
        time.sleep(self.overhead + self.per_item * n)
        return np.ones((n, self.dimensions), dtype=np.float32)


@dataclass
class Result:
    rate: float
    mean_ms: float
    p95_ms: float
    mean_batch: float


async def closed_loop(b: DynamicBatcher, clients: int, think: float, seconds: float) -> list[float]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client(c: int) -> None:
        rng = random.Random(c)
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            await b.encode_texts([f"text {c}"], False)
            latencies.append(time.perf_counter() - start)
            if think:
                await asyncio.sleep(rng.expovariate(1.0 / think))

    await asyncio.gather(*(client(c) for c in range(clients)))
    return latencies


async def open_loop(b: DynamicBatcher, rate: float, seconds: float) -> list[float]:
    latencies: list[float] = []
    rng = random.Random(1)

    async def one(i: int) -> None:
        start = time.perf_counter()
        await b.encode_texts([f"text {i}"], False)
        latencies.append(time.perf_counter() - start)

    tasks = []
    start = time.perf_counter()
    next_at, i = start, 0
    while next_at < start + seconds:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
        i += 1
        next_at += rng.expovariate(rate)
    await asyncio.gather(*tasks)
    return latencies


async def measure(load: tuple, early_cut: bool, args) -> Result:
    model = SimulatedModel(args.overhead_ms / 1000, args.per_item_ms / 1000)
    b = DynamicBatcher(model, max_batch_size=args.max_batch, batch_wait_ms=args.batch_wait_ms,
                       max_queue=100_000, early_cut=early_cut)
    # warm the estimates with a short run of the same load, as a server in steady state has them
    kind, value, think = load
    warm = min(1.0, args.seconds / 4)
    if kind == "closed":
        await closed_loop(b, value, think, warm)
    else:
        await open_loop(b, value, warm)
    model.batch_sizes.clear()
    start = time.perf_counter()
    if kind == "closed":
        lat = await closed_loop(b, value, think, args.seconds)
    else:
        lat = await open_loop(b, value, args.seconds)
    wall = time.perf_counter() - start
    await b.close()
    lat.sort()
    return Result(len(lat) / wall, 1000 * statistics.fmean(lat), 1000 * lat[int(0.95 * (len(lat) - 1))],
                  statistics.fmean(model.batch_sizes))


def label(load: tuple) -> str:
    kind, value, think = load
    if kind == "closed":
        return f"{value} clients, think {think * 1000:g} ms"
    return f"open loop, {value:g} texts/s"


async def main_async(args) -> None:
    loads: list[tuple] = [("closed", n, t / 1000) for n in args.clients for t in args.think_ms]
    loads += [("open", r, 0.0) for r in args.rates]
    print(f"simulated model: {args.overhead_ms:g} ms + {args.per_item_ms:g} ms per text; MAX_BATCH_SIZE "
          f"{args.max_batch}, BATCH_WAIT_MS {args.batch_wait_ms:g}; {args.rounds} alternating rounds of "
          f"{args.seconds:g} s", flush=True)
    rows = []
    for load in loads:
        runs: dict[bool, list[Result]] = {False: [], True: []}
        for _ in range(args.rounds):
            for early in (False, True):
                runs[early].append(await measure(load, early, args))
        a, b = runs[False], runs[True]
        ra, rb = max(r.rate for r in a), max(r.rate for r in b)
        ma, mb = min(r.mean_ms for r in a), min(r.mean_ms for r in b)
        pa, pb = min(r.p95_ms for r in a), min(r.p95_ms for r in b)
        ba, bb = statistics.fmean(r.mean_batch for r in a), statistics.fmean(r.mean_batch for r in b)
        rows.append((label(load), ra, rb, ma, mb, pa, pb, ba, bb))
        print(f"  {label(load):28s} texts/s {ra:7.1f} -> {rb:7.1f} ({rb / ra:.2f})   mean ms {ma:6.1f} -> "
              f"{mb:6.1f} ({mb / ma:.2f})   p95 ms {pa:6.1f} -> {pb:6.1f}   batch {ba:5.1f} -> {bb:5.1f}",
              flush=True)
    print("\n| load | texts/s off → on | B/A | mean latency ms off → on | B/A | p95 ms off → on "
          "| mean batch off → on |")
    print("|---|---|---|---|---|---|---|")
    for name, ra, rb, ma, mb, pa, pb, ba, bb in rows:
        print(f"| {name} | {ra:.0f} → {rb:.0f} | {rb / ra:.2f} | {ma:.1f} → {mb:.1f} | {mb / ma:.2f} "
              f"| {pa:.1f} → {pb:.1f} | {ba:.1f} → {bb:.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", default="32,8")
    p.add_argument("--think-ms", default="0,5,20")
    p.add_argument("--rates", default="50,150", help="open-loop arrival rates, texts/s ('' for none)")
    p.add_argument("--overhead-ms", type=float, default=8.0, help="fixed time of one forward pass")
    p.add_argument("--per-item-ms", type=float, default=5.0, help="time per text in a forward pass")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--batch-wait-ms", type=float, default=2.0)
    args = p.parse_args()
    args.clients = [int(x) for x in args.clients.split(",") if x]
    args.think_ms = [float(x) for x in args.think_ms.split(",") if x]
    args.rates = [float(x) for x in args.rates.split(",") if x]
    if args.seconds <= 0 or args.rounds < 1 or args.overhead_ms < 0 or args.per_item_ms < 0:
        p.error("--seconds and --rounds must be positive, the model's times >= 0")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
