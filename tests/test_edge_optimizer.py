"""EdgeStore index builds run out of process on a copy: reads go on, writes wait, crashes recover."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest

from gateway.storage import edge_optimizer
from gateway.storage.base import CollectionSchema, DenseVectorConfig, PointRecord, StoreError
from gateway.storage.edge_store import EdgeStore

DIM = 16


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
    real_build = edge_optimizer.build_optimized_copy

    def paused_build(shard_dir, timeout_s=None, **kwargs):
        work = real_build(shard_dir, timeout_s, **kwargs)
        copy_built.set()
        assert release.wait(30)
        return work

    monkeypatch.setattr(edge_optimizer, "build_optimized_copy", paused_build)
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


def test_reads_go_on_and_writes_wait_while_indexes_build(store, monkeypatch):
    copy_built, release = pause_builds(monkeypatch)
    optimizer = threading.Thread(target=store.optimize, args=("items",))
    optimizer.start()
    assert copy_built.wait(60)

    # reads are answered from the old shard meanwhile
    assert store.count("items") == 600
    assert len(store.search_dense("items", "v", points(1, seed=4)[0].dense["v"], limit=5)) == 5
    # a write waits for the swap, so nothing written meanwhile can be lost
    writer = threading.Thread(target=store.upsert, args=("items", points(3, start=600, seed=5)))
    writer.start()
    writer.join(0.3)
    assert writer.is_alive()

    release.set()
    optimizer.join(60)
    writer.join(60)
    assert not optimizer.is_alive() and not writer.is_alive()
    assert store.count("items") == 603
    assert leftovers(store) == []


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
