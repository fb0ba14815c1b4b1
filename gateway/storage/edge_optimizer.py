"""Build a qdrant-edge shard's HNSW and payload indexes in a child process, then swap the result in.

qdrant-edge 0.9 holds Python's GIL for the whole of ``EdgeShard.optimize()`` (an HNSW build over
100k x 384 vectors takes tens of seconds), which would freeze every thread of the gateway: health
checks, other collections, requests already vectorizing. So the index is built out of process:

1. the caller stops writes to the shard for a moment, flushes it and copies the folder to
   ``shard.optimizing`` next to it (:func:`copy_shard`), then lets writes go on: they are applied to the
   live shard (whose WAL makes them durable, as always) and kept in a journal;
2. ``python -m gateway.storage.edge_optimizer <copy> [--index JSON]... [--no-optimize]`` loads the copy,
   creates the payload indexes given (``{"key", "kind", "language"}``: they hold the GIL too, ~1 s per
   field at 100k points), optimises unless told not to, flushes, closes (:func:`build_in_child`);
3. the caller replays the journal onto the built copy (most of it while writes go on, the rest with
   writes stopped), flushes it, closes its live shard, swaps the folders (``shard`` -> ``shard.old``,
   the copy -> ``shard``, ``shard.old`` removed) and loads the new one.

A crash at any point leaves either the old shard or the new one in place, each holding every
acknowledged write (the copy gets the journal, flushed, before it is swapped in): :func:`recover` (run
before a shard is opened) finishes or undoes an interrupted swap and removes stale copies.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WORK_SUFFIX = ".optimizing"
OLD_SUFFIX = ".old"


class OptimizeError(RuntimeError):
    """Building the indexes out of process failed; the live shard is unchanged."""


def work_dir(shard_dir: Path) -> Path:
    return shard_dir.with_name(shard_dir.name + WORK_SUFFIX)


def old_dir(shard_dir: Path) -> Path:
    return shard_dir.with_name(shard_dir.name + OLD_SUFFIX)


def recover(shard_dir: Path) -> None:
    """Make ``shard_dir`` the one complete shard after an interrupted optimisation."""
    old, work = old_dir(shard_dir), work_dir(shard_dir)
    if not shard_dir.exists() and old.exists():
        log.warning("restoring %s after an interrupted index swap", shard_dir)
        old.rename(shard_dir)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    if work.exists():
        shutil.rmtree(work, ignore_errors=True)


def copy_shard(shard_dir: Path) -> Path:
    """Copy the (flushed, write-quiet) shard next to itself; the copy's path."""
    work = work_dir(shard_dir)
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    # the WAL preallocates its next segment in a background thread (tmp-open-N, then renamed): such a
    # file can vanish while it is being copied, and the copy does not need it
    try:
        shutil.copytree(shard_dir, work, ignore=shutil.ignore_patterns("tmp-open-*"))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("copied %s for an index build in %.1fs", shard_dir, time.perf_counter() - started)
    return work


def build_in_child(work: Path, timeout_s: float | None = None, *,
                   indexes: Sequence[dict[str, Any]] = (), optimize: bool = True) -> None:
    """Create ``indexes`` on the shard copy ``work`` and optimise it (unless not ``optimize``) in a child
    process; the copy is removed when that fails."""
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "gateway.storage.edge_optimizer", str(work)]
    for spec in indexes:
        cmd += ["--index", json.dumps(spec)]
    if not optimize:
        cmd.append("--no-optimize")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        shutil.rmtree(work, ignore_errors=True)
        raise OptimizeError(f"index build of {work} took longer than {timeout_s}s") from None
    if proc.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise OptimizeError(f"index build of {work} failed (exit {proc.returncode}): {detail[0]}")
    log.info("built indexes of %s out of process in %.1fs", work, time.perf_counter() - started)


def swap_in(shard_dir: Path, work: Path) -> None:
    """Replace ``shard_dir`` by ``work`` (the caller has closed the shard); undone on failure."""
    old = old_dir(shard_dir)
    shutil.rmtree(old, ignore_errors=True)
    shard_dir.rename(old)
    try:
        work.rename(shard_dir)
    except OSError:
        old.rename(shard_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def optimize_in_place(path: str, indexes: Sequence[dict[str, Any]] = (), optimize: bool = True) -> None:
    """Load the shard at ``path``, create ``indexes``, build its vector indexes, flush and close it (the
    child's job)."""
    import qdrant_edge as qe

    from gateway.storage.base import PayloadIndex
    from gateway.storage.edge_store import edge_index_schema

    shard = qe.EdgeShard.load(path)
    try:
        for spec in indexes:
            schema = edge_index_schema(PayloadIndex(spec["kind"], spec.get("language")))
            shard.update(qe.UpdateOperation.create_field_index(spec["key"], schema))
        if optimize:
            shard.optimize()
        shard.flush()
    finally:
        shard.close()


USAGE = "usage: python -m gateway.storage.edge_optimizer SHARD_DIR [--index JSON]... [--no-optimize]"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    indexes: list[dict[str, Any]] = []
    optimize = True
    paths: list[str] = []
    while args:
        arg = args.pop(0)
        if arg == "--index" and args:
            indexes.append(json.loads(args.pop(0)))
        elif arg == "--no-optimize":
            optimize = False
        else:
            paths.append(arg)
    if len(paths) != 1:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        optimize_in_place(paths[0], indexes, optimize)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
