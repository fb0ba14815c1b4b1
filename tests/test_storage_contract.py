"""One contract suite for the storage interface, run on EdgeStore (qdrant-edge) and QdrantStore (:memory:).

Expected results are computed independently here (numpy brute force for dense search, Python predicates
for filters, the BM25/IDF formula for sparse search, gateway.storage.fusion on the full lists for hybrid).
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.bm25 import Bm25Settings, make_encoder
from gateway.storage import fusion
from gateway.storage.base import (
    CollectionNotFound,
    CollectionSchema,
    DenseVectorConfig,
    FieldAny,
    FieldMatch,
    FieldRange,
    Filter,
    FusedPart,
    PointRecord,
    SparseVec,
    Store,
    StoreError,
)
from gateway.storage.edge_store import EdgeStore
from gateway.storage.qdrant_store import QdrantStore

DIM = 8
N_POINTS = 60
COLORS = ["red", "green", "blue"]
WORDS = [
    "lamp", "chair", "table", "desk", "sofa", "shelf", "rug", "mirror", "clock", "vase", "stool", "bench",
]


def make_store(kind: str, path: Path) -> Store:
    return EdgeStore(path / "edge") if kind == "edge" else QdrantStore(location=":memory:")


@pytest.fixture(params=["edge", "qdrant"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = make_store(request.param, tmp_path)
    yield s
    s.close()


def pid(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


def schema(name: str = "items") -> CollectionSchema:
    return CollectionSchema(
        name=name,
        dense={
            "cos": DenseVectorConfig(DIM, "cosine"),
            "dot": DenseVectorConfig(DIM, "dot"),
            "euc": DenseVectorConfig(DIM, "euclid"),
        },
        sparse=["bm25"],
        hnsw_m=8,
        hnsw_ef_construct=64,
    )


ENCODER = make_encoder(Bm25Settings(fields=["title"], avg_len=4.0))


def dataset() -> tuple[np.ndarray, list[dict[str, Any]], list[str]]:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(N_POINTS, DIM)).astype(np.float32)
    payloads: list[dict[str, Any]] = []
    texts: list[str] = []
    for i in range(N_POINTS):
        # word i % 12 always, plus a second word whose frequency varies: distinct BM25 scores
        words = [WORDS[i % len(WORDS)]] + [WORDS[(i * 7) % len(WORDS)]] * (1 + i % 3)
        words += [WORDS[(i * 5 + i // 12) % len(WORDS)]] * (1 + (i // 12) % 2)
        text = " ".join(words)
        texts.append(text)
        payloads.append(
            {
                "i": i,
                "title": text,
                "color": COLORS[i % 3],
                "price": float(i) * 1.5,
                "tags": [f"t{i % 4}", f"t{i % 5}"],
                "meta": {"rank": i % 10, "brand": "acme" if i % 2 else "zeta"},
                "in_stock": i % 4 != 0,
            }
        )
    return vectors, payloads, texts


def load(store: Store, name: str = "items") -> tuple[np.ndarray, list[dict[str, Any]], list[str]]:
    vectors, payloads, texts = dataset()
    store.create_collection(schema(name))
    records = [
        PointRecord(
            id=pid(i),
            payload=payloads[i],
            dense={"cos": vectors[i].tolist(), "dot": vectors[i].tolist(), "euc": vectors[i].tolist()},
            sparse={"bm25": ENCODER.document(texts[i])},
        )
        for i in range(N_POINTS)
    ]
    store.upsert(name, records[:25])
    store.upsert(name, records[25:])
    return vectors, payloads, texts


def expected_dense(vectors: np.ndarray, query: np.ndarray, distance: str) -> tuple[list[int], np.ndarray]:
    if distance == "cosine":
        scores = (vectors @ query) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query))
        order = np.argsort(-scores, kind="stable")
    elif distance == "dot":
        scores = vectors @ query
        order = np.argsort(-scores, kind="stable")
    else:
        scores = np.linalg.norm(vectors - query, axis=1)
        order = np.argsort(scores, kind="stable")
    return order.tolist(), scores


def expected_bm25(texts: list[str], query: str, allowed: set[int] | None = None) -> dict[int, float]:
    """score = sum_t idf(t) * w(t, d), idf = ln(1 + (N - n + 0.5) / (n + 0.5)) over the whole collection."""
    docs = [ENCODER.document(t) for t in texts]
    q = ENCODER.query(query)
    n_docs = len(docs)
    df = {idx: sum(1 for d in docs if idx in d.indices) for idx in q.indices}
    scores: dict[int, float] = {}
    for i, d in enumerate(docs):
        if allowed is not None and i not in allowed:
            continue
        weights = dict(zip(d.indices, d.values, strict=True))
        shared = [idx for idx in q.indices if idx in weights]
        if shared:
            scores[i] = sum(
                math.log(1 + (n_docs - df[idx] + 0.5) / (df[idx] + 0.5)) * weights[idx] for idx in shared
            )
    return scores


def ids_of(hits: list[Any]) -> list[str]:
    return [h.id for h in hits]


# --------------------------------------------------------------------------------------------- collections
def test_create_exists_delete(store: Store) -> None:
    assert not store.collection_exists("items")
    store.create_collection(schema())
    assert store.collection_exists("items")
    with pytest.raises(StoreError, match="already exists"):
        store.create_collection(schema())
    assert store.count("items") == 0
    assert store.delete_collection("items") is True
    assert not store.collection_exists("items")
    assert store.delete_collection("items") is False
    store.create_collection(schema())  # the name is free again
    assert store.count("items") == 0


def test_schema_validation() -> None:
    with pytest.raises(StoreError, match="distance"):
        DenseVectorConfig(4, "manhattan")
    with pytest.raises(StoreError, match="size"):
        DenseVectorConfig(0)
    with pytest.raises(StoreError, match="name"):
        CollectionSchema("bad name!", dense={"v": DenseVectorConfig(4)})
    with pytest.raises(StoreError, match="name"):
        CollectionSchema("_system", dense={"v": DenseVectorConfig(4)})
    with pytest.raises(StoreError, match="sparse"):
        CollectionSchema("x", dense={"v": DenseVectorConfig(4)}, sparse=["v"])


def test_definitions(store: Store) -> None:
    assert store.load_definition("items") is None
    assert store.list_definitions() == []
    d1 = {
        "name": "items",
        "vectorizers": {"v": {"model": "clip", "weights": {"title": 0.7}}},
        "bm25": {"k1": 1.2},
    }
    d2 = {"name": "alpha", "nested": [1, 2.5, None, True, "ü"]}
    store.save_definition("items", d1)
    store.save_definition("alpha", d2)
    assert store.load_definition("items") == d1
    assert store.list_definitions() == [d2, d1]  # sorted by collection name
    d1b = {**d1, "bm25": {"k1": 2.0}}
    store.save_definition("items", d1b)
    assert store.load_definition("items") == d1b
    assert len(store.list_definitions()) == 2
    store.delete_definition("items")
    assert store.load_definition("items") is None
    store.delete_definition("items")  # absent: no error
    assert store.list_definitions() == [d2]
    # definitions are not collections
    assert not store.collection_exists("alpha")


# --------------------------------------------------------------------------------------------- points
def test_upsert_retrieve_delete_count(store: Store) -> None:
    vectors, payloads, texts = load(store)
    assert store.count("items") == N_POINTS
    got = store.retrieve("items", [pid(3), pid(999), pid(1)])
    assert [r.id for r in got] == [pid(3), pid(1)]  # order kept, missing skipped
    assert got[0].payload == payloads[3]
    assert got[0].dense == {} and got[0].sparse == {}
    full = store.retrieve("items", [pid(5)], with_vectors=True)[0]
    np.testing.assert_allclose(full.dense["dot"], vectors[5], rtol=1e-6)
    np.testing.assert_allclose(full.dense["euc"], vectors[5], rtol=1e-6)
    np.testing.assert_allclose(full.dense["cos"], vectors[5] / np.linalg.norm(vectors[5]), rtol=1e-5)
    expected_sparse = ENCODER.document(texts[5])
    assert sorted(full.sparse["bm25"].indices) == sorted(expected_sparse.indices)
    got_sparse = dict(zip(full.sparse["bm25"].indices, full.sparse["bm25"].values, strict=True))
    for idx, val in zip(expected_sparse.indices, expected_sparse.values, strict=True):
        assert got_sparse[idx] == pytest.approx(val, rel=1e-6)

    # upsert replaces the whole point
    store.upsert("items", [PointRecord(pid(3), {"i": 3, "new": True}, {"dot": [1.0] * DIM}, {})])
    again = store.retrieve("items", [pid(3)], with_vectors=True)[0]
    assert again.payload == {"i": 3, "new": True}
    assert set(again.dense) == {"dot"} and again.sparse == {}
    assert store.count("items") == N_POINTS

    # ids are normalised UUIDs: upper-case form addresses the same point
    assert store.retrieve("items", [pid(4).upper()])[0].id == pid(4)
    store.delete_points("items", [pid(3), pid(4), pid(999)])
    assert store.count("items") == N_POINTS - 2
    assert store.retrieve("items", [pid(3), pid(4)]) == []


def test_bad_input_names_the_field(store: Store) -> None:
    load(store)
    with pytest.raises(StoreError, match="id"):
        store.upsert("items", [PointRecord("not-a-uuid", {}, {"cos": [0.0] * DIM})])
    with pytest.raises(StoreError, match="dimensions"):
        store.upsert("items", [PointRecord(pid(1000), {}, {"cos": [0.1] * (DIM + 1)})])
    with pytest.raises(StoreError, match="dimensions"):
        store.search_dense("items", "cos", [0.1] * 3)
    with pytest.raises(StoreError, match="vector"):
        store.search_dense("items", "nope", [0.1] * DIM)
    with pytest.raises(StoreError, match="vector"):
        store.search_sparse("items", "cos", SparseVec([1], [1.0]))
    with pytest.raises(StoreError, match="alpha"):
        store.search_hybrid("items", "cos", [0.1] * DIM, "bm25", SparseVec([1], [1.0]), alpha=1.5)
    with pytest.raises(StoreError, match="fusion"):
        store.search_hybrid(
            "items", "cos", [0.1] * DIM, "bm25", SparseVec([1], [1.0]), alpha=0.5, fusion="max"  # type: ignore[arg-type]
        )
    with pytest.raises(StoreError, match="limit"):
        store.search_dense("items", "cos", [0.1] * DIM, limit=0)
    with pytest.raises(StoreError, match="offset"):
        store.search_dense("items", "cos", [0.1] * DIM, offset=-1)
    assert store.count("items") == N_POINTS  # nothing half-written


# --------------------------------------------------------------------------------------------- dense search
@pytest.mark.parametrize("vector_name,distance", [("cos", "cosine"), ("dot", "dot"), ("euc", "euclid")])
def test_dense_search_order_and_scores(store: Store, vector_name: str, distance: str) -> None:
    vectors, payloads, _ = load(store)
    query = np.random.default_rng(11).normal(size=DIM).astype(np.float32)
    order, scores = expected_dense(vectors, query, distance)
    hits = store.search_dense("items", vector_name, query.tolist(), limit=15)
    assert ids_of(hits) == [pid(i) for i in order[:15]]
    for hit, i in zip(hits, order[:15], strict=True):
        assert hit.score == pytest.approx(float(scores[i]), rel=1e-4, abs=1e-5)
        assert hit.payload == payloads[i]


def test_limit_offset_and_payload_selection(store: Store) -> None:
    vectors, payloads, _ = load(store)
    query = vectors[0] + 0.1
    everything = store.search_dense("items", "cos", query.tolist(), limit=N_POINTS)
    assert len(everything) == N_POINTS
    page = store.search_dense("items", "cos", query.tolist(), limit=7, offset=5)
    assert ids_of(page) == ids_of(everything)[5:12]
    tail = store.search_dense("items", "cos", query.tolist(), limit=10, offset=N_POINTS - 3)
    assert ids_of(tail) == ids_of(everything)[-3:]

    some = store.search_dense("items", "cos", query.tolist(), limit=3, with_payload=["color", "meta"])
    for hit in some:
        i = int(uuid.UUID(hit.id).int) - 1
        assert hit.payload == {"color": payloads[i]["color"], "meta": payloads[i]["meta"]}
    none = store.search_dense("items", "cos", query.tolist(), limit=3, with_payload=False)
    assert all(h.payload is None for h in none)


FILTER_CASES: list[tuple[str, Filter, Callable[[dict[str, Any]], bool]]] = [
    ("match", Filter(must=[FieldMatch("color", "red")]), lambda p: p["color"] == "red"),
    ("match_int", Filter(must=[FieldMatch("i", 7)]), lambda p: p["i"] == 7),
    ("match_float", Filter(must=[FieldMatch("price", 15.0)]), lambda p: p["price"] == 15.0),
    ("match_in_array", Filter(must=[FieldMatch("tags", "t2")]), lambda p: "t2" in p["tags"]),
    ("match_bool", Filter(must=[FieldMatch("in_stock", False)]), lambda p: p["in_stock"] is False),
    ("any_of", Filter(must=[FieldAny("color", ["red", "blue"])]), lambda p: p["color"] in ("red", "blue")),
    ("any_of_array", Filter(must=[FieldAny("tags", ["t3"])]), lambda p: "t3" in p["tags"]),
    ("range", Filter(must=[FieldRange("price", gte=15.0, lt=45.0)]), lambda p: 15.0 <= p["price"] < 45.0),
    ("range_open", Filter(must=[FieldRange("price", gt=60.0)]), lambda p: p["price"] > 60.0),
    ("must_not", Filter(must_not=[FieldMatch("color", "green")]), lambda p: p["color"] != "green"),
    (
        "should",
        Filter(should=[FieldMatch("color", "green"), FieldRange("price", lte=6.0)]),
        lambda p: p["color"] == "green" or p["price"] <= 6.0,
    ),
    ("dotted_key", Filter(must=[FieldMatch("meta.brand", "acme")]), lambda p: p["meta"]["brand"] == "acme"),
    (
        "nested",
        Filter(
            must=[
                FieldRange("meta.rank", gte=2),
                Filter(should=[FieldMatch("color", "red"), Filter(must=[FieldMatch("meta.brand", "zeta")])]),
            ],
            must_not=[Filter(must=[FieldAny("tags", ["t0"]), FieldMatch("in_stock", True)])],
        ),
        lambda p: p["meta"]["rank"] >= 2
        and (p["color"] == "red" or p["meta"]["brand"] == "zeta")
        and not ("t0" in p["tags"] and p["in_stock"]),
    ),
    ("nothing", Filter(must=[FieldMatch("color", "purple")]), lambda p: False),
]


@pytest.mark.parametrize("case", FILTER_CASES, ids=[c[0] for c in FILTER_CASES])
def test_filters(store: Store, case: tuple[str, Filter, Callable[[dict[str, Any]], bool]]) -> None:
    _, flt, predicate = case
    vectors, payloads, texts = load(store)
    allowed = {i for i, p in enumerate(payloads) if predicate(p)}
    assert store.count("items", flt) == len(allowed)
    query = np.random.default_rng(3).normal(size=DIM)
    order, _ = expected_dense(vectors, query.astype(np.float32), "dot")
    hits = store.search_dense("items", "dot", query.tolist(), filter=flt, limit=N_POINTS)
    assert ids_of(hits) == [pid(i) for i in order if i in allowed]
    sparse_q = ENCODER.query("lamp chair rug")
    sparse_hits = store.search_sparse("items", "bm25", sparse_q, filter=flt, limit=N_POINTS)
    assert {h.id for h in sparse_hits} == {pid(i) for i in expected_bm25(texts, "lamp chair rug", allowed)}


def test_payload_indexes_keep_filters_exact(store: Store) -> None:
    _, payloads, _ = load(store)
    store.create_payload_index("items", "color", "keyword")
    store.create_payload_index("items", "price", "float")
    store.create_payload_index("items", "meta.rank", "integer")
    store.create_payload_index("items", "in_stock", "bool")
    flt = Filter(
        must=[FieldMatch("color", "blue"), FieldRange("price", lt=60.0), FieldMatch("in_stock", True)],
        must_not=[FieldMatch("meta.rank", 5)],
    )
    expected = [
        p for p in payloads
        if p["color"] == "blue" and p["price"] < 60.0 and p["in_stock"] and p["meta"]["rank"] != 5
    ]
    assert store.count("items", flt) == len(expected) > 0
    with pytest.raises(StoreError, match="kind"):
        store.create_payload_index("items", "color", "money")
    with pytest.raises(CollectionNotFound):
        store.create_payload_index("ghost", "color", "keyword")


# --------------------------------------------------------------------------------------------- sparse search
@pytest.mark.parametrize("query", ["lamp", "chair rug", "mirror clock vase", "sofa SOFA shelf!"])
def test_sparse_search_is_bm25_with_idf(store: Store, query: str) -> None:
    _, _, texts = load(store)
    expected = expected_bm25(texts, query)
    hits = store.search_sparse("items", "bm25", ENCODER.query(query), limit=N_POINTS)
    assert len(hits) == len(expected) > 0
    for hit in hits:
        i = int(uuid.UUID(hit.id).int) - 1
        assert hit.score == pytest.approx(expected[i], rel=1e-5)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    page = store.search_sparse("items", "bm25", ENCODER.query(query), limit=3, offset=2)
    assert [h.score for h in page] == pytest.approx(scores[2:5], rel=1e-6)


def test_points_without_bm25_text_do_not_change_idf(store: Store) -> None:
    _, _, texts = load(store)
    before = store.search_sparse("items", "bm25", ENCODER.query("sofa lamp"), limit=5)
    empty = ENCODER.document("  ...  ")
    assert empty.indices == []
    no_text = [PointRecord(pid(900 + k), {}, {"dot": [1.0] * DIM}, {"bm25": empty}) for k in range(7)]
    store.upsert("items", no_text)
    store.upsert("items", [PointRecord(pid(950 + k), {}, {"dot": [1.0] * DIM}) for k in range(3)])
    assert store.count("items") == N_POINTS + 10
    after = store.search_sparse("items", "bm25", ENCODER.query("sofa lamp"), limit=5)
    assert ids_of(after) == ids_of(before)
    assert [h.score for h in after] == pytest.approx([h.score for h in before], rel=1e-6)
    assert store.retrieve("items", [pid(900)], with_vectors=True)[0].sparse == {}


def test_sparse_search_unknown_terms(store: Store) -> None:
    load(store)
    assert store.search_sparse("items", "bm25", ENCODER.query("zeppelin"), limit=5) == []


# ----------------------------------------------------------------------------- plain sparse (neural sparse)
def neural_weights(n: int, vocab: int = 40, seed: int = 3) -> list[SparseVec]:
    """Model-like sparse vectors: a few token ids with positive weights each."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = np.sort(rng.choice(vocab, size=int(rng.integers(3, 9)), replace=False))
        out.append(SparseVec(ids.tolist(), rng.uniform(0.1, 3.0, size=ids.size).round(4).tolist()))
    return out


