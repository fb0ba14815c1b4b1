"""The storage contract, continued: rich filters, payload indexes, facets, browsing in field order, MMR,
scrolling and sparse rewrites; on EdgeStore (qdrant-edge) and QdrantStore (:memory:) alike.

Expected results are computed here independently: Python predicates for filters (haversine distance,
datetime.fromisoformat, plain word splitting), Counter for facets, sorted() for order_by, and a NumPy
maximal-marginal-relevance loop for MMR.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.storage.base import (
    CollectionNotFound,
    CollectionSchema,
    DenseVectorConfig,
    FieldDatetimeRange,
    FieldGeoBox,
    FieldGeoRadius,
    FieldIsEmpty,
    FieldIsNull,
    FieldMatch,
    FieldPrefix,
    FieldRange,
    FieldText,
    FieldValuesCount,
    Filter,
    GeoPoint,
    Mmr,
    OrderBy,
    PayloadIndex,
    PointRecord,
    SparseVec,
    Store,
    StoreError,
)
from gateway.storage.edge_store import EdgeStore
from gateway.storage.qdrant_store import QdrantStore

N = 48
DIM = 6
COLOURS = ["red", "green", "blue", "black"]
NOUNS = ["lamp", "chair", "table", "sofa", "rug"]
ADJECTIVES = ["compact", "vintage", "modern"]
BRANDS = ["acme", "zeta", "orca", "lumen", "brava"]
EARTH_RADIUS_M = 6371008.8
CENTRE = (49.0, 3.0)  # lat, lon
RADIUS_M = 105_000.0


def pid(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


def index_of(point_id: str) -> int:
    return int(uuid.UUID(point_id).int) - 1


def released(i: int) -> str:
    """Datetimes in every form Qdrant reads: Z, an offset, a bare date, a naive (UTC) date-time."""
    when = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=5 * i, hours=i)
    if i % 4 == 0:
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    if i % 4 == 1:  # the same instant, written in UTC+2
        return (when + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    if i % 4 == 2:
        return when.strftime("%Y-%m-%d")
    return when.strftime("%Y-%m-%d %H:%M:%S")


def payload(i: int) -> dict[str, Any]:
    p: dict[str, Any] = {
        "i": i,
        "sku": f"{'AB' if i % 2 else 'CD'}-{i:03d}",
        "title": f"{COLOURS[i % 4]} {NOUNS[i % 5]} {ADJECTIVES[i % 3]}",
        "released": released(i),
        "location": {"lat": 48.0 + (i % 8) * 0.5, "lon": 2.0 + (i // 8) * 0.7},
        "tags": [f"t{k}" for k in range(i % 4)],
        "n": i % 7,
        "score": i * 1.25,
        "flag": i % 3 == 0,
        "brand": BRANDS[i % 5],
    }
    maybe = i % 5
    if maybe == 1:
        p["maybe"] = None
    elif maybe == 2:
        p["maybe"] = []
    elif maybe == 3:
        p["maybe"] = "x"
    elif maybe == 4:
        p["maybe"] = ["y", "z"]
    return p


PAYLOADS = [payload(i) for i in range(N)]
VECTORS = np.random.default_rng(11).normal(size=(N, DIM)).astype(np.float32)

INDEXES = {
    "sku": PayloadIndex("keyword"), "title": PayloadIndex("text"), "released": PayloadIndex("datetime"),
    "location": PayloadIndex("geo"), "tags": PayloadIndex("keyword"), "n": PayloadIndex("integer"),
    "score": PayloadIndex("float"), "flag": PayloadIndex("bool"), "brand": PayloadIndex("keyword"),
}


def make_store(kind: str, path: Path) -> Store:
    return EdgeStore(path / "edge") if kind == "edge" else QdrantStore(location=":memory:")


@pytest.fixture(params=["edge", "qdrant"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = make_store(request.param, tmp_path)
    yield s
    s.close()


def load(store: Store, indexed: bool = True) -> None:
    store.create_collection(CollectionSchema("rich", dense={"cos": DenseVectorConfig(DIM, "cosine"),
                                                            "dot": DenseVectorConfig(DIM, "dot")},
                                             sparse=["bm25"]))
    store.upsert("rich", [
        PointRecord(pid(i), PAYLOADS[i], {"cos": VECTORS[i].tolist(), "dot": VECTORS[i].tolist()},
                    {"bm25": SparseVec([i % 3, 10 + i % 4], [1.0, 0.5])})
        for i in range(N)
    ])
    if indexed:
        for key, spec in INDEXES.items():
            store.create_payload_index("rich", key, spec)


# -- filters ----------------------------------------------------------------------------------------------
def when(text: str) -> datetime:
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def words(text: str) -> list[str]:
    return text.lower().split()


def phrase_in(phrase: str, text: str) -> bool:
    p, t = words(phrase), words(text)
    return any(t[k:k + len(p)] == p for k in range(len(t) - len(p) + 1))


def is_empty(p: dict[str, Any], key: str) -> bool:
    return p.get(key) is None or p.get(key) == []


def n_values(value: Any) -> int:
    return len(value) if isinstance(value, list) else 1


MARCH = "2024-03-01T00:00:00+00:00"
JUNE = "2024-06-15T12:30:00+02:00"
Case = tuple[str, Filter, Callable[[dict[str, Any]], bool]]
CASES: list[Case] = [
    ("datetime_range", Filter(must=[FieldDatetimeRange("released", gte=MARCH, lt=JUNE)]),
     lambda p: when(MARCH) <= when(p["released"]) < when(JUNE)),
    ("datetime_gt", Filter(must=[FieldDatetimeRange("released", gt=JUNE)]),
     lambda p: when(p["released"]) > when(JUNE)),
    ("text_any", Filter(must=[FieldText("title", "lamp sofa", "any")]),
     lambda p: bool({"lamp", "sofa"} & set(words(p["title"])))),
    ("text_all", Filter(must=[FieldText("title", "Modern RED", "all")]),
     lambda p: {"modern", "red"} <= set(words(p["title"]))),
    ("phrase", Filter(must=[FieldText("title", "red lamp", "phrase")]),
     lambda p: phrase_in("red lamp", p["title"])),
    ("phrase_reversed", Filter(must=[FieldText("title", "lamp red", "phrase")]), lambda p: False),
    ("prefix", Filter(must=[FieldPrefix("sku", "AB-01")]), lambda p: p["sku"].startswith("AB-01")),
    ("geo_radius", Filter(must=[FieldGeoRadius("location", GeoPoint(*CENTRE), RADIUS_M)]),
     lambda p: haversine(*CENTRE, p["location"]["lat"], p["location"]["lon"]) < RADIUS_M),
    ("geo_box", Filter(must=[FieldGeoBox("location", GeoPoint(50.25, 2.35), GeoPoint(49.25, 4.5))]),
     lambda p: 49.25 <= p["location"]["lat"] <= 50.25 and 2.35 <= p["location"]["lon"] <= 4.5),
    ("is_empty", Filter(must=[FieldIsEmpty("maybe")]), lambda p: is_empty(p, "maybe")),
    ("exists", Filter(must_not=[FieldIsEmpty("maybe")]), lambda p: not is_empty(p, "maybe")),
    ("is_null", Filter(must=[FieldIsNull("maybe")]), lambda p: "maybe" in p and p["maybe"] is None),
    ("not_null", Filter(must_not=[FieldIsNull("maybe")]),
     lambda p: not ("maybe" in p and p["maybe"] is None)),
    ("values_count_gte", Filter(must=[FieldValuesCount("tags", gte=2)]), lambda p: len(p["tags"]) >= 2),
    ("values_count_range", Filter(must=[FieldValuesCount("tags", gt=0, lte=2)]),
     lambda p: 0 < len(p["tags"]) <= 2),
    ("values_count_scalar", Filter(must=[FieldValuesCount("maybe", gte=2)]),
     lambda p: p.get("maybe") is not None and n_values(p["maybe"]) >= 2),
    ("combined", Filter(
        must=[FieldDatetimeRange("released", lt=JUNE), Filter(should=[FieldText("title", "chair", "any"),
                                                                      FieldPrefix("sku", "CD-")])],
        must_not=[FieldIsEmpty("tags"), FieldMatch("brand", "zeta")]),
     lambda p: when(p["released"]) < when(JUNE)
     and ("chair" in words(p["title"]) or p["sku"].startswith("CD-"))
     and p["tags"] != [] and p["brand"] != "zeta"),
]


def test_geo_cases_are_not_on_the_edge() -> None:
    """No point lies within 1% of the radius, so the engines' float details cannot flip a case."""
    for p in PAYLOADS:
        d = haversine(*CENTRE, p["location"]["lat"], p["location"]["lon"])
        assert abs(d - RADIUS_M) > 0.01 * RADIUS_M


