"""gateway/service/objects.py without a gateway: how one raw object becomes a point.

Every refusal of :func:`start`, :func:`plan_jobs` and :func:`plan_sparse_jobs` names its field (inside
``objects.N``) with its exact message; a failed object plans no job at all (nothing of it is written);
rejected items are isolated by halving and retried alone; wrong answers of the inference service (wrong
dimensions, token ids outside the vocabulary) fail only their own object; of objects that share an id
only the last one is written; and :func:`finish` builds exactly the point that is stored.

The import tests (tests/test_gateway_service.py) go through the whole gateway and take about 30 s a pass;
this file takes about a second, so a mutation run over objects.py (docs/mutation-report.md) can use it.
The inference service is a fake here because failures must be injected (rejected items, wrong answers).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import numpy as np
import pytest

from gateway.bm25 import make_encoder
from gateway.definitions import BM25_VECTOR, parse_definition
from gateway.inference_client import InferenceRejected
from gateway.service import objects
from gateway.service.collections import SparseInfo, StoredCollection, VectorInfo
from gateway.service.objects import ID_KEY, ImageUrl, Job, Pending, SparseJob
from gateway.service.requests import ObjectIn
from gateway.service.vectors import object_uuid
from gateway.storage.base import PointRecord, SparseVec

DOCS = StoredCollection(
    definition=parse_definition({
        "name": "docs",
        "vectorizers": {
            "main": {"model": "clip", "text_fields": ["title"], "image_fields": ["photo"]},
            "texts": {"model": "minilm", "text_fields": ["title", "body"], "weights": {"title": 3}},
            "own": {"dimensions": 3},
        },
        "sparse_vectorizers": {"words": {"model": "splade", "text_fields": ["title", "body"]}},
        "bm25": {"fields": ["title"]},
        "fields": {"price": "float", "meta.year": "integer"},
    }),
    vectors={"main": VectorInfo(dimensions=3, modalities=["text", "image"]),
             "texts": VectorInfo(dimensions=3, modalities=["text"]),
             "own": VectorInfo(dimensions=3)},
    sparse={"words": SparseInfo(vocab_size=100)},
)
PNG_BYTES = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf0000000301010018dd8db40000000049454e44ae426082")
PNG = base64.b64encode(PNG_BYTES).decode()
P = "objects.3."


def run(coro):
    return asyncio.run(coro)


def started(raw: Any, stored: StoredCollection = DOCS, prefix: str = P) -> Pending:
    return objects.start(3, raw, stored, prefix)


def failure(p: Pending) -> tuple[str | None, str | None]:
    return p.error_field, p.error


# -- small helpers -------------------------------------------------------------------------------------------
def test_text_value():
    tv = objects.text_value
    assert tv(None) is None and tv("") is None and tv(" \n") is None
    assert tv("red shoes") == "red shoes" and tv(" x ") == " x "
    assert tv(5) == "5" and tv(2.5) == "2.5" and tv(0) == "0"
    assert tv(["a", 1, 2.5]) == "a 1 2.5" and tv([]) is None and tv([" ", ""]) is None
    for bad in (True, False, {"a": 1}, [True], ["a", None], [["a"]], b"x"):
        with pytest.raises(ValueError) as info:
            tv(bad)
        assert str(info.value) == "must be a string (or a list of strings) to be embedded as text", bad
    for bad in ("a\ud800", ["a", "\udc00b"]):
        with pytest.raises(ValueError, match="surrogate"):
            tv(bad)


def test_payload_views_leave_out_the_reserved_keys():
    payload = {"title": "t", ID_KEY: "sku-1", "_polyvec_other": 1, "n": 2}
    assert objects.public_payload(payload) == {"title": "t", "n": 2}
    assert objects.public_payload(None) == {}
    assert objects.external_id("pid", payload) == "sku-1"
    assert objects.external_id("pid", {"title": "t"}) == "pid" and objects.external_id("pid", None) == "pid"
    assert objects.id_and_properties("pid", payload) == ("sku-1", {"title": "t", "n": 2})
    assert objects.id_and_properties("pid", {ID_KEY: "sku-1", "a": 1}) == ("sku-1", {"a": 1})
    assert objects.id_and_properties("pid", {"a": 1}) == ("pid", {"a": 1})
    assert objects.id_and_properties("pid", None) == ("pid", {})
    assert payload[ID_KEY] == "sku-1" and len(payload) == 4  # the stored payload is not changed
    assert objects.decode_base64_image(PNG) == PNG_BYTES


def test_merge_sparse_keeps_the_largest_weight_per_token():
    merged = objects.merge_sparse([SparseVec([5, 1], [0.5, 2.0]), SparseVec([1, 3, 7], [1.0, 0.25, -1.0]),
                                   SparseVec([5], [0.75]), SparseVec([9], [0.0])])
    assert (merged.indices, merged.values) == ([1, 3, 5], [2.0, 0.25, 0.75])
    empty = objects.merge_sparse([])
    assert (empty.indices, empty.values) == ([], [])


def test_sparse_out_shows_the_sparse_vectorizers_but_not_bm25():
    rec = PointRecord("p", sparse={BM25_VECTOR: SparseVec([1], [1.0]),
                                   "words": SparseVec([2, 4], [0.5, 1.5])})
    assert objects.sparse_out(rec) == {"words": {"indices": [2, 4], "values": [0.5, 1.5]}}


def test_a_result_says_ok_error_or_replaced():
    p = Pending(index=2, external_id="sku-1", point_id="u-1")
    assert p.result() == {"index": 2, "id": "sku-1", "status": "ok", "uuid": "u-1"}
    assert Pending(index=0, point_id="u-2").result() == {"index": 0, "id": "u-2", "status": "ok",
                                                         "uuid": "u-2"}
    p.replaced_by = 7
    assert p.result() == {"index": 2, "id": "sku-1", "status": "replaced", "uuid": "u-1",
                          "message": "replaced by objects.7, a later object of this request with the same "
                                     "id; only that one is written"}
    p.fail("objects.2.properties.title", "bad title")
    p.fail("objects.2.vectors", "a later problem")  # the first error is kept
    assert p.result() == {"index": 2, "id": "sku-1", "status": "error", "uuid": "u-1", "error": "bad title",
                          "field": "objects.2.properties.title"}
    q = Pending(index=1, external_id="x")
    q.fail(None, "no field")
    assert q.result() == {"index": 1, "id": "x", "status": "error", "error": "no field"}


# -- start ---------------------------------------------------------------------------------------------------
def test_start_takes_the_id_properties_and_own_vectors():
    p = started({"id": "sku-1", "properties": {"title": "Red", "price": 2}, "vectors": {"own": [1, 2, 3.5]}})
    assert p.error is None and p.index == 3
    assert p.external_id == "sku-1" and p.point_id == object_uuid("sku-1")
    assert p.properties == {"title": "Red", "price": 2}
    assert p.dense == {"own": [1.0, 2.0, 3.5]} and all(type(v) is float for v in p.dense["own"])
    uid = str(uuid.uuid4())
    p = started(ObjectIn(id=uid.upper(), properties={"a": 1}))
    assert p.error is None and p.external_id == uid.upper() and p.point_id == uid
    a, b = started({"properties": {}}), started({"properties": {}})
    assert a.external_id is None and str(uuid.UUID(a.point_id)) == a.point_id and a.point_id != b.point_id


START_REFUSED = [
    ("properties not an object", {"id": "sku-1", "properties": 5}, "objects.3.properties",
     "Input should be a valid dictionary"),
    ("unknown key", {"id": "sku-1", "colour": "red"}, "objects.3.colour", "unknown field"),
    ("a lone surrogate in a value", {"id": "sku-1", "properties": {"a": {"b": ["x", "y\ud800"]}}},
     "objects.3.properties.a.b.1", None),
    ("a reserved property", {"id": "sku-1", "properties": {"a": 1, "_polyvec_id": "x"}},
     "objects.3.properties._polyvec_id", "property names starting with '_polyvec' are reserved"),
    ("a declared field of the wrong type", {"id": "sku-1", "properties": {"price": "cheap"}},
     "objects.3.properties.price", None),
    ("a nested declared field of the wrong type", {"id": "sku-1", "properties": {"meta": {"year": "old"}}},
     "objects.3.properties.meta.year", None),
    ("an unknown vector", {"id": "sku-1", "vectors": {"nope": [1, 2, 3]}}, "objects.3.vectors.nope",
     "unknown vector; this collection has ['main', 'own', 'texts']"),
    ("a vector of the wrong length", {"id": "sku-1", "vectors": {"own": [1, 2]}}, "objects.3.vectors.own",
     "has 2 dimensions, the collection expects 3"),
    ("a vector with an infinity", {"id": "sku-1", "vectors": {"own": [1, float("inf"), 2]}},
     "objects.3.vectors.own.1", "is not a finite number: inf"),
]


@pytest.mark.parametrize(("case", "raw", "field", "message"), START_REFUSED,
                         ids=[c[0] for c in START_REFUSED])
def test_start_refusals_name_the_field(case, raw, field, message):
    p = started(raw)
    assert p.error_field == field
    if message is not None:
        assert p.error == message
    assert p.error
    assert p.external_id == "sku-1"  # the result still says which object it was
    assert p.dense == {} and p.properties in ({}, raw.get("properties"))
    assert p.result()["status"] == "error"
    assert objects.plan_jobs(p, DOCS, P) == [] or p.error  # never planned further by a caller
    assert objects.finish(p, DOCS) is None


def test_start_refusal_messages():
    assert failure(started({"id": "sku-1", "properties": {"price": "cheap"}})) == (
        "objects.3.properties.price", "must be a number (float field), got a string")
    assert failure(started({"id": "sku-1", "properties": {"x": "a\ud800"}})) == (
        "objects.3.properties.x",
        "holds a lone surrogate (U+D800) at character 1: a text must be valid Unicode")


def test_start_without_prefix_and_a_body_that_is_no_object():
    p = objects.start(0, {"properties": {"_polyvec_x": 1}}, DOCS, "")
    assert failure(p) == ("properties._polyvec_x", "property names starting with '_polyvec' are reserved")
    p = objects.start(0, [1, 2], DOCS, "objects.0.")
    assert p.error_field == "objects.0" and p.external_id is None and p.point_id is None
    p = objects.start(0, {"id": 5}, DOCS, "objects.0.")
    assert p.error_field == "objects.0.id" and p.external_id is None


# -- plan_jobs -----------------------------------------------------------------------------------------------
def planned(props: dict[str, Any], vectors: dict[str, Any] | None = None, reuse=None,
            stored: StoredCollection = DOCS) -> tuple[Pending, list[Job]]:
    given = {"own": [1, 0, 0]} if vectors is None else vectors
    p = started({"id": "sku-1", "properties": props, "vectors": given}, stored)
    assert p.error is None, p.error
    return p, objects.plan_jobs(p, stored, P, reuse)


def jobs_of(jobs: list[Job]) -> list[tuple[str, str, Any]]:
    return [(j.vector, j.field, j.data) for j in jobs]


def test_plan_jobs_one_job_per_field_value():
    p, jobs = planned({"title": "Red shoes", "body": ["size", 42], "photo": PNG})
    assert jobs_of(jobs) == [("main", "title", "Red shoes"), ("main", "photo", PNG_BYTES),
                             ("texts", "title", "Red shoes"), ("texts", "body", "size 42")]
    assert all(j.pending is p for j in jobs)
    assert p.vectorized == ["main", "texts"] and p.error is None
    # an image URL is fetched later (stripped); an empty image or a missing one is no job
    p, jobs = planned({"title": "t", "photo": " https://img.example/a.png "})
    assert jobs_of(jobs)[:2] == [("main", "title", "t"), ("main", "photo", ImageUrl("https://img.example/a.png"))]
    p, jobs = planned({"title": "t", "photo": ""})
    assert jobs_of(jobs) == [("main", "title", "t"), ("texts", "title", "t")]
    # a nested path
    stored = StoredCollection(
        definition=parse_definition({"name": "n",
                                     "vectorizers": {"v": {"model": "m", "text_fields": ["a.b"]}}}),
        vectors={"v": VectorInfo(dimensions=3)})
    p, jobs = planned({"a": {"b": "deep"}}, vectors={}, stored=stored)
    assert jobs_of(jobs) == [("v", "a.b", "deep")]


def test_plan_jobs_skips_given_and_reused_vectors():
    p, jobs = planned({"title": "t"}, vectors={"own": [1, 0, 0], "main": [0, 1, 0]})
    assert jobs_of(jobs) == [("texts", "title", "t")] and p.vectorized == ["texts"]
    assert p.dense["main"] == [0.0, 1.0, 0.0]
    p, jobs = planned({"title": "t"}, reuse={"texts": [0.5, 0.5, 0.0], "own": [9.0, 9.0, 9.0]})
    assert jobs_of(jobs) == [("main", "title", "t")] and p.vectorized == ["main"]
    assert p.dense == {"own": [1.0, 0.0, 0.0], "texts": [0.5, 0.5, 0.0]}  # a given vector beats a kept one
    # a kept vector does not stop the planning of the vectors after it (a PUT that changed only "title"
    # of "texts" keeps "main")
    p, jobs = planned({"title": "t"}, reuse={"main": [0.0, 0.0, 1.0]})
    assert jobs_of(jobs) == [("texts", "title", "t")] and p.vectorized == ["texts"]
    assert p.dense == {"own": [1.0, 0.0, 0.0], "main": [0.0, 0.0, 1.0]}


PICS = StoredCollection(
    definition=parse_definition({"name": "pics", "vectorizers": {
        "pics": {"model": "clip", "image_fields": ["photo", "back", "side"]}}}),
    vectors={"pics": VectorInfo(dimensions=3, modalities=["image"])})


def test_plan_jobs_goes_on_after_an_empty_image_and_an_image_url():
    url = "https://img.example/b.png"
    p = objects.start(0, {"properties": {"photo": "", "back": url, "side": PNG}}, PICS, "")
    jobs = objects.plan_jobs(p, PICS, "")
    assert jobs_of(jobs) == [("pics", "back", ImageUrl(url)), ("pics", "side", PNG_BYTES)]
    assert all(j.pending is p for j in jobs) and p.error is None


PLAN_REFUSED = [
    ("no vector for a vectorizer without a model", {"title": "t"}, {}, "objects.3.vectors.own",
     "this vector has no vectorizer: send it in vectors"),
    ("a text field that is no text", {"title": {"x": 1}}, None, "objects.3.properties.title",
     "must be a string (or a list of strings) to be embedded as text"),
    ("an image that is no string", {"title": "t", "photo": 5}, None, "objects.3.properties.photo",
     "must be a base64-encoded image or an image URL"),
    ("an image that is not base64", {"title": "t", "photo": "%%%%"}, None, "objects.3.properties.photo",
     "invalid base64: the character '%' at data position 0"),
    ("none of a vector's fields", {"other": "t"}, None, "objects.3.properties",
     "none of the fields ['title', 'photo'] of vector 'main' is set (or send vectors.main)"),
    ("none of the second vector's fields", {"photo": PNG}, None, "objects.3.properties",
     "none of the fields ['title', 'body'] of vector 'texts' is set (or send vectors.texts)"),
]


@pytest.mark.parametrize(("case", "props", "vectors", "field", "message"), PLAN_REFUSED,
                         ids=[c[0] for c in PLAN_REFUSED])
def test_plan_jobs_refusals_name_the_field_and_plan_nothing(case, props, vectors, field, message):
    given = {"own": [1, 0, 0]} if vectors is None else vectors
    p = started({"id": "sku-1", "properties": props, "vectors": given})
    assert objects.plan_jobs(p, DOCS, P) == []
    assert failure(p) == (field, message)
    assert objects.finish(p, DOCS) is None


def test_a_later_vectors_failure_drops_the_earlier_vectors_jobs():
    p = started({"id": "sku-1", "properties": {"photo": PNG, "body": {"x": 1}},
                 "vectors": {"own": [1, 0, 0]}})
    assert objects.plan_jobs(p, DOCS, P) == []
    assert failure(p) == ("objects.3.properties.body",
                          "must be a string (or a list of strings) to be embedded as text")


# -- plan_sparse_jobs ----------------------------------------------------------------------------------------
def test_plan_sparse_jobs():
    p, _ = planned({"title": "Red", "body": "shoes"})
    jobs = objects.plan_sparse_jobs(p, DOCS, P)
    assert [(j.vector, j.field, j.text) for j in jobs] == [("words", "title", "Red"),
                                                           ("words", "body", "shoes")]
    assert all(isinstance(j, SparseJob) and j.pending is p for j in jobs)
    assert p.vectorized == ["main", "texts", "words"]
    # an object without any of the fields gets no sparse vector (and no error)
    p = started({"id": "a", "properties": {"other": 1}})
    assert objects.plan_sparse_jobs(p, DOCS, P) == [] and p.error is None and p.vectorized == []
    # a kept vector is reused
    kept = SparseVec([3], [1.0])
    p = started({"id": "a", "properties": {"title": "t"}})
    assert objects.plan_sparse_jobs(p, DOCS, P, {"words": kept}) == [] and p.sparse == {"words": kept}
    assert p.vectorized == []
    # with two sparse vectorizers: a kept first one does not stop the second, and both plan their jobs
    two = StoredCollection(
        definition=parse_definition({"name": "two", "sparse_vectorizers": {
            "first": {"model": "splade", "text_fields": ["title"]},
            "second": {"model": "bag", "text_fields": ["body", "title"]}}}),
        vectors={})
    p = objects.start(0, {"properties": {"title": "t", "body": "b"}}, two, "")
    jobs = objects.plan_sparse_jobs(p, two, "")
    assert [(j.vector, j.field) for j in jobs] == [("first", "title"), ("second", "body"),
                                                   ("second", "title")]
    p = objects.start(0, {"properties": {"title": "t", "body": "b"}}, two, "")
    jobs = objects.plan_sparse_jobs(p, two, "", {"first": kept})
    assert [(j.vector, j.field) for j in jobs] == [("second", "body"), ("second", "title")]
    assert p.sparse == {"first": kept} and p.vectorized == ["second"]
    # a field that is no text
    p = started({"id": "a", "properties": {"title": "t", "body": [True]}})
    assert objects.plan_sparse_jobs(p, DOCS, P) == []
    assert failure(p) == ("objects.3.properties.body",
                          "must be a string (or a list of strings) to be embedded as text")


# -- the inference calls -------------------------------------------------------------------------------------
class FakeClient:
    """The parts of InferenceClient the import uses. Items in ``bad`` make their call rejected (and every
    item sent with them); items in ``flaky`` are rejected that many times, then taken; an item longer than
    ``max_len`` never fits; calls hold at most ``max_items`` items."""

    def __init__(self, address: str = "infer:1", dims: int = 3, max_items: int = 4, max_len: int = 1000,
                 bad: set | None = None, flaky: dict | None = None) -> None:
        self.address, self.dims, self.max_items, self.max_len = address, dims, max_items, max_len
        self.bad, self.flaky = set(bad or ()), dict(flaky or {})
        self.calls: list[tuple[str, list[Any]]] = []
        self.budgets: list[Any] = []
        self.planned: list[list[Any]] = []

    async def limits(self, budget_s=None):
        self.budgets.append(("limits", budget_s))

    def oversize(self, item) -> str | None:
        return f"is {len(item)} long, more than {self.max_len}" if len(item) > self.max_len else None

    def plan(self, items) -> list[tuple[int, int]]:
        self.planned.append(list(items))
        return [(lo, min(lo + self.max_items, len(items))) for lo in range(0, len(items), self.max_items)]

    def _check(self, kind: str, batch: list[Any]) -> None:
        self.calls.append((kind, list(batch)))
        refused = [x for x in batch if x in self.bad or self.flaky.get(x, 0) > 0]
        for x in batch:
            if x in self.flaky:
                self.flaky[x] -= 1
        if refused:
            raise InferenceRejected(self.address, f"cannot take {refused[0]!r}")

    def vector(self, item) -> np.ndarray:
        if isinstance(item, bytes):
            return np.array([0.0, float(len(item)), 1.0][: self.dims] + [0.0] * (self.dims - 3))
        return np.array([float(len(item)), 1.0, 0.0][: self.dims] + [0.0] * (self.dims - 3))

    async def vectorize(self, *, texts=(), images=(), budget_s=None):
        self.budgets.append(("vectorize", budget_s))
        self._check("text" if texts else "image", list(texts) or list(images))
        empty = np.zeros((0, self.dims))
        t = np.stack([self.vector(x) for x in texts]) if texts else empty
        i = np.stack([self.vector(x) for x in images]) if images else empty
        return t, i

    async def vectorize_sparse(self, texts, *, budget_s=None):
        self.budgets.append(("sparse", budget_s))
        self._check("sparse", list(texts))
        return [SparseVec(sorted({len(w) for w in t.split()}), [1.0] * len({len(w) for w in t.split()}))
                for t in texts]


def test_isolate_rejected_halves_a_rejected_call_and_retries_each_rejected_item_alone():
    client = FakeClient(bad={"bad"}, flaky={"d": 2}, max_len=5)
    items = ["a", "b", "bad", "c", "toolong", "d", "e"]

    async def call(batch):
        await client.vectorize(texts=batch)
        return [x.upper() for x in batch]

    results, errors = run(objects.isolate_rejected(call, items, client, 2.5))
    assert results == ["A", "B", None, "C", None, "D", "E"]
    assert errors == [None, None, "inference service infer:1 rejected it: cannot take 'bad'", None,
                      "is 7 long, more than 5", None, None]
    assert client.budgets[0] == ("limits", 2.5)
    assert client.planned == [["a", "b", "bad", "c", "d", "e"]]  # the oversize item is never sent
    sent = sorted(batch for _, batch in client.calls)
    assert sent == sorted([["a", "b", "bad", "c"], ["d", "e"], ["a", "b"], ["bad", "c"], ["bad"], ["c"],
                           ["d"], ["e"], ["d"], ["bad"]])
    # the retries alone come last, one at a time, in item order
    assert [batch for _, batch in client.calls[-2:]] == [["bad"], ["d"]]


def test_isolate_rejected_without_rejections_makes_one_call_per_planned_range():
    client = FakeClient(max_items=2)

    async def call(batch):
        await client.vectorize(texts=batch)
        return [len(x) for x in batch]

    results, errors = run(objects.isolate_rejected(call, ["a", "bb", "ccc"], client))
    assert results == [1, 2, 3] and errors == [None, None, None]
    assert sorted(b for _, b in client.calls) == [["a", "bb"], ["ccc"]]
    assert client.budgets[0] == ("limits", None)


def test_embed_isolating_sends_texts_as_texts_and_images_as_images():
    client = FakeClient()
    vectors, errors = run(objects.embed_isolating(client, "text", ["ab", "c"], budget_s=4.0))
    assert [v.tolist() for v in vectors] == [[2.0, 1.0, 0.0], [1.0, 1.0, 0.0]] and errors == [None, None]
    assert client.calls == [("text", ["ab", "c"])]
    assert client.budgets == [("limits", 4.0), ("vectorize", 4.0)]
    client = FakeClient()
    vectors, errors = run(objects.embed_isolating(client, "image", [b"abc"], budget_s=1.5))
    assert [v.tolist() for v in vectors] == [[0.0, 3.0, 1.0]] and errors == [None]
    assert client.calls == [("image", [b"abc"])]
    assert client.budgets == [("limits", 1.5), ("vectorize", 1.5)]


def image_job_data(jobs: list[Job]) -> None:
    for j in jobs:
        assert not isinstance(j.data, ImageUrl)


def test_run_jobs_groups_per_vector_and_kind_and_stores_field_vectors():
    clients = {"main": FakeClient("clip:1"), "texts": FakeClient("minilm:1")}
    a, jobs_a = planned({"title": "Red", "photo": PNG, "body": "big"})
    b, jobs_b = planned({"title": "Shoes"})
    b.index = 4
    prefixes: list[int] = []

    def prefix_of(p: Pending) -> str:
        prefixes.append(p.index)
        return f"objects.{p.index}."

    run(objects.run_jobs(jobs_a + jobs_b, DOCS, clients.__getitem__, prefix_of, budget_s=9.0))
    assert sorted(clients["main"].calls) == [("image", [PNG_BYTES]), ("text", ["Red", "Shoes"])]
    assert clients["texts"].calls == [("text", ["Red", "big", "Shoes"])]
    assert ("vectorize", 9.0) in clients["main"].budgets and ("limits", 9.0) in clients["texts"].budgets
    assert a.error is None and b.error is None
    assert {k: {f: v.tolist() for f, v in per.items()} for k, per in a.field_vectors.items()} == {
        "main": {"title": [3.0, 1.0, 0.0], "photo": [0.0, float(len(PNG_BYTES)), 1.0]},
        "texts": {"title": [3.0, 1.0, 0.0], "body": [3.0, 1.0, 0.0]}}
    assert list(b.field_vectors) == ["main", "texts"]


def test_run_jobs_fails_only_the_object_with_a_rejected_or_wrong_answer():
    clients = {"main": FakeClient("clip:1", bad={"Broken"}), "texts": FakeClient("minilm:1", dims=2)}
    a, jobs_a = planned({"title": "Broken"}, vectors={"own": [1, 0, 0], "texts": [1, 0, 0]})
    b, jobs_b = planned({"title": "Fine"})
    b.index = 4
    run(objects.run_jobs(jobs_a + jobs_b, DOCS, clients.__getitem__, lambda p: f"objects.{p.index}."))
    assert failure(a) == ("objects.3.properties.title",
                          "inference service clip:1 rejected it: cannot take 'Broken'")
    # every vector of "texts" came back with 2 dimensions
    assert failure(b) == ("objects.4.properties.title",
                          "inference service minilm:1 returned 2 dimensions, expected 3")
    assert "texts" not in b.field_vectors and b.field_vectors["main"]["title"].tolist() == [4.0, 1.0, 0.0]


def test_run_sparse_jobs_checks_the_vocabulary():
    stored = StoredCollection(definition=DOCS.definition, vectors=DOCS.vectors,
                              sparse={"words": SparseInfo(vocab_size=5)})
    client = FakeClient("splade:1", bad={"rejected words"})
    ps = [started({"id": f"o{i}", "properties": {"title": t}}) for i, t in
          enumerate(["abcd", "abcde", "a bb", "rejected words"])]
    for i, p in enumerate(ps):
        p.index = i
    jobs = [j for p in ps for j in objects.plan_sparse_jobs(p, stored, P)]
    run(objects.run_sparse_jobs(jobs, stored, {"words": client}.__getitem__, lambda p: f"objects.{p.index}.",
                                budget_s=3.0))
    assert ps[0].error is None and ps[0].field_sparse["words"]["title"].indices == [4]  # 4 < 5: in
    assert failure(ps[1]) == ("objects.1.properties.title",
                              "inference service splade:1 returned token ids outside its vocabulary of 5")
    assert ps[2].error is None and ps[2].field_sparse["words"]["title"].indices == [1, 2]
    assert failure(ps[3]) == ("objects.3.properties.title",
                              "inference service splade:1 rejected it: cannot take 'rejected words'")
    assert ("sparse", 3.0) in client.budgets and client.budgets[0] == ("limits", 3.0)
    # without a known vocabulary nothing is checked
    unknown = StoredCollection(definition=DOCS.definition, vectors=DOCS.vectors)
    p = started({"id": "x", "properties": {"title": "abcdefghij"}})
    run(objects.run_sparse_jobs(objects.plan_sparse_jobs(p, unknown, P), unknown, lambda v: FakeClient(),
                                lambda q: P))
    assert p.error is None and p.field_sparse["words"]["title"].indices == [10]


# -- replaced objects and finished points --------------------------------------------------------------------
def test_of_objects_sharing_an_id_the_last_that_did_not_fail_is_written():
    ps = [objects.start(i, {"id": key, "properties": {"title": "t"}}, DOCS, f"objects.{i}.")
          for i, key in enumerate(["a", "b", "a", "a", "c"])]
    ps[3].fail("objects.3.properties", "failed")
    no_id = [objects.start(5 + i, {"properties": {}}, DOCS, "") for i in range(2)]
    objects.mark_replaced(ps + no_id)
    assert [p.replaced_by for p in ps + no_id] == [2, None, None, None, None, None, None]
    assert [p.result()["status"] for p in ps] == ["replaced", "ok", "ok", "error", "ok"]
    assert objects.finish(ps[0], DOCS) is None


def test_finish_builds_the_stored_point():
    p, jobs = planned({"title": "Red shoes", "body": "size", "photo": PNG, "price": 2.5})
    clients = {"main": FakeClient("clip:1"), "texts": FakeClient("minilm:1")}
    run(objects.run_jobs(jobs, DOCS, clients.__getitem__, lambda q: P))
    p.field_sparse = {"words": {"title": SparseVec([1, 4], [0.5, 1.0]),
                                "body": SparseVec([4, 2], [2.0, 0.25])}}
    rec = objects.finish(p, DOCS)
    assert rec is not None
    assert rec.id == object_uuid("sku-1")
    assert rec.payload == {"title": "Red shoes", "body": "size", "photo": PNG, "price": 2.5, ID_KEY: "sku-1"}
    assert p.properties == {"title": "Red shoes", "body": "size", "photo": PNG, "price": 2.5}

    def mean(vectors, weights):  # computed here, not by the function under test
        weighted = [w * np.asarray(v, dtype=float) for v, w in zip(vectors, weights, strict=True)]
        total = sum(weighted) / sum(weights)
        return (total / np.linalg.norm(total)).tolist()

    assert set(rec.dense) == {"own", "main", "texts"}
    assert rec.dense["own"] == [1.0, 0.0, 0.0]
    assert rec.dense["main"] == pytest.approx(mean([[9, 1, 0], [0, len(PNG_BYTES), 1]], [1, 1]), rel=1e-6)
    assert rec.dense["texts"] == pytest.approx(mean([[9, 1, 0], [4, 1, 0]], [3, 1]), rel=1e-6)
    assert set(rec.sparse) == {BM25_VECTOR, "words"}
    bm25 = make_encoder(DOCS.definition.bm25.settings()).document("Red shoes")
    assert (rec.sparse[BM25_VECTOR].indices, rec.sparse[BM25_VECTOR].values) == (bm25.indices, bm25.values)
    assert (rec.sparse["words"].indices, rec.sparse["words"].values) == ([1, 2, 4], [0.5, 0.25, 2.0])


def test_finish_leaves_out_empty_sparse_vectors_and_a_uuid_id():
    uid = str(uuid.uuid4())
    p = started({"id": uid, "properties": {"title": "the of"},
                 "vectors": {"own": [0, 0, 1], "main": [1, 0, 0], "texts": [0, 1, 0]}})
    p.sparse = {"kept": SparseVec([], []), "words": SparseVec([3], [1.0])}
    p.field_sparse = {"other": {"title": SparseVec([], [])}}
    rec = objects.finish(p, DOCS)
    assert rec is not None and rec.id == uid
    assert rec.payload == {"title": "the of"}  # a UUID id is the point id: not kept in the payload
    assert list(rec.sparse) == ["words"]  # stopwords only: no BM25 vector; empty ones left out
    assert (rec.sparse["words"].indices, rec.sparse["words"].values) == ([3], [1.0])  # a kept one as kept
    assert rec.dense == {"own": [0.0, 0.0, 1.0], "main": [1.0, 0.0, 0.0], "texts": [0.0, 1.0, 0.0]}
    # a collection without BM25 fields has no BM25 vector
    nobm25 = StoredCollection(definition=parse_definition({"name": "n",
                                                           "vectorizers": {"own": {"dimensions": 3}},
                                                           "bm25": {"fields": []}}),
                              vectors={"own": VectorInfo(dimensions=3)})
    q = objects.start(0, {"id": "k", "properties": {"title": "Red"}, "vectors": {"own": [1, 0, 0]}},
                      nobm25, "")
    rec = objects.finish(q, nobm25)
    assert rec is not None and rec.sparse == {} and rec.payload == {"title": "Red", ID_KEY: "k"}
    failed = started({"id": "sku-1", "properties": {"_polyvec_x": 1}})
    assert objects.finish(failed, DOCS) is None