def load_plain(store: Store) -> list[SparseVec]:
    store.create_collection(CollectionSchema("docs", dense={"cos": DenseVectorConfig(DIM)}, sparse=["bm25"],
                                             sparse_plain=["splade"]))
    docs = neural_weights(N_POINTS)
    rng = np.random.default_rng(5)
    store.upsert("docs", [
        PointRecord(pid(i), {"i": i}, {"cos": rng.normal(size=DIM).tolist()},
                    {"splade": docs[i], "bm25": SparseVec(docs[i].indices, [1.0] * len(docs[i].indices))})
        for i in range(N_POINTS)])
    return docs


def test_plain_sparse_scores_are_dot_products_without_idf(store: Store) -> None:
    docs = load_plain(store)
    query = SparseVec([2, 7, 11, 30], [0.5, 1.5, 2.0, 0.25])
    q = dict(zip(query.indices, query.values, strict=True))
    expected = {i: sum(w * q.get(t, 0.0) for t, w in zip(d.indices, d.values, strict=True))
                for i, d in enumerate(docs)}
    expected = {i: s for i, s in expected.items() if s > 0}
    hits = store.search_sparse("docs", "splade", query, limit=N_POINTS)
    assert len(hits) == len(expected) > 5
    for hit in hits:
        assert hit.score == pytest.approx(expected[int(uuid.UUID(hit.id).int) - 1], rel=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # the same values under the IDF modifier score differently: the modifier is per vector
    bm25 = store.search_sparse("docs", "bm25", SparseVec(query.indices, [1.0] * 4), limit=3)
    plain = store.search_sparse("docs", "splade", SparseVec(query.indices, [1.0] * 4), limit=3)
    assert [h.score for h in bm25] != pytest.approx([h.score for h in plain], rel=1e-3)
    stored = store.retrieve("docs", [pid(3)], with_vectors=True)[0].sparse["splade"]
    assert stored.indices == docs[3].indices and stored.values == pytest.approx(docs[3].values, rel=1e-6)


def test_plain_sparse_schema_checks(store: Store) -> None:
    with pytest.raises(StoreError, match="sparse_plain"):
        CollectionSchema("x", sparse=["a"], sparse_plain=["a"])
    store.create_collection(CollectionSchema("only", sparse_plain=["splade"]))
    store.upsert("only", [PointRecord(pid(1), {}, {}, {"splade": SparseVec([1, 5], [0.5, 2.0])})])
    (hit,) = store.search_sparse("only", "splade", SparseVec([5], [1.0]), limit=3)
    assert hit.score == pytest.approx(2.0)
    with pytest.raises(StoreError, match="vector"):
        store.search_sparse("only", "other", SparseVec([5], [1.0]))


@pytest.mark.parametrize("method", ["rrf", "relative_score"])
@pytest.mark.parametrize("weights", [(0.5, 0.2, 0.3), (1.0, 1.0, 1.0), (0.0, 0.4, 0.6)])
def test_fused_search_of_three_lists_matches_formula(store: Store, method: str,
                                                     weights: tuple[float, float, float]) -> None:
    docs = load_plain(store)
    rng = np.random.default_rng(11)
    dense = rng.normal(size=DIM).tolist()
    bm25 = SparseVec([2, 7, 11, 30], [1.0] * 4)
    neural = SparseVec([3, 7, 19, 30], [0.7, 1.2, 0.4, 2.0])
    lists = [store.search_dense("docs", "cos", dense, limit=N_POINTS, with_payload=False),
             store.search_sparse("docs", "bm25", bm25, limit=N_POINTS, with_payload=False),
             store.search_sparse("docs", "splade", neural, limit=N_POINTS, with_payload=False)]
    expected = fusion.fuse_lists(method, [(w, [fusion.Ranked(h.id, h.score) for h in hits])
                                          for w, hits in zip(weights, lists, strict=True)])
    parts = [FusedPart("cos", dense, weights[0]), FusedPart("bm25", bm25, weights[1]),
             FusedPart("splade", neural, weights[2])]
    hits = store.search_fused("docs", parts, fusion=method, limit=10, prefetch_limit=N_POINTS)
    assert_same_ranking(hits, expected, 0)
    page = store.search_fused("docs", parts, fusion=method, limit=5, offset=4, prefetch_limit=N_POINTS,
                              with_payload=["i"])
    assert_same_ranking(page, expected, 4)
    assert all(set(h.payload or {}) == {"i"} for h in page)
    if weights[0] == 0.0:  # a list weighing 0 takes no part: only documents of the sparse lists come back
        sparse_ids = {h.id for h in lists[1]} | {h.id for h in lists[2]}
        every = store.search_fused("docs", parts, fusion=method, limit=N_POINTS, prefetch_limit=N_POINTS)
        assert {h.id for h in every} == sparse_ids
    assert len(docs) == N_POINTS


def test_fused_search_refuses_bad_parts(store: Store) -> None:
    load_plain(store)
    dense = [0.1] * DIM
    with pytest.raises(StoreError, match="weights"):
        zero = [FusedPart("cos", dense, 0.0), FusedPart("bm25", SparseVec([1], [1.0]), 0.0)]
        store.search_fused("docs", zero)
    with pytest.raises(StoreError, match="weights"):
        store.search_fused("docs", [FusedPart("cos", dense, -1.0)])
    with pytest.raises(StoreError, match="vector"):
        store.search_fused("docs", [FusedPart("nope", dense, 1.0)])
    with pytest.raises(StoreError, match="fusion"):
        store.search_fused("docs", [FusedPart("cos", dense, 1.0)], fusion="max")


# --------------------------------------------------------------------------------------------- hybrid
HYBRID_QUERY = "lamp chair desk"


def hybrid_inputs(store: Store) -> tuple[list[float], SparseVec, list[Any], list[Any]]:
    vectors, _, _ = load(store)
    dense = (vectors[4] * 0.6 + vectors[9] * 0.4).tolist()
    sparse = ENCODER.query(HYBRID_QUERY)
    vec_hits = store.search_dense("items", "cos", dense, limit=N_POINTS, with_payload=False)
    bm25_hits = store.search_sparse("items", "bm25", sparse, limit=N_POINTS, with_payload=False)
    return dense, sparse, vec_hits, bm25_hits


def assert_same_ranking(hits: list[Any], expected: list[fusion.Fused], offset: int) -> None:
    """hits == expected[offset:offset + len(hits)], where documents with equal scores may swap places."""
    assert len(hits) == min(len(hits), len(expected) - offset) and hits
    assert len({h.id for h in hits}) == len(hits)
    for pos, hit in enumerate(hits):
        want = expected[offset + pos].score
        assert hit.score == pytest.approx(want, rel=1e-5), pos
        tied = {f.id for f in expected if f.score == pytest.approx(want, rel=1e-6)}
        assert hit.id in tied, pos


@pytest.mark.parametrize("method", ["rrf", "relative_score"])
def test_hybrid_alpha_extremes(store: Store, method: str) -> None:
    dense, sparse, vec_hits, bm25_hits = hybrid_inputs(store)
    only_vec = store.search_hybrid("items", "cos", dense, "bm25", sparse, alpha=1.0, fusion=method, limit=20)
    assert ids_of(only_vec) == ids_of(vec_hits)[:20]
    only_bm25 = store.search_hybrid("items", "cos", dense, "bm25", sparse, alpha=0.0, fusion=method, limit=50)
    n_bm25 = len(bm25_hits)
    assert 5 < n_bm25 < 50  # the query matches only some documents ...
    assert ids_of(only_bm25) == ids_of(bm25_hits)  # ... and alpha=0 returns exactly those, in BM25 order


def reference_fusion(method: str, vec_hits: list[Any], bm25_hits: list[Any],
                     alpha: float) -> list[fusion.Fused]:
    """The README's fusion formulas computed directly from the two ranked lists, best first.

    Independent of gateway.storage.fusion (which the adapters may use), so a bug there cannot hide.
    """
    scores: dict[Any, float] = {}
    if method == "rrf":  # k = 60, w = alpha / m and (1 - alpha) / m, m = max(alpha, 1 - alpha)
        m = max(alpha, 1.0 - alpha)
        for weight, hits in ((alpha / m, vec_hits), ((1.0 - alpha) / m, bm25_hits)):
            if weight > 0:
                for pos, hit in enumerate(hits):
                    scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (60 - 1 + (pos + 1) / weight)
    else:  # alpha * minmax(vec) + (1 - alpha) * minmax(bm25), a missing document gets 0 from that list
        for weight, hits in ((alpha, vec_hits), (1.0 - alpha, bm25_hits)):
            if weight > 0 and hits:
                best, worst = hits[0].score, hits[-1].score
                for hit in hits:
                    norm = 1.0 if best == worst else (hit.score - worst) / (best - worst)
                    scores[hit.id] = scores.get(hit.id, 0.0) + weight * norm
    return [fusion.Fused(key, score) for key, score in sorted(scores.items(), key=lambda kv: -kv[1])]


@pytest.mark.parametrize("method", ["rrf", "relative_score"])
@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.8])
def test_hybrid_fusion_matches_formula(store: Store, method: str, alpha: float) -> None:
    dense, sparse, vec_hits, bm25_hits = hybrid_inputs(store)
    expected = reference_fusion(method, vec_hits, bm25_hits, alpha)
    hits = store.search_hybrid(
        "items", "cos", dense, "bm25", sparse, alpha=alpha, fusion=method, limit=10, prefetch_limit=N_POINTS
    )
    assert_same_ranking(hits, expected, 0)
    page = store.search_hybrid(
        "items", "cos", dense, "bm25", sparse, alpha=alpha, fusion=method, limit=5, offset=3,
        prefetch_limit=N_POINTS, with_payload=["color"],
    )
    assert_same_ranking(page, expected, 3)
    assert all(set(h.payload or {}) == {"color"} for h in page)
    # at an intermediate alpha the ranking is neither list's own
    assert ids_of(hits) != ids_of(vec_hits)[:10] and ids_of(hits) != ids_of(bm25_hits)[:10]