@pytest.mark.parametrize("indexed", [False, True], ids=["scan", "indexed"])
def test_rich_filters(store: Store, indexed: bool) -> None:
    load(store, indexed)
    query = np.random.default_rng(5).normal(size=DIM).astype(np.float32)
    order = np.argsort(-(VECTORS @ query), kind="stable").tolist()
    failures = []
    for name, flt, predicate in CASES:
        allowed = {i for i, p in enumerate(PAYLOADS) if predicate(p)}
        got_count = store.count("rich", flt)
        hits = store.search_dense("rich", "dot", query.tolist(), filter=flt, limit=N, with_payload=False)
        got = [index_of(h.id) for h in hits]
        want = [i for i in order if i in allowed]
        if got_count != len(allowed) or got != want:
            failures.append((name, sorted(allowed), sorted(got)))
    assert not failures, failures
    assert all(0 < sum(map(pred, PAYLOADS)) < N for name, _, pred in CASES if name != "phrase_reversed")


# -- payload indexes --------------------------------------------------------------------------------------
def test_payload_indexes_of_every_kind(store: Store) -> None:
    load(store, indexed=False)
    assert store.payload_indexes("rich") == {}
    for key, spec in INDEXES.items():
        store.create_payload_index("rich", key, spec)
    store.create_payload_index("rich", "maybe", "keyword")
    store.create_payload_index("rich", "i", PayloadIndex("uuid"))
    got = store.payload_indexes("rich")
    assert {k: v.kind for k, v in got.items()} == {**{k: s.kind for k, s in INDEXES.items()},
                                                   "maybe": "keyword", "i": "uuid"}
    if isinstance(store, EdgeStore):  # the embedded engine counts the points of each index
        assert got["score"].points == N and got["tags"].points == sum(1 for p in PAYLOADS if p["tags"])
    with pytest.raises(StoreError, match="kind"):
        store.create_payload_index("rich", "n", "money")
    with pytest.raises(StoreError, match="language"):
        store.create_payload_index("rich", "n", PayloadIndex("integer", "english"))
    with pytest.raises(CollectionNotFound):
        store.payload_indexes("ghost")


