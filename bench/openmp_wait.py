"""What the idle-OpenMP-worker policy costs and gains on this machine, per GOMP_SPINCOUNT value.

torch's CPU wheel runs its intra-op threads on libgomp. After each parallel region an idle worker
spins ``GOMP_SPINCOUNT`` times and then sleeps on a futex; the next region must wake it. The
inference service runs with ``OMP_WAIT_POLICY=PASSIVE`` and ``GOMP_SPINCOUNT=10000`` unless the operator sets
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` (README, Configuration). For each spin count, in its own
process (libgomp reads the variable once), in alternating rounds:

  region   - a small parallel op (a 645k-float multiply, the size of one activation of a
             ~15-text MiniLM batch) issued every ~30 us, as a forward pass issues its ops:
             least / median wall time per op. The least is what an idle second core gives; the
             difference to the spinning rows is the wake-up a sleeping worker costs per region.
  spin     - CPU the process spends on one such region and a 30 ms pause (median); above the
             spin-0 row, that is the spin a worker burns before it sleeps.
  forward  - MiniLM passes on length-grouped batches (``--batch``, default 16: the size of a
             served 32-client batch), in-process: texts/s, CPU ms per text, cores busy, and
             voluntary context switches per pass (mostly the worker falling asleep between regions).

    python bench/openmp_wait.py [--spins 0,1000,10000] [--rounds 3] [--seconds 4] [--batch 16]

A spin count that wins here on an idle machine still has to win served (``bench/inference.py
--ab GOMP_SPINCOUNT=0,N``): a spinning worker competes with the event loop for the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, tempfile, time
sys.path.insert(0, {repo!r}); sys.path.insert(0, {bench!r})
import torch

def voluntary_switches():
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            status = open(f"/proc/self/task/{{tid}}/status").read()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total

x = torch.randn(420, 1536)
y = torch.empty_like(x)

def op():
    torch.mul(x, 1.5, out=y)

for _ in range(300):
    op()
lat = []
for _ in range(4000):
    s = time.perf_counter(); op(); lat.append(time.perf_counter() - s)
    t = time.perf_counter()
    while time.perf_counter() - t < 30e-6:
        pass
lat.sort()
spin = []
for _ in range(40):
    c = time.process_time(); op(); time.sleep(0.03); spin.append(time.process_time() - c)
spin.sort()

import inference as bench
enc = bench.load_in_process(bench.minilm_env(), tempfile.mkdtemp())
batches = bench.length_grouped_batches(enc, bench.make_texts(512), {batch})
enc.encode_text(batches[0])
w0, c0, v0, done, passes = time.perf_counter(), time.process_time(), voluntary_switches(), 0, 0
while time.perf_counter() - w0 < {seconds}:
    b = batches[passes % len(batches)]
    enc.encode_text(b)
    done += len(b); passes += 1
wall, cpu = time.perf_counter() - w0, time.process_time() - c0
print(json.dumps({{"region_min_us": lat[0] * 1e6, "region_med_us": lat[len(lat) // 2] * 1e6,
                  "spin_us": spin[len(spin) // 2] * 1e6, "texts_s": done / wall, "cpu_ms": cpu * 1000 / done,
                  "cores": cpu / wall, "switches_per_pass": (voluntary_switches() - v0) / passes}}))
"""


def run_child(spin: str, args) -> dict:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": spin, "HF_HUB_OFFLINE": "1"}
    code = CHILD.format(repo=str(REPO), bench=str(REPO / "bench"), batch=args.batch, seconds=args.seconds)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    if done.returncode:
        raise SystemExit(f"GOMP_SPINCOUNT={spin} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spins", default="0,1000,10000", help="GOMP_SPINCOUNT values (service default: 10000)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0, help="MiniLM passes per round and value")
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args()
    spins = [s.strip() for s in args.spins.split(",") if s.strip()]
    results: dict[str, list[dict]] = {s: [] for s in spins}
    for r in range(args.rounds):
        for s in spins:
            res = run_child(s, args)
            results[s].append(res)
            print(f"  round {r + 1} GOMP_SPINCOUNT={s:>7}: region {res['region_min_us']:6.1f} us least, "
                  f"{res['region_med_us']:6.1f} median; CPU per region + pause {res['spin_us']:7.0f} us; "
                  f"MiniLM batch {args.batch}: {res['texts_s']:6.1f} texts/s, "
                  f"{res['cpu_ms']:5.2f} CPU ms/text, {res['cores']:.2f} cores, "
                  f"{res['switches_per_pass']:5.0f} sleeps/pass", flush=True)
    base = spins[0]
    print(f"\n| GOMP_SPINCOUNT | region least / median, us | CPU per region + 30 ms pause, us "
          f"| MiniLM texts/s (best) | / {base} | CPU ms per text (least) | sleeps per pass |")
    print("|---|---|---|---|---|---|---|")
    best_base = max(x["texts_s"] for x in results[base])
    for s in spins:
        rs = results[s]
        best = max(x["texts_s"] for x in rs)
        least = min(x["region_min_us"] for x in rs)
        median = min(x["region_med_us"] for x in rs)
        print(f"| {s} | {least:.0f} / {median:.0f} | {min(x['spin_us'] for x in rs):.0f} | {best:.1f} "
              f"| {best / best_base:.2f} | {min(x['cpu_ms'] for x in rs):.2f} "
              f"| {min(x['switches_per_pass'] for x in rs):.0f} |")


if __name__ == "__main__":
    main()