def test_hybrid_with_filter(store: Store) -> None:
    dense, sparse, _, _ = hybrid_inputs(store)
    flt = Filter(must=[FieldMatch("color", "blue")])
    hits = store.search_hybrid("items", "cos", dense, "bm25", sparse, alpha=0.5, filter=flt, limit=N_POINTS)
    assert hits and all(h.payload["color"] == "blue" for h in hits)
    vec = store.search_dense("items", "cos", dense, filter=flt, limit=N_POINTS)
    bm = store.search_sparse("items", "bm25", sparse, filter=flt, limit=N_POINTS)
    assert {h.id for h in hits} == {h.id for h in vec} | {h.id for h in bm}


# --------------------------------------------------------------------------------------------- scroll
def scroll_all(store: Store, name: str = "items", **kwargs: Any) -> tuple[list[Any], int]:
    """Every page of a scroll: (records in order, number of pages)."""
    out: list[Any] = []
    start: str | None = None
    pages = 0
    while True:
        records, start = store.scroll(name, cursor=start, **kwargs)
        out += records
        pages += 1
        assert pages < 1000, "the scroll does not end"
        if start is None:
            return out, pages


def test_scroll_pages_every_point_once_in_id_order(store: Store) -> None:
    vectors, payloads, _ = load(store)
    records, pages = scroll_all(store, limit=7)
    assert [r.id for r in records] == [pid(i) for i in range(N_POINTS)]  # point-id order
    assert pages == math.ceil(N_POINTS / 7)
    assert all(r.payload == payloads[i] and r.dense == {} for i, r in enumerate(records))
    first, next_id = store.scroll("items", limit=7)
    assert next_id == pid(7)  # the id the next page starts from
    assert store.scroll("items", limit=N_POINTS)[1] is None  # the last page says so
    some, _ = store.scroll("items", limit=3, with_payload=["color", "i"], with_vectors=True)
    for r in some:
        i = r.payload["i"]
        assert r.payload == {"color": payloads[i]["color"], "i": i}
        np.testing.assert_allclose(r.dense["dot"], vectors[i], rtol=1e-6)
        assert set(r.sparse) == {"bm25"}
    bare, _ = store.scroll("items", limit=2, with_payload=False)
    assert [r.payload for r in bare] == [{}, {}]
    with pytest.raises(StoreError, match="limit"):
        store.scroll("items", limit=0)
    with pytest.raises(StoreError, match="id"):
        store.scroll("items", cursor="not-a-uuid")