# -- facets -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["brand", "n", "flag", "tags"])
def test_facets_count_values(store: Store, key: str) -> None:
    load(store)
    flt = Filter(must=[FieldRange("score", lt=40.0)])
    counts: Counter = Counter()
    for p in PAYLOADS:
        if p["score"] < 40.0:
            values = p[key] if isinstance(p[key], list) else [p[key]]
            counts.update(set(values))
    got = store.facet("rich", key, filter=flt, limit=100, exact=True)
    assert {v.value: v.count for v in got} == dict(counts)
    assert [v.count for v in got] == sorted((v.count for v in got), reverse=True)
    top = store.facet("rich", key, filter=flt, limit=2, exact=True)
    assert [v.count for v in top] == sorted(counts.values(), reverse=True)[:2]
    everything = store.facet("rich", key, limit=100, exact=True)
    assert sum(v.count for v in everything) >= sum(v.count for v in got)


# -- browsing in field order ------------------------------------------------------------------------------
def test_browse_in_field_order(store: Store) -> None:
    load(store)
    flt = Filter(must=[FieldMatch("flag", False)])
    kept = [i for i, p in enumerate(PAYLOADS) if not p["flag"]]
    by_score = sorted(kept, key=lambda i: -PAYLOADS[i]["score"])
    page = store.browse("rich", filter=flt, order_by=OrderBy("score", "desc"), limit=5, offset=3)
    assert [index_of(h.id) for h in page] == by_score[3:8]
    assert all(h.score == 0.0 and h.payload["flag"] is False for h in page)
    dates = store.browse("rich", order_by=OrderBy("released"), limit=N, with_payload=["released"])
    assert [when(h.payload["released"]) for h in dates] == sorted(when(p["released"]) for p in PAYLOADS)
    ints = store.browse("rich", order_by=OrderBy("n", "desc"), limit=N, with_payload=["n"])
    # ties come in any order: compare the values
    assert [h.payload["n"] for h in ints] == sorted((p["n"] for p in PAYLOADS), reverse=True)
    plain = store.browse("rich", filter=flt, limit=4, offset=2, with_payload=False)
    assert [h.id for h in plain] == [pid(i) for i in kept][2:6] and all(h.payload is None for h in plain)
    with pytest.raises(StoreError, match="direction"):
        store.browse("rich", order_by=OrderBy("n", "sideways"))  # type: ignore[arg-type]


