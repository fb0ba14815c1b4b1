"""libgomp's throttled spinning, measured: a forward pass in the model thread while another thread keeps
an OpenMP team of its own.

libgomp keeps a team of worker threads for every thread that has started a parallel region, for as long
as that thread lives. Once it manages more threads than there are CPUs it "throttles" every team: an idle
worker spins ``min(1000 or 100, GOMP_SPINCOUNT)`` times (0 under OMP_WAIT_POLICY=PASSIVE: none) instead
of ``GOMP_SPINCOUNT`` before it sleeps, so each parallel region of a forward pass may wait for a sleeping
worker to wake. In the inference service the preparation threads run torch operations on images (to
tensor, normalise: a team each), so the model thread's passes run throttled.

Each round times a batch-1 forward pass of OpenCLIP ViT-S-32 (random weights) in a worker thread:
(A) no other thread holds a team; (B) one more thread has run a single torch operation and then waits,
idle (its team stays alive, so this measures the throttling alone, not CPU competition). The model is
built in a thread that has exited, and the main thread never starts a parallel region. The service's
OpenMP policy applies (``services.inference.cpu_threads``) unless the environment sets one.

    python bench/openmp_teams.py [--rounds 3] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.inference.cpu_threads import default_openmp_wait, openmp_policy  # noqa: E402

default_openmp_wait()  # before torch loads


def in_thread(fn, *args):
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn(*args)))
    thread.start()
    thread.join()
    return out[0]


def build():
    from services.inference.loaders.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    import open_clip
    import torch

    torch.manual_seed(0)
    return open_clip.create_model("ViT-S-32", pretrained=None).eval()


def time_forward(model, seconds: float) -> tuple[float, float]:
    """(wall ms, CPU ms of the whole process) per batch-1 image forward pass, in the calling thread."""
    import torch

    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        for _ in range(3):
            model.encode_image(x)
        n, wall, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - wall < seconds:
            model.encode_image(x)
            n += 1
        return (time.perf_counter() - wall) * 1000 / n, (time.process_time() - cpu) * 1000 / n


def other_team(ready: threading.Event, done: threading.Event) -> None:
    """Start one parallel region (a team is made for this thread), then wait, idle, until told."""
    import torch

    y = torch.randn(3, 224, 224)
    (y - 0.5) / 0.25  # 150,528 floats: above torch's grain size, so it runs as a parallel region
    ready.set()
    done.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    model = in_thread(build)
    import torch

    print(f"{len(os.sched_getaffinity(0))} usable cores, torch threads {torch.get_num_threads()}, "
          f"idle OpenMP workers: {openmp_policy()}")
    rows: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
    for r in range(args.rounds):
        rows["A"].append(in_thread(time_forward, model, args.seconds))
        ready, done = threading.Event(), threading.Event()
        holder = threading.Thread(target=other_team, args=(ready, done))
        holder.start()
        ready.wait()
        try:
            rows["B"].append(in_thread(time_forward, model, args.seconds))
        finally:
            done.set()
            holder.join()
        (wa, ca), (wb, cb) = rows["A"][-1], rows["B"][-1]
        print(f"round {r + 1}: (A) alone {wa:6.1f} ms wall {ca:6.1f} ms CPU   (B) another team alive "
              f"{wb:6.1f} ms wall {cb:6.1f} ms CPU   B/A wall {wb / wa:.2f}", flush=True)
    best_a = min(w for w, _ in rows["A"])
    best_b = min(w for w, _ in rows["B"])
    print(f"best round: (A) {best_a:.1f} ms, (B) {best_b:.1f} ms per image, B/A = {best_b / best_a:.2f}")


if __name__ == "__main__":
    main()