@pytest.mark.parametrize("case", FILTER_CASES[:10:3], ids=[c[0] for c in FILTER_CASES[:10:3]])
def test_scroll_with_filter(store: Store, case: tuple[str, Filter, Callable[[dict[str, Any]], bool]]) -> None:
    _, flt, predicate = case
    _, payloads, _ = load(store)
    records, _ = scroll_all(store, filter=flt, limit=4)
    assert [r.id for r in records] == [pid(i) for i, p in enumerate(payloads) if predicate(p)]


def test_scroll_is_stable_under_writes_between_pages(store: Store) -> None:
    """Ids are the cursor: inserts, deletes and updates between pages never skip or repeat a point."""
    load(store)
    seen: list[str] = []
    deleted: set[str] = set()
    records, start = store.scroll("items", limit=10)
    seen += [r.id for r in records]
    step = 0
    while start is not None:
        step += 1
        # new points before and after the cursor, a deleted cursor point, an updated visited point
        store.upsert("items", [PointRecord(str(uuid.UUID(int=(1 << 100) + step)), {"new": True},
                                           {"dot": [1.0] * DIM}),
                               PointRecord(pid(1000 + step), {"new": True}, {"dot": [1.0] * DIM})])
        store.upsert("items", [PointRecord(seen[0], {"updated": step}, {"dot": [1.0] * DIM})])
        if step % 2:
            store.delete_points("items", [start])  # the very point the next page starts from
            deleted.add(start)
        records, start = store.scroll("items", cursor=start, limit=10)
        seen += [r.id for r in records]
    originals = {pid(i) for i in range(N_POINTS)}
    assert len(seen) == len(set(seen)), "a point came twice"
    assert originals - deleted <= set(seen), "a point that was there throughout was skipped"
    assert not deleted & set(seen)