# -- MMR --------------------------------------------------------------------------------------------------
def expected_mmr(query: np.ndarray, metric: str, lam: float, candidates: int, limit: int) -> list[int]:
    vecs = VECTORS.astype(np.float64)
    if metric == "cosine":
        vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        q = query / np.linalg.norm(query)
    else:
        q = query.astype(np.float64)
    relevance = vecs @ q
    pool = list(np.argsort(-relevance, kind="stable")[:candidates])
    chosen = [pool.pop(0)]
    while pool and len(chosen) < limit:
        scores = [lam * relevance[d] - (1 - lam) * max(float(vecs[d] @ vecs[s]) for s in chosen)
                  for d in pool]
        chosen.append(pool.pop(int(np.argmax(scores))))
    return [int(i) for i in chosen]


@pytest.mark.parametrize("metric", ["cosine", "dot"])
@pytest.mark.parametrize("lam", [0.2, 0.5, 0.8])
def test_mmr_diversifies_by_the_formula(store: Store, metric: str, lam: float) -> None:
    load(store, indexed=False)
    vector = "cos" if metric == "cosine" else "dot"
    query = np.random.default_rng(7).normal(size=DIM).astype(np.float32)
    want = expected_mmr(query, metric, lam, candidates=20, limit=8)
    hits = store.search_dense("rich", vector, query.tolist(), limit=8, mmr=Mmr(lam, 20), with_payload=False)
    assert [index_of(h.id) for h in hits] == want
    plain = store.search_dense("rich", vector, query.tolist(), limit=8, with_payload=False)
    assert [index_of(h.id) for h in plain] != want or lam == 1.0  # it really diversified
    # the scores stay the similarity to the query
    by_id = {index_of(h.id): h.score for h in store.search_dense("rich", vector, query.tolist(), limit=N)}
    assert [h.score for h in hits] == pytest.approx([by_id[index_of(h.id)] for h in hits], rel=1e-5)
    paged = store.search_dense("rich", vector, query.tolist(), limit=3, offset=5, mmr=Mmr(lam, 20))
    assert [index_of(h.id) for h in paged] == want[5:8]
    flt = Filter(must=[FieldMatch("flag", True)])
    filtered = store.search_dense("rich", vector, query.tolist(), limit=4, mmr=Mmr(lam, 10), filter=flt)
    assert all(PAYLOADS[index_of(h.id)]["flag"] for h in filtered) and len(filtered) == 4
    with pytest.raises(StoreError, match="mmr.candidates"):
        store.search_dense("rich", vector, query.tolist(), limit=8, offset=5, mmr=Mmr(lam, 10))
    with pytest.raises(StoreError, match="mmr.lambda"):
        store.search_dense("rich", vector, query.tolist(), limit=8, mmr=Mmr(1.5, 20))


