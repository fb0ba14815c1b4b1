"""EdgeStore index builds run out of process on a copy: reads and writes go on (writes are journaled and
replayed onto the copy before it is swapped in), crashes (kill -9 included) recover every acknowledged
write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from gateway.storage import edge_optimizer, edge_store
from gateway.storage.base import (
    CollectionSchema,
    DenseVectorConfig,
    FieldRange,
    Filter,
    PointRecord,
    StoreError,
)
from gateway.storage.edge_store import EdgeStore

DIM = 16
REPO = Path(__file__).resolve().parents[1]


def points(n: int, start: int = 0, seed: int = 0) -> list[PointRecord]:
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    return [
        PointRecord(str(uuid.UUID(int=start + i + 1)), {"i": start + i}, {"v": vecs[i].tolist()})
        for i in range(n)
    ]


@pytest.fixture
def store(tmp_path):
    st = EdgeStore(tmp_path / "data", auto_optimize_points=0, indexing_threshold_kb=1)
    st.create_collection(CollectionSchema("items", {"v": DenseVectorConfig(DIM, "cosine")}))
    st.upsert("items", points(600))
    yield st
    st.close()


def pause_builds(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Index builds stop after the optimised copy is made: (copy_built, release) events."""
    copy_built = threading.Event()
    release = threading.Event()
    real_build = edge_optimizer.build_in_child

    def paused_build(work, timeout_s=None, **kwargs):
        real_build(work, timeout_s, **kwargs)
        copy_built.set()
        assert release.wait(60)

    monkeypatch.setattr(edge_optimizer, "build_in_child", paused_build)
    return copy_built, release


def leftovers(st: EdgeStore) -> list[str]:
    folder = st.data_dir / "collections" / "items"
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("shard."))


def test_optimize_builds_out_of_process_and_keeps_results(store):
    query = points(1, seed=9)[0].dense["v"]
    before = [h.id for h in store.search_dense("items", "v", query, limit=10)]
    store.optimize("items")
    after = [h.id for h in store.search_dense("items", "v", query, limit=10)]
    assert len(set(before) & set(after)) >= 8  # HNSW is approximate; the exact top-10 mostly agrees
    assert store.count("items") == 600
    assert leftovers(store) == []
    store.upsert("items", points(5, start=600, seed=3))  # the swapped-in shard takes writes
    assert store.count("items") == 605


def writes_during_build(st: EdgeStore) -> None:
    """Every kind of write: new points, an overwrite, deletes by id and by filter (ids 1..600 exist)."""
    st.upsert("items", points(3, start=600, seed=5))
    st.upsert("items", [PointRecord(str(uuid.UUID(int=11)), {"i": -1}, points(1, seed=6)[0].dense)])
    st.delete_points("items", [str(uuid.UUID(int=k)) for k in (1, 2, 3)])
    assert st.delete_by_filter("items", Filter(must=[FieldRange("i", gte=100, lt=110)])) == 10


def check_writes_kept(st: EdgeStore) -> None:
    assert st.count("items") == 600 + 3 - 3 - 10
    ids = [str(uuid.UUID(int=k)) for k in range(1, 604)]
    found = {r.id: r.payload["i"] for r in st.retrieve("items", ids)}
    assert len(found) == 590
    assert found[str(uuid.UUID(int=11))] == -1
    assert {str(uuid.UUID(int=k)) for k in (1, 2, 3, *range(101, 111))}.isdisjoint(found)
    assert all(str(uuid.UUID(int=k)) in found for k in (601, 602, 603))


@pytest.mark.parametrize("catch_up_done", [edge_store.CATCH_UP_DONE_WRITES, 0])
def test_writes_during_a_build_are_answered_at_once_and_kept_after_the_swap(store, monkeypatch,
                                                                            catch_up_done):
    # catch_up_done=0: the journal is replayed in rounds while writers go on (else all at the swap)
    monkeypatch.setattr(edge_store, "CATCH_UP_DONE_WRITES", catch_up_done)
    copy_built, release = pause_builds(monkeypatch)
    live = store._get("items").shard
    optimizer = threading.Thread(target=store.optimize, args=("items",))
    optimizer.start()
    assert copy_built.wait(60)

    # while the build is held, reads are answered and every write returns (this thread would hang here
    # if writes waited for the swap: the build is released only after them)
    assert store.count("items") == 600
    assert len(store.search_dense("items", "v", points(1, seed=4)[0].dense["v"], limit=5)) == 5
    writes_during_build(store)
    assert optimizer.is_alive() and store._get("items").shard is live

    release.set()
    optimizer.join(60)
    assert not optimizer.is_alive()
    assert store._get("items").shard is not live  # the built copy was swapped in
    check_writes_kept(store)
    assert leftovers(store) == []
    store.upsert("items", points(2, start=700, seed=8))  # and takes writes
    assert store.count("items") == 592