def test_scroll_is_stable_under_concurrent_writes(store: Store) -> None:
    load(store)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        # bounded: writes no longer pause while an index build runs, so an unbounded writer could add
        # new points ahead of the cursor faster than pages of 3 are read; 1,500 new points at most
        # keep the scroll under scroll_all's 1,000 pages
        k = 0
        try:
            while not stop.is_set() and k < 1500:
                k += 1
                store.upsert("items", [PointRecord(str(uuid.uuid4()), {"k": k}, {"dot": [1.0] * DIM})])
                store.upsert("items", [PointRecord(pid(k % N_POINTS), {"i": k % N_POINTS, "w": k},
                                                   {"dot": [1.0] * DIM})])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        records, _ = scroll_all(store, limit=3)
    finally:
        stop.set()
        thread.join()
    assert not errors
    ids = [r.id for r in records]
    assert len(ids) == len(set(ids))
    assert {pid(i) for i in range(N_POINTS)} <= set(ids)


# --------------------------------------------------------------------------------------------- count, delete
def test_count_exact_and_estimate(store: Store) -> None:
    _, payloads, _ = load(store)
    flt = Filter(must=[FieldMatch("color", "red")])
    reds = sum(p["color"] == "red" for p in payloads)
    assert store.count("items", flt, exact=True) == reds
    assert 0 <= store.count("items", flt, exact=False) <= N_POINTS
    assert store.count("items", exact=False) == N_POINTS


