"""gateway/service/reindex.py without a gateway: the settings a rebuild uses (every refusal with its field
and message), the pages it reads, the mean length it measures, what it saves before it rewrites and the
vectors it writes.

The gateway tests (tests/test_gateway_bm25.py) run whole rebuilds and compare scores; a mutation run over
reindex.py (docs/mutation-report.md) left the refusals' messages, the legacy stopwords, the page size and
the order of the steps unpinned.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.bm25 import DEFAULT_AVG_LEN, Bm25Settings, make_encoder
from gateway.definitions import BM25_VECTOR, parse_definition
from gateway.errors import BadRequest
from gateway.service import reindex
from gateway.service.collections import SparseInfo, StoredCollection, VectorInfo
from gateway.service.requests import ReindexBm25Request, parse
from gateway.storage.base import PointRecord, SparseVec


def collection(bm25: dict[str, Any] | None, **extra: Any) -> StoredCollection:
    definition: dict[str, Any] = {"name": "c", "vectorizers": {"v": {"dimensions": 2}}, **extra}
    if bm25 is not None:
        definition["bm25"] = bm25
    return StoredCollection(definition=parse_definition(definition), vectors={"v": VectorInfo(dimensions=2)},
                            created_at=99.0, index_errors={"price": "disk full"},
                            sparse={"s": SparseInfo(vocab_size=50, model_name="splade")})


def request(body: dict[str, Any]) -> ReindexBm25Request:
    return parse(ReindexBm25Request, body)


def refused(stored: StoredCollection, body: dict[str, Any]) -> tuple[str | None, str]:
    with pytest.raises(BadRequest) as info:
        reindex.new_settings(stored, request(body))
    return info.value.field, info.value.detail


def test_settings_refusals_name_the_field():
    assert refused(collection({"fields": []}), {}) == ("bm25", "collection 'c' has no BM25 fields")
    assert refused(collection({"fields": ["t"]}), {"bm25": {"avg_len": 3}}) == (
        "bm25.avg_len", "give avg_len at the top level (or leave it out to measure it)")
    assert refused(collection({"fields": ["t"]}), {"bm25": {"fields": []}}) == (
        "bm25.fields", "a rebuild needs at least one field (the BM25 vector stays)")
    field, message = refused(collection({"fields": ["t"]}), {"bm25": {"language": "klingon"}})
    assert field == "bm25.language" and message.startswith("no analyzer for 'klingon'; one of ")
    field, message = refused(collection({"fields": ["t"]}), {"bm25": {"k1": 11}})
    assert field == "bm25.k1"


def test_the_settings_keep_the_old_ones_and_take_the_changes():
    stored = collection({"fields": ["t", "u"], "language": "german", "k1": 1.5, "avg_len": 12.0,
                         "stopwords": ["der"]})
    cfg = reindex.new_settings(stored, request({}))
    assert cfg.model_dump(mode="json", exclude_none=True) == {
        "fields": ["t", "u"], "analyzer": "qdrant", "language": "german", "stopwords": ["der"],
        "k1": 1.5, "b": 0.75}  # avg_len dropped: it is measured (or given at the top level)
    cfg = reindex.new_settings(stored, request({"bm25": {"fields": ["u"], "b": 0.5, "stopwords": "english"}}))
    assert (cfg.fields, cfg.b, cfg.k1, cfg.stopwords, cfg.avg_len) == (["u"], 0.5, 1.5, "english", None)


def test_a_legacy_collections_stopwords_become_words_beside_the_language_set():
    stored = collection({"fields": ["t"], "analyzer": "legacy", "stopwords": ["zz", "yy"]})
    cfg = reindex.new_settings(stored, request({}))
    assert cfg.analyzer == "qdrant" and cfg.language == "english"
    assert cfg.model_dump(mode="json", exclude_none=True)["stopwords"] == {"languages": ["english"],
                                                                          "words": ["zz", "yy"]}
    cfg = reindex.new_settings(stored, request({"bm25": {"language": "german"}}))
    assert cfg.model_dump(mode="json")["stopwords"] == {"languages": ["german"], "words": ["zz", "yy"]}
    # stopwords given in the request replace them
    cfg = reindex.new_settings(stored, request({"bm25": {"stopwords": ["qq"]}}))
    assert cfg.stopwords == ["qq"]
    # a legacy collection without stopwords gets the language's set only
    cfg = reindex.new_settings(collection({"fields": ["t"], "analyzer": "legacy"}), request({}))
    assert cfg.stopwords is None and cfg.analyzer == "qdrant"


class FakeStore:
    """Pages of ``points`` by scroll (a cursor is the next position), every call recorded."""

    def __init__(self, points: list[PointRecord], log: list[Any]) -> None:
        self.points = points
        self.log = log

    def scroll(self, name: str, *, limit: int, cursor: str | None, with_payload: list[str]):
        self.log.append(("scroll", name, limit, cursor, with_payload))
        start = int(cursor or 0)
        page = [PointRecord(p.id, {k: v for k, v in p.payload.items() if k in with_payload})
                for p in self.points[start:start + limit]]
        nxt = start + limit
        return page, (str(nxt) if nxt < len(self.points) else None)

    def update_sparse(self, name: str, vector: str, vectors: list[tuple[str, SparseVec]]) -> None:
        self.log.append(("update", name, vector, [i for i, _ in vectors]))
        self.log.append(("vectors", dict(vectors)))


async def db(fn, *args, **kwargs):
    return fn(*args, **kwargs)


TEXTS = ["red running shoes", "the and of", "leather shoes for the office", "", "trail backpack"]


def points(texts: list[str]) -> list[PointRecord]:
    return [PointRecord(f"p{i}", {"t": text, "other": "unread words"}) for i, text in enumerate(texts)]


def test_scan_reads_every_page_of_the_fields_only(monkeypatch):
    monkeypatch.setattr(reindex, "PAGE", 2)
    log: list[Any] = []
    seen: list[list[str]] = []

    async def visit(page):
        seen.append([(p.id, sorted(p.payload)) for p in page])

    total = asyncio.run(reindex.scan(db, FakeStore(points(TEXTS), log), "c", ["t"], visit))
    assert total == 5
    assert seen == [[("p0", ["t"]), ("p1", ["t"])], [("p2", ["t"]), ("p3", ["t"])], [("p4", ["t"])]]
    assert log == [("scroll", "c", 2, None, ["t"]), ("scroll", "c", 2, "2", ["t"]),
                   ("scroll", "c", 2, "4", ["t"])]
    # an empty collection: one call, no visit
    log.clear()
    seen.clear()
    assert asyncio.run(reindex.scan(db, FakeStore([], log), "c", ["t"], visit)) == 0
    assert seen == [] and log == [("scroll", "c", 2, None, ["t"])]


def test_the_page_size_is_a_thousand():
    assert reindex.PAGE == 1000


def rebuild(stored: StoredCollection, body: dict[str, Any], texts: list[str], settle_s: float = 0.0,
            log: list[Any] | None = None) -> tuple[dict[str, Any], list[Any]]:
    log = [] if log is None else log

    async def save(updated: StoredCollection) -> None:
        log.append(("save", updated))

    async def go():
        store = FakeStore(points(texts), log)
        return await reindex.reindex_bm25(db, store, stored, request(body), save, settle_s)

    return asyncio.run(go()), log


def test_a_rebuild_measures_then_saves_then_rewrites_every_vector():
    stored = collection({"fields": ["t"], "analyzer": "legacy"})
    out, log = rebuild(stored, {}, TEXTS)
    probe = make_encoder(Bm25Settings(fields=["t"]))
    lengths = [probe.length(t) for t in TEXTS]
    assert lengths[1] == lengths[3] == 0 and all(lengths[i] for i in (0, 2, 4))
    mean = sum(lengths) / 3  # the objects without any term are not counted
    assert [entry[0] for entry in log] == ["scroll", "save", "scroll", "update", "vectors"]
    assert log[0] == ("scroll", "c", 1000, None, ["t"]) and log[2] == ("scroll", "c", 1000, None, ["t"])
    saved: StoredCollection = log[1][1]
    assert saved.definition.bm25 is not None
    assert saved.definition.bm25.avg_len == pytest.approx(mean)
    assert saved.definition.bm25.analyzer == "qdrant"
    assert saved.definition.model_dump(exclude={"bm25"}) == stored.definition.model_dump(exclude={"bm25"})
    # everything else of the stored record is kept
    assert saved.vectors == stored.vectors and saved.sparse == stored.sparse
    assert saved.created_at == 99.0 and saved.index_errors == {"price": "disk full"}
    assert stored.definition.bm25.analyzer == "legacy"  # the loaded one is not changed in place
    assert log[3] == ("update", "c", BM25_VECTOR, ["p0", "p1", "p2", "p3", "p4"])
    encoder = make_encoder(saved.definition.bm25.settings())
    assert log[4][1] == {f"p{i}": encoder.document(t) for i, t in enumerate(TEXTS)}
    assert set(out) == {"collection", "objects", "avg_len", "bm25", "took_ms"}
    assert out["collection"] == "c" and out["objects"] == 5 and out["avg_len"] == pytest.approx(mean)
    assert out["bm25"] == saved.definition.bm25.model_dump(mode="json", exclude_none=True)
    assert out["bm25"]["avg_len"] == pytest.approx(mean)
    assert 0 <= out["took_ms"] < 60_000


def test_the_mean_length_is_taken_over_every_page(monkeypatch):
    monkeypatch.setattr(reindex, "PAGE", 2)
    texts = ["one two three four", "five", "six seven", "", "eight nine ten"]
    out, log = rebuild(collection({"fields": ["t"]}), {}, texts)
    assert out["avg_len"] == pytest.approx(10 / 4)  # 4 objects with terms on 3 pages
    assert [entry[0] for entry in log].count("update") == 3 and out["objects"] == 5


def test_took_ms_is_the_rebuilds_wall_time_in_milliseconds(monkeypatch):
    clock = iter([100.0, 100.0123456])
    monkeypatch.setattr(reindex, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    out, _ = rebuild(collection({"fields": ["t"]}), {"avg_len": 3}, TEXTS)
    assert out["took_ms"] == 12.346


def test_a_given_avg_len_is_used_without_measuring():
    out, log = rebuild(collection({"fields": ["t"]}), {"avg_len": 7}, TEXTS)
    assert out["avg_len"] == 7.0 and out["bm25"]["avg_len"] == 7.0
    assert [entry[0] for entry in log] == ["save", "scroll", "update", "vectors"]
    encoder = make_encoder(log[0][1].definition.bm25.settings())
    assert encoder.settings.avg_len == 7.0
    assert log[3][1]["p0"] == encoder.document(TEXTS[0])


def test_a_corpus_without_terms_keeps_the_default_avg_len():
    out, _ = rebuild(collection({"fields": ["t"]}), {}, ["the of", ""])
    assert out["avg_len"] == DEFAULT_AVG_LEN and out["objects"] == 2
    out, log = rebuild(collection({"fields": ["t"]}), {}, [])
    assert out["avg_len"] == DEFAULT_AVG_LEN and out["objects"] == 0
    assert [entry[0] for entry in log] == ["scroll", "save", "scroll"]


def test_other_gateways_get_settle_s_before_the_rewrite(monkeypatch):
    log: list[Any] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        log.append(("sleep", seconds))
        await real_sleep(0)

    monkeypatch.setattr(reindex.asyncio, "sleep", sleep)
    for settle_s in (2.5, 0.25):
        log.clear()
        rebuild(collection({"fields": ["t"]}), {"avg_len": 3}, TEXTS, settle_s=settle_s, log=log)
        assert [entry[0] for entry in log] == ["save", "sleep", "scroll", "update", "vectors"]
        assert log[1] == ("sleep", settle_s)
    log.clear()
    rebuild(collection({"fields": ["t"]}), {"avg_len": 3}, TEXTS, settle_s=0, log=log)
    assert [entry[0] for entry in log] == ["save", "scroll", "update", "vectors"]