KILL_SCRIPT = """
import os, signal, sys, threading, uuid
from gateway.storage import edge_optimizer
from gateway.storage.base import CollectionSchema, DenseVectorConfig
from gateway.storage.edge_store import EdgeStore
from tests.test_edge_optimizer import DIM, points, writes_during_build

data, where = sys.argv[1], sys.argv[2]
st = EdgeStore(data, auto_optimize_points=0, indexing_threshold_kb=1)
st.create_collection(CollectionSchema("items", {"v": DenseVectorConfig(DIM, "cosine")}))
st.upsert("items", points(600))
built, release = threading.Event(), threading.Event()
real_build, real_swap = edge_optimizer.build_in_child, edge_optimizer.swap_in

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def build(work, *args, **kwargs):
    real_build(work, *args, **kwargs)
    built.set()
    release.wait()

def swap(shard_dir, work):
    if where == "mid-swap":  # the live shard moved aside, the copy not yet in its place
        shard_dir.rename(edge_optimizer.old_dir(shard_dir))
        die()
    real_swap(shard_dir, work)
    die()  # "swapped": before the new shard is even loaded

edge_optimizer.build_in_child, edge_optimizer.swap_in = build, swap
threading.Thread(target=st.optimize, args=("items",), daemon=True).start()
built.wait()
writes_during_build(st)
print("acknowledged", flush=True)
if where == "building":
    die()
release.set()
threading.Event().wait(120)
"""


@pytest.mark.parametrize("where", ["building", "mid-swap", "swapped"])
def test_kill_9_during_a_build_keeps_every_acknowledged_write(tmp_path, where):
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(data), where], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.split() == ["acknowledged"], proc.stderr
    st = EdgeStore(data, auto_optimize_points=0)
    try:
        check_writes_kept(st)
        assert leftovers(st) == []
    finally:
        st.close()


def test_a_failed_build_leaves_the_live_shard_alone(store, monkeypatch):
    monkeypatch.setattr(edge_optimizer.sys, "executable", "/bin/false")
    with pytest.raises(StoreError, match="index build .* failed"):
        store.optimize("items")
    assert store.count("items") == 600
    assert leftovers(store) == []
    store.upsert("items", points(2, start=600))
    assert store.count("items") == 602


def test_delete_during_a_build_discards_it(store, monkeypatch):
    copy_built, release = pause_builds(monkeypatch)
    optimizer = threading.Thread(target=store.optimize, args=("items",))
    optimizer.start()
    assert copy_built.wait(60)
    deleter = threading.Thread(target=store.delete_collection, args=("items",))
    deleter.start()
    deleter.join(0.3)
    assert not store.collection_exists("items")  # gone for everyone at once
    release.set()
    optimizer.join(60)
    deleter.join(60)
    assert not (store.data_dir / "collections" / "items").exists()


def test_recover_finishes_or_undoes_an_interrupted_swap(tmp_path):
    data = tmp_path / "data"
    st = EdgeStore(data, auto_optimize_points=0)
    st.create_collection(CollectionSchema("items", {"v": DenseVectorConfig(DIM, "cosine")}))
    st.upsert("items", points(50))
    st.close()
    shard = data / "collections" / "items" / "shard"
    # crash after "shard -> shard.old", before the copy took its place; plus a stale half-built copy
    shard.rename(edge_optimizer.old_dir(shard))
    edge_optimizer.work_dir(shard).mkdir()
    (edge_optimizer.work_dir(shard) / "junk").write_text("half written")

    st = EdgeStore(data, auto_optimize_points=0)
    try:
        assert st.count("items") == 50
        assert sorted(p.name for p in shard.parent.iterdir() if p.name.startswith("shard")) == ["shard"]
    finally:
        st.close()


def test_background_build_after_enough_writes(tmp_path):
    st = EdgeStore(tmp_path / "data", auto_optimize_points=200, indexing_threshold_kb=1)
    try:
        st.create_collection(CollectionSchema("items", {"v": DenseVectorConfig(DIM, "cosine")}))
        for k in range(3):
            st.upsert("items", points(100, start=100 * k, seed=k))
        assert st._threads  # 200 writes started a build in the background
        for thread in list(st._threads):
            thread.join(60)
        assert st.count("items") == 300
        assert leftovers(st) == []
    finally:
        st.close()


def test_child_entry_point_reports_errors(tmp_path, capsys):
    assert edge_optimizer.main([]) == 2
    assert edge_optimizer.main([str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err.strip()