def test_delete_by_filter_counts_exactly(store: Store) -> None:
    _, payloads, _ = load(store)
    flt = Filter(must=[FieldRange("price", lt=30.0)], must_not=[FieldMatch("color", "red")])
    doomed = {i for i, p in enumerate(payloads) if p["price"] < 30.0 and p["color"] != "red"}
    assert store.delete_by_filter("items", flt) == len(doomed) > 0
    assert store.count("items") == N_POINTS - len(doomed)
    left = {int(uuid.UUID(r.id).int) - 1 for r in scroll_all(store, limit=100)[0]}
    assert left == set(range(N_POINTS)) - doomed
    assert store.delete_by_filter("items", flt) == 0  # nothing matches any more
    assert store.delete_by_filter("items", None) == N_POINTS - len(doomed)
    assert store.count("items") == 0


# --------------------------------------------------------------------------------------------- batch search
class CallCounter:
    """Wraps an engine object and counts the calls of the named methods."""

    def __init__(self, inner: Any, names: tuple[str, ...]) -> None:
        self._inner = inner
        self._names = names
        self.calls: list[str] = []

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if attr in self._names:
            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(attr)
                return value(*args, **kwargs)
            return counted
        return value


def count_engine_calls(store: Store) -> CallCounter:
    if isinstance(store, EdgeStore):
        coll = store._get("items")
        counter = CallCounter(coll.shard, ("query", "query_batch"))
        coll.shard = counter  # type: ignore[assignment]
    else:
        assert isinstance(store, QdrantStore)
        counter = CallCounter(store.client, ("query_points", "query_batch_points", "search", "search_batch"))
        store.client = counter  # type: ignore[assignment]
    return counter


def test_search_batch_matches_single_searches_in_one_engine_call(store: Store) -> None:
    from gateway.storage.base import DenseQuery, HybridQuery, SearchSpec, SparseQuery

    vectors, _, _ = load(store)
    dense = (vectors[4] * 0.6 + vectors[9] * 0.4).tolist()
    sparse = ENCODER.query(HYBRID_QUERY)
    blue = Filter(must=[FieldMatch("color", "blue")])
    specs = [
        SearchSpec(DenseQuery("cos", dense), limit=5),
        SearchSpec(DenseQuery("euc", vectors[3].tolist()), filter=blue, limit=4, offset=1,
                   with_payload=["color"]),
        SearchSpec(SparseQuery("bm25", sparse), limit=6, with_payload=False),
        SearchSpec(HybridQuery("cos", dense, "bm25", sparse, 0.3, "rrf"), limit=5, offset=2),
        SearchSpec(HybridQuery("dot", dense, "bm25", sparse, 0.6, "relative_score"), filter=blue, limit=4,
                   with_payload=["i", "color"]),
        SearchSpec(HybridQuery("cos", dense, "bm25", sparse, 1.0, "relative_score"), limit=3),
        SearchSpec(SparseQuery("bm25", ENCODER.query("zeppelin"))),
    ]
    singles = [
        store.search_dense("items", "cos", dense, limit=5),
        store.search_dense("items", "euc", vectors[3].tolist(), filter=blue, limit=4, offset=1,
                           with_payload=["color"]),
        store.search_sparse("items", "bm25", sparse, limit=6, with_payload=False),
        store.search_hybrid("items", "cos", dense, "bm25", sparse, alpha=0.3, limit=5, offset=2),
        store.search_hybrid("items", "dot", dense, "bm25", sparse, alpha=0.6, fusion="relative_score",
                            filter=blue, limit=4, with_payload=["i", "color"]),
        store.search_hybrid("items", "cos", dense, "bm25", sparse, alpha=1.0, fusion="relative_score",
                            limit=3),
        [],
    ]
    counter = count_engine_calls(store)
    batch = store.search_batch("items", specs)
    assert len(counter.calls) == 1, counter.calls
    assert len(batch) == len(specs)
    for got, want in zip(batch, singles, strict=True):
        assert ids_of(got) == ids_of(want)
        assert [h.score for h in got] == pytest.approx([h.score for h in want], rel=1e-6)
        assert [h.payload for h in got] == [h.payload for h in want]
    assert batch[4] and all(set(h.payload) == {"i", "color"} for h in batch[4])
    assert store.search_batch("items", []) == []
    with pytest.raises(StoreError, match="limit"):
        store.search_batch("items", [specs[0], SearchSpec(DenseQuery("cos", dense), limit=0)])


