"""gateway/service/queries.py without a gateway: every refusal of :func:`prepare` names its field (inside
``searches.N`` in a batch) with its message, and a prepared query carries what the store needs.

The bad-input suite checks these refusals over HTTP and gRPC, but it runs the gateway in a subprocess and
compares only the status and the field; a mutation run over queries.py (docs/mutation-report.md) left
the messages, the batch prefix of each field and the specs of prepared queries unpinned.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from gateway.definitions import BM25_VECTOR, parse_definition
from gateway.errors import BadRequest
from gateway.service import queries
from gateway.service.collections import StoredCollection, VectorInfo
from gateway.service.objects import ID_KEY
from gateway.service.requests import SearchRequest, parse
from gateway.storage.base import DenseQuery, Hit, HybridQuery, SparseQuery

DOCS = StoredCollection(
    definition=parse_definition({
        "name": "docs",
        "vectorizers": {
            "main": {"model": "clip", "text_fields": ["title"], "image_fields": ["photo"]},
            "texts": {"model": "minilm", "text_fields": ["title"]},
            "own": {"dimensions": 3},
        },
    }),
    vectors={"main": VectorInfo(dimensions=3, modalities=["text", "image"]),
             "texts": VectorInfo(dimensions=3, modalities=["text"]),
             "own": VectorInfo(dimensions=3)},
)
ONLY_BM25 = StoredCollection(
    definition=parse_definition({"name": "words", "vectorizers": {}, "bm25": {"fields": ["title"]}}),
    vectors={})
NO_BM25 = StoredCollection(
    definition=parse_definition({"name": "nobm25", "vectorizers": {"own": {"dimensions": 3}},
                                 "bm25": {"fields": []}}),
    vectors={"own": VectorInfo(dimensions=3)},
)
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf0000000301010018dd8db40000000049454e44ae426082")).decode()


async def _no_fetch(url: str) -> bytes:
    raise ValueError(f"fetched {url}")


def prepare(stored: StoredCollection, body: dict[str, Any], where: str = "") -> queries.Query:
    req = parse(SearchRequest, body)
    return asyncio.run(queries.prepare(stored, req, where, _no_fetch))


REFUSED = [
    ("no dense vector", ONLY_BM25, {"near_text": {"query": "a"}}, "vector",
     "this collection has no dense vectors (only bm25)"),
    ("unknown vector", DOCS, {"near_text": {"query": "a"}, "vector": "nope"}, "vector",
     "unknown vector 'nope'; this collection has ['main', 'own', 'texts']"),
    ("unknown vector beside bm25", DOCS, {"bm25": {"query": "a"}, "vector": "nope"}, "vector",
     "unknown vector 'nope'; this collection has ['main', 'own', 'texts']"),
    ("bm25 without bm25 fields", NO_BM25, {"bm25": {"query": "a"}}, "bm25",
     "collection 'nobm25' has no bm25 fields"),
    ("hybrid without bm25 fields", NO_BM25, {"hybrid": {"query": "a"}, "vector": "own"}, "hybrid",
     "collection 'nobm25' has no bm25 fields"),
    ("text on a vector without a model", DOCS, {"near_text": {"query": "a"}, "vector": "own"},
     "near_text.query", "vector 'own' holds user-supplied vectors and has no model; use near_vector"),
    ("hybrid on a vector without a model", DOCS, {"hybrid": {"query": "a"}, "vector": "own"},
     "hybrid.query", "vector 'own' holds user-supplied vectors and has no model; use near_vector"),
    ("an image for a text-only model", DOCS, {"near_image": {"image": PNG}, "vector": "texts"},
     "near_image.image", "the model of vector 'texts' does not embed images"),
    ("an image that is not base64", DOCS, {"near_image": {"image": "%%%"}}, "near_image.image", None),
    ("an image URL that cannot be fetched", DOCS, {"near_image": {"image": "https://x.example/a.png "}},
     "near_image.image", "fetched https://x.example/a.png"),
    ("a near_vector of the wrong length", DOCS, {"near_vector": {"vector": [1.0, 2.0]}, "vector": "own"},
     "near_vector.vector", None),
    ("a bad filter", DOCS, {"near_vector": {"vector": [1.0, 2.0, 3.0]}, "vector": "own",
                            "filter": {"year": {"zz": 1}}}, "filter.year.zz", None),
]


@pytest.mark.parametrize("where", ["", "searches.2"])
@pytest.mark.parametrize("name,stored,body,field,message", REFUSED, ids=[c[0] for c in REFUSED])
def test_a_refused_search_names_its_field_inside_the_batch(name, stored, body, field, message, where):
    with pytest.raises(BadRequest) as exc:
        prepare(stored, body, where)
    assert exc.value.field == queries.at(where, field)
    assert exc.value.field == (f"searches.2.{field}" if where else field)
    if message is not None:
        assert exc.value.detail == message


def test_query_failures_name_the_field_inside_the_batch_or_the_search_itself():
    q = queries.Query(req=None, where="searches.3")
    q.fail("near_text.query", "no")
    assert (q.error.field, q.error.detail) == ("searches.3.near_text.query", "no")
    q = queries.Query(req=None, where="searches.3")
    q.fail(None, "refused")
    assert (q.error.field, q.error.detail) == ("searches.3", "refused")
    q = queries.Query(req=None)
    q.fail(None, "refused")
    assert (q.error.field, q.error.detail) == (None, "refused")
    failed = queries.Query.failed("searches.1", BadRequest("searches.1.limit", "too big"))
    assert (failed.req, failed.where, failed.error.field) == (None, "searches.1", "searches.1.limit")
    assert not failed.waiting and not failed.alone


def test_what_waits_for_the_model_and_what_runs_alone():
    text = prepare(DOCS, {"near_text": {"query": "red"}, "vector": "texts"})
    assert (text.vector, text.text, text.embed_field, text.waiting, text.alone) == \
        ("texts", "red", "near_text.query", True, False)
    image = prepare(DOCS, {"near_image": {"image": PNG}})
    assert (image.vector, image.embed_field, image.waiting, image.text) == \
        ("main", "near_image.image", True, None)
    assert image.image is not None and image.image.startswith(b"\x89PNG")
    vector = prepare(DOCS, {"near_vector": {"vector": [1, 2, 3]}, "vector": "own"})
    assert (vector.values, vector.waiting) == ([1.0, 2.0, 3.0], False)
    assert all(type(v) is float for v in vector.values)
    bm25 = prepare(DOCS, {"bm25": {"query": "red fox"}})
    assert bm25.vector is None and bm25.sparse is not None and bm25.sparse.indices and not bm25.waiting
    hybrid = prepare(DOCS, {"hybrid": {"query": "red fox"}})
    assert (hybrid.vector, hybrid.text, hybrid.embed_field, hybrid.waiting) == \
        ("main", "red fox", "hybrid.query", True)
    assert hybrid.sparse is not None and hybrid.sparse.indices
    for body in ({"filter": {"year": {"gt": 1}}},
                 {"near_text": {"query": "a"}, "order_by": {"field": "year"}},
                 {"near_text": {"query": "a"}, "diversity": {"mmr": {}}},
                 {"neural_sparse": {"query": "a"}},
                 {"hybrid": {"query": "a", "weights": {"main": 1, "bm25": 1}}}):
        alone = prepare(DOCS, body, "searches.0")
        assert alone.alone and not alone.waiting and alone.where == "searches.0", body
        assert alone.req == parse(SearchRequest, body)  # the service runs it from its request
    # a query with an answer or an error waits no more
    text.values = [0.0, 0.0, 1.0]
    assert not text.waiting
    image.error = BadRequest("near_image.image", "bad")
    assert not image.waiting


def test_specs_carry_the_query_paging_and_payload_choice():
    q = prepare(DOCS, {"near_vector": {"vector": [1, 2, 3]}, "vector": "own", "limit": 7, "offset": 2,
                       "properties": ["title"], "filter": {"year": {"gt": 1}}})
    spec = q.spec()
    assert spec.query == DenseQuery("own", [1.0, 2.0, 3.0])
    assert (spec.limit, spec.offset, spec.with_payload) == (7, 2, ["title", ID_KEY])
    assert spec.filter is not None and spec.filter == q.filter
    assert prepare(DOCS, {"near_vector": {"vector": [1, 2, 3]}, "vector": "own"}).spec().with_payload is True

    bm25 = prepare(DOCS, {"bm25": {"query": "red fox"}})
    assert bm25.spec().query == SparseQuery(BM25_VECTOR, bm25.sparse)

    hybrid = prepare(DOCS, {"hybrid": {"query": "red fox"}})
    hybrid.values = [0.0, 1.0, 0.0]
    assert hybrid.spec().query == HybridQuery("main", [0.0, 1.0, 0.0], BM25_VECTOR, hybrid.sparse, 0.5, "rrf")
    weighted = prepare(DOCS, {"hybrid": {"query": "red fox", "alpha": 0.0, "fusion": "relative_score"}})
    weighted.values = [0.0, 1.0, 0.0]
    assert weighted.spec().query == HybridQuery("main", [0.0, 1.0, 0.0], BM25_VECTOR, weighted.sparse, 0.0,
                                                "relative_score")


def test_hits_show_the_users_id_the_score_and_the_chosen_properties():
    hits = [Hit("4f1c7a52-1111-4a4a-8a8a-000000000001", 2, {"title": "a", "year": 1, ID_KEY: "doc-1",
                                                             "_polyvec_x": 0}),
            Hit("4f1c7a52-1111-4a4a-8a8a-000000000002", 0.5, None)]
    every = prepare(DOCS, {"near_vector": {"vector": [1, 2, 3]}, "vector": "own"})
    assert every.hits_out(hits) == [
        {"id": "doc-1", "score": 2.0, "properties": {"title": "a", "year": 1}},
        {"id": "4f1c7a52-1111-4a4a-8a8a-000000000002", "score": 0.5, "properties": {}},
    ]
    assert type(every.hits_out(hits)[0]["score"]) is float
    chosen = prepare(DOCS, {"near_vector": {"vector": [1, 2, 3]}, "vector": "own", "properties": ["year"]})
    assert chosen.hits_out(hits)[0] == {"id": "doc-1", "score": 2.0, "properties": {"year": 1}}