# -- scroll and sparse rewrites ---------------------------------------------------------------------------
def test_scroll_pages_through_everything(store: Store) -> None:
    load(store, indexed=False)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page, cursor = store.scroll("rich", limit=7, cursor=cursor, with_payload=["sku"])
        pages += 1
        seen += [p.id for p in page]
        assert all(set(p.payload) == {"sku"} and not p.dense and not p.sparse for p in page)
        if cursor is None:
            break
    assert seen == [pid(i) for i in range(N)] and pages == math.ceil(N / 7)
    flt = Filter(must=[FieldMatch("brand", "acme")])
    page, cursor = store.scroll("rich", filter=flt, limit=N, with_vectors=True)
    assert cursor is None and [index_of(p.id) for p in page] == [i for i in range(N) if i % 5 == 0]
    assert page[0].sparse["bm25"].indices == [0, 10] and len(page[0].dense["cos"]) == DIM
    with pytest.raises(CollectionNotFound):
        store.scroll("ghost")


def test_update_sparse_replaces_and_removes(store: Store) -> None:
    load(store, indexed=False)
    before = store.retrieve("rich", [pid(0)], with_vectors=True)[0]
    store.update_sparse("rich", "bm25", [(pid(0), SparseVec([99], [3.0])), (pid(1), SparseVec([], []))])
    after = store.retrieve("rich", [pid(0), pid(1)], with_vectors=True)
    assert after[0].sparse["bm25"] == SparseVec([99], [3.0])
    assert after[0].payload == before.payload and after[0].dense["cos"] == pytest.approx(before.dense["cos"])
    assert "bm25" not in after[1].sparse and after[1].payload == PAYLOADS[1]
    hits = store.search_sparse("rich", "bm25", SparseVec([99], [1.0]), limit=5)
    assert [h.id for h in hits] == [pid(0)]
    # N is now 47 points with a BM25 vector: idf = ln(1 + (47 - 1 + 0.5) / 1.5)
    assert hits[0].score == pytest.approx(3.0 * math.log(1 + 46.5 / 1.5), rel=1e-5)
    with pytest.raises(StoreError, match="vector"):
        store.update_sparse("rich", "cos", [(pid(0), SparseVec([1], [1.0]))])


# -- embedded store only ----------------------------------------------------------------------------------
def test_edge_text_index_with_a_language_stems_and_drops_stopwords(tmp_path: Path) -> None:
    """(qdrant-client's local mode keeps no indexes, so it cannot apply an index's analyzer.)"""
    store = EdgeStore(tmp_path / "edge")
    try:
        store.create_collection(CollectionSchema("t", dense={"v": DenseVectorConfig(2)}))
        texts = ["Running shoes for the road", "A runner's guide", "The office chairs"]
        store.upsert("t", [PointRecord(pid(i), {"title": t}, {"v": [1.0, float(i)]})
                           for i, t in enumerate(texts)])
        store.create_payload_index("t", "title", PayloadIndex("text", "english"))

        def matching(text: str, mode: str = "any") -> set[int]:
            flt = Filter(must=[FieldText("title", text, mode)])
            hits = store.search_dense("t", "v", [1.0, 0.0], filter=flt)
            return {index_of(h.id) for h in hits}

        assert matching("run") == {0}
        assert matching("chair") == {2}
        assert matching("the for") == set()  # stopwords only
        assert matching("shoe road", "phrase") == {0}  # "for the" dropped on both sides
    finally:
        store.close()


def test_edge_builds_payload_indexes_out_of_process_on_big_collections(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "edge", index_in_process_points=10)
    try:
        load(store, indexed=False)
        for key in ("released", "title", "score"):
            store.create_payload_index("rich", key, INDEXES[key])
        assert {k: v.kind for k, v in store.payload_indexes("rich").items()} == {
            "released": "datetime", "title": "text", "score": "float"}
        folder = store.data_dir / "collections" / "rich"
        assert sorted(p.name for p in folder.iterdir() if p.name.startswith("shard")) == ["shard"]
        for name, flt, predicate in CASES[:5]:
            assert store.count("rich", flt) == sum(map(predicate, PAYLOADS)), name
    finally:
        store.close()