# --------------------------------------------------------------------------------------------- errors
def test_unknown_collection(store: Store) -> None:
    sv = SparseVec([1], [1.0])
    calls: list[Callable[[], Any]] = [
        lambda: store.upsert("ghost", [PointRecord(pid(1), {}, {"v": [0.0]})]),
        lambda: store.retrieve("ghost", [pid(1)]),
        lambda: store.delete_points("ghost", [pid(1)]),
        lambda: store.count("ghost"),
        lambda: store.search_dense("ghost", "v", [0.0]),
        lambda: store.search_sparse("ghost", "s", sv),
        lambda: store.search_hybrid("ghost", "v", [0.0], "s", sv, alpha=0.5),
        lambda: store.count("_polyvec_definitions"),
        lambda: store.scroll("ghost"),
        lambda: store.delete_by_filter("ghost", None),
        lambda: store.search_batch("ghost", []),
    ]
    for call in calls:
        with pytest.raises(CollectionNotFound):
            call()
    assert store.collection_exists("ghost") is False
    assert store.delete_collection("ghost") is False


# --------------------------------------------------------------------------------------------- edge only
def test_edge_store_persists_across_restart(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "data", auto_optimize_points=10)
    vectors, payloads, texts = load(store)
    store.save_definition("items", {"name": "items", "k": 1})
    store.create_collection(CollectionSchema("other", dense={"v": DenseVectorConfig(2, "dot")}))
    store.delete_collection("other")
    store.optimize("items")
    query = vectors[10].tolist()
    before = ids_of(store.search_dense("items", "cos", query, limit=10))
    store.close()

    reopened = EdgeStore(tmp_path / "data")
    try:
        assert reopened.collection_exists("items") and not reopened.collection_exists("other")
        assert reopened.count("items") == N_POINTS
        assert reopened.retrieve("items", [pid(8)])[0].payload == payloads[8]
        assert ids_of(reopened.search_dense("items", "cos", query, limit=10)) == before
        assert before[0] == pid(10)
        assert reopened.load_definition("items") == {"name": "items", "k": 1}
        expected = expected_bm25(texts, "sofa")
        hits = reopened.search_sparse("items", "bm25", ENCODER.query("sofa"), limit=N_POINTS)
        assert {h.id for h in hits} == {pid(i) for i in expected}
        reopened.upsert("items", [PointRecord(pid(500), {"late": 1}, {"dot": [0.5] * DIM})])
        assert reopened.count("items") == N_POINTS + 1
    finally:
        reopened.close()
    third = EdgeStore(tmp_path / "data")
    try:
        assert third.count("items") == N_POINTS + 1
    finally:
        third.close()


def test_edge_store_keeps_plain_sparse_across_restart(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "edge")
    docs = load_plain(store)
    before = store.search_sparse("docs", "splade", docs[0], limit=5)
    store.close()
    store = EdgeStore(tmp_path / "edge")
    try:
        after = store.search_sparse("docs", "splade", docs[0], limit=5)
        assert ids_of(after) == ids_of(before)
        assert [h.score for h in after] == pytest.approx([h.score for h in before], rel=1e-6)
        q = dict(zip(docs[0].indices, docs[0].values, strict=True))
        assert after[0].score == pytest.approx(sum(v * v for v in q.values()), rel=1e-5)  # plain dot product
    finally:
        store.close()


def test_edge_store_builds_hnsw_and_stays_correct(tmp_path: Path) -> None:
    """Enough points to pass the indexing threshold: after optimize() the shard has HNSW-indexed vectors."""
    store = EdgeStore(tmp_path / "data", indexing_threshold_kb=100)
    try:
        rng = np.random.default_rng(5)
        n, dim = 3000, 64
        vectors = rng.normal(size=(n, dim)).astype(np.float32)
        store.create_collection(
            CollectionSchema(
                "big", dense={"v": DenseVectorConfig(dim, "dot")}, hnsw_m=16, hnsw_ef_construct=64
            )
        )
        store.upsert("big", [PointRecord(pid(i), {"i": i}, {"v": vectors[i].tolist()}) for i in range(n)])
        store.optimize("big")
        info = store._get("big").shard.info()  # noqa: SLF001 - checking the index really exists
        assert info.points_count == n
        assert info.indexed_vectors_count >= n
        query = rng.normal(size=dim).astype(np.float32)
        order, _ = expected_dense(vectors, query, "dot")
        hits = store.search_dense("big", "v", query.tolist(), limit=10)
        recall = len(set(ids_of(hits)) & {pid(i) for i in order[:10]}) / 10
        assert recall >= 0.8
    finally:
        store.close()


def test_edge_store_concurrent_writes_and_reads(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "data")
    try:
        store.create_collection(CollectionSchema("c", dense={"v": DenseVectorConfig(4, "cosine")}))
        errors: list[BaseException] = []

        def writer(base: int) -> None:
            try:
                for j in range(20):
                    i = base * 100 + j
                    vec = [1.0, float(j), 0.5, float(base)]
                    store.upsert("c", [PointRecord(pid(i), {"i": i}, {"v": vec})])
                    store.search_dense("c", "v", [1.0, 0.0, 0.0, 0.0], limit=5)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(b,)) for b in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert store.count("c") == 80
    finally:
        store.close()


def test_edge_store_removes_half_created_collection(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "data")
    store.close()
    (tmp_path / "data" / "collections" / "half").mkdir()
    again = EdgeStore(tmp_path / "data")
    try:
        assert not again.collection_exists("half")
        assert not (tmp_path / "data" / "collections" / "half").exists()
        again.create_collection(CollectionSchema("half", dense={"v": DenseVectorConfig(2)}))
        assert again.collection_exists("half")
    finally:
        again.close()


# --------------------------------------------------------------------------------------------- fusion unit
def _ranked(ids: str, scores: list[float] | None = None) -> list[fusion.Ranked]:
    scores = scores or [float(len(ids) - k) for k in range(len(ids))]
    return [fusion.Ranked(c, s) for c, s in zip(ids, scores, strict=True)]


def test_rrf_formula() -> None:
    vec, bm = _ranked("abc"), _ranked("cad")
    k = fusion.RRF_K
    # alpha = 0.5: both weights 1 -> plain RRF 1 / (k + pos)
    out = {f.id: f.score for f in fusion.rrf(vec, bm, alpha=0.5)}
    assert out["a"] == pytest.approx(1 / k + 1 / (k + 1))
    assert out["c"] == pytest.approx(1 / (k + 2) + 1 / k)
    assert out["d"] == pytest.approx(1 / (k + 2))
    # alpha = 0.8: w_vec = 1, w_bm25 = 0.25 -> 1 / (k - 1 + (pos + 1) / w)
    assert fusion.rrf_weights(0.8) == pytest.approx((1.0, 0.25))
    out = {f.id: f.score for f in fusion.rrf(vec, bm, alpha=0.8)}
    assert out["a"] == pytest.approx(1 / k + 1 / (k - 1 + 2 / 0.25))
    assert out["b"] == pytest.approx(1 / (k + 1))
    assert out["d"] == pytest.approx(1 / (k - 1 + 3 / 0.25))
    assert fusion.rrf_weights(0.2) == pytest.approx((0.25, 1.0))
    assert [f.id for f in fusion.rrf(vec, bm, 1.0)] == ["a", "b", "c"]
    assert [f.id for f in fusion.rrf(vec, bm, 0.0)] == ["c", "a", "d"]
    # equal scores: the heavier list's order decides (the vector list at alpha = 0.5)
    assert [f.id for f in fusion.rrf(_ranked("xy"), _ranked("yx"), 0.5)] == ["x", "y"]


def test_relative_score_formula() -> None:
    vec = _ranked("abc", [0.9, 0.5, 0.1])
    bm = _ranked("cd", [4.0, 2.0])
    out = {f.id: f.score for f in fusion.relative_score(vec, bm, alpha=0.75)}
    assert out["a"] == pytest.approx(0.75)
    assert out["b"] == pytest.approx(0.75 * 0.5)
    assert out["c"] == pytest.approx(0.25)
    assert out["d"] == pytest.approx(0.0)
    # euclid-like lists (lower is better, still best first) normalise the same way
    dist = _ranked("xy", [0.2, 1.2])
    assert [f.score for f in fusion.relative_score(dist, [], alpha=1.0)] == [1.0, 0.0]
    # a list of equal scores maps to 1
    assert [f.score for f in fusion.relative_score(_ranked("pq", [3.0, 3.0]), [], 1.0)] == [1.0, 1.0]
    with pytest.raises(ValueError, match="alpha"):
        fusion.relative_score(vec, bm, 1.5)


# --------------------------------------------------------------------------------------------- qdrant server
class _RecordingQdrant:
    """A loopback HTTP server that answers like a Qdrant server and records the requests it got."""

    def __init__(self) -> None:
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                owner.requests.append((self.command, self.path, dict(self.headers), body))
                if self.path == "/":
                    result: Any = {"title": "qdrant", "version": "1.15.0"}
                    payload = result
                else:
                    result = {"exists": False} if self.path.endswith("/exists") else True
                    payload = {"result": result, "status": "ok", "time": 0.0}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_qdrant_store_passes_cluster_options_and_api_key() -> None:
    server = _RecordingQdrant()
    try:
        with pytest.warns(UserWarning, match="insecure"):
            store = QdrantStore(url=server.url, api_key="s3cret", timeout=5, check_compatibility=False)
        store.create_collection(
            CollectionSchema(
                "products",
                dense={"clip": DenseVectorConfig(512, "cosine")},
                sparse=["bm25"],
                shard_number=3,
                replication_factor=2,
                hnsw_m=32,
                hnsw_ef_construct=200,
            )
        )
        store.close()
    finally:
        server.close()
    creates = [r for r in server.requests if r[0] == "PUT" and r[1].startswith("/collections/products")]
    assert len(creates) == 1
    _, _, headers, body = creates[0]
    assert {k.lower(): v for k, v in headers.items()}["api-key"] == "s3cret"
    assert body["shard_number"] == 3 and body["replication_factor"] == 2
    assert body["hnsw_config"] == {"m": 32, "ef_construct": 200}
    assert body["vectors"] == {"clip": {"size": 512, "distance": "Cosine"}}
    assert body["sparse_vectors"] == {"bm25": {"modifier": "idf"}}


def test_qdrant_store_needs_a_location() -> None:
    with pytest.raises(StoreError, match="url"):
        QdrantStore()


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_qdrant_store_rrf_fallback_matches_engine(tmp_path: Path, alpha: float) -> None:
    """Servers without weighted RRF get the same formula computed in gateway.storage.fusion."""
    store = QdrantStore(location=":memory:")
    try:
        dense, sparse, _, _ = hybrid_inputs(store)
        engine = store.search_hybrid("items", "cos", dense, "bm25", sparse, alpha=alpha, limit=15)
        store._engine_rrf = False  # noqa: SLF001 - what a too-old server switches on
        local = store.search_hybrid("items", "cos", dense, "bm25", sparse, alpha=alpha, limit=15)
        assert_same_ranking(local, [fusion.Fused(h.id, h.score) for h in engine], 0)
        engine_payloads = {h.id: h.payload for h in engine}
        assert all(h.payload == engine_payloads[h.id] and h.payload for h in local)
    finally:
        store.close()
