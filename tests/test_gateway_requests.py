"""The request models of gateway/service/requests.py at their bounds, without a gateway.

The bad-input suite (tests/test_gateway_bad_input.py) sends only values that must be refused, so a
mutant that moved a bound inward (refusing alpha = 1, a weight of 0, limit = MAX_LIMIT) survived it:
here the last accepted value of each bound is accepted, the first refused one refused naming the field.
Mutation testing found these (docs/mutation-report.md); mutmut skips decorated validators and Field
constraints, so they were mutated by hand.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import BadRequest
from gateway.service.requests import (
    MAX_FACET_LIMIT,
    MAX_LIMIT,
    DeleteRequest,
    FacetsRequest,
    ObjectIn,
    ReindexBm25Request,
    ScrollRequest,
    SearchRequest,
    parse,
)

TEXT = {"near_text": {"query": "red"}}

ACCEPTED: list[tuple[str, type, dict[str, Any]]] = [
    ("hybrid weight 0 beside a positive one", SearchRequest,
     {"hybrid": {"query": "a", "weights": {"main": 1, "bm25": 0}}}),
    ("hybrid with three lists", SearchRequest,
     {"hybrid": {"query": "a", "weights": {"main": 1, "bm25": 0.5, "splade": 2}}}),
    ("hybrid alpha 1 (vector only)", SearchRequest, {"hybrid": {"query": "a", "alpha": 1.0}}),
    ("hybrid alpha 0 (bm25 only)", SearchRequest, {"hybrid": {"query": "a", "alpha": 0.0}}),
    ("limit 1", SearchRequest, {**TEXT, "limit": 1}),
    ("limit MAX_LIMIT", SearchRequest, {**TEXT, "limit": MAX_LIMIT}),
    ("offset 0", SearchRequest, {**TEXT, "offset": 0}),
    ("offset MAX_LIMIT", SearchRequest, {**TEXT, "offset": MAX_LIMIT}),
    ("browse with order_by alone", SearchRequest, {"order_by": {"field": "year"}}),
    ("browse with a filter alone", SearchRequest, {"filter": {"year": {"gte": 2000}}}),
    ("mmr lambda 0, candidates 1", SearchRequest,
     {**TEXT, "diversity": {"mmr": {"lambda": 0.0, "candidates": 1}}}),
    ("mmr lambda 1, candidates MAX_LIMIT", SearchRequest,
     {**TEXT, "diversity": {"mmr": {"lambda": 1.0, "candidates": MAX_LIMIT}}}),
    ("facet limit MAX_FACET_LIMIT", FacetsRequest, {"field": "tag", "limit": MAX_FACET_LIMIT}),
    ("a tiny positive avg_len", ReindexBm25Request, {"avg_len": 1e-9}),
    ("scroll limit 1", ScrollRequest, {"limit": 1}),
    ("an id with spaces around it", ObjectIn, {"id": " a "}),
    ("delete ids with spaces around them", DeleteRequest, {"ids": [" a "]}),
]

REFUSED: list[tuple[str, type, Any, str, str]] = [
    ("hybrid alpha above 1", SearchRequest, {"hybrid": {"query": "a", "alpha": 1.0001}},
     "hybrid.alpha", "must be in [0, 1], not 1.0001"),
    ("hybrid alpha below 0", SearchRequest, {"hybrid": {"query": "a", "alpha": -0.0001}},
     "hybrid.alpha", "must be in [0, 1], not -0.0001"),
    ("hybrid with four lists", SearchRequest,
     {"hybrid": {"query": "a", "weights": {"main": 1, "bm25": 1, "s1": 1, "s2": 1}}},
     "hybrid.weights", "name two or three lists (a dense vectorizer, bm25, a sparse vectorizer), not 4"),
    ("limit 0", SearchRequest, {**TEXT, "limit": 0}, "limit", "Input should be greater than or equal to 1"),
    ("offset -1", SearchRequest, {**TEXT, "offset": -1}, "offset",
     "Input should be greater than or equal to 0"),
    ("limit above MAX_LIMIT", SearchRequest, {**TEXT, "limit": MAX_LIMIT + 1}, "limit",
     f"Input should be less than or equal to {MAX_LIMIT}"),
    ("offset above MAX_LIMIT", SearchRequest, {**TEXT, "offset": MAX_LIMIT + 1}, "offset",
     f"Input should be less than or equal to {MAX_LIMIT}"),
    ("mmr candidates above MAX_LIMIT", SearchRequest,
     {**TEXT, "diversity": {"mmr": {"candidates": MAX_LIMIT + 1}}}, "diversity.mmr.candidates",
     f"Input should be less than or equal to {MAX_LIMIT}"),
    ("mmr lambda above 1", SearchRequest, {**TEXT, "diversity": {"mmr": {"lambda": 1.5}}},
     "diversity.mmr.lambda", "Input should be less than or equal to 1"),
    ("mmr lambda below 0", SearchRequest, {**TEXT, "diversity": {"mmr": {"lambda": -0.5}}},
     "diversity.mmr.lambda", "Input should be greater than or equal to 0"),
    ("mmr candidates 0", SearchRequest, {**TEXT, "diversity": {"mmr": {"candidates": 0}}},
     "diversity.mmr.candidates", "Input should be greater than or equal to 1"),
    ("facet limit 0", FacetsRequest, {"field": "tag", "limit": 0}, "limit",
     "Input should be greater than or equal to 1"),
    ("facet limit above MAX_FACET_LIMIT", FacetsRequest, {"field": "tag", "limit": MAX_FACET_LIMIT + 1},
     "limit", f"Input should be less than or equal to {MAX_FACET_LIMIT}"),
    ("facet exact as a string", FacetsRequest, {"field": "tag", "exact": "true"}, "exact",
     "Input should be a valid boolean"),
    ("avg_len infinite (gRPC can send it)", ReindexBm25Request, {"avg_len": float("inf")}, "avg_len",
     "Input should be a finite number"),
    ("avg_len 0", ReindexBm25Request, {"avg_len": 0.0}, "avg_len", "Input should be greater than 0"),
    ("scroll limit 0", ScrollRequest, {"limit": 0}, "limit", "Input should be greater than or equal to 1"),
    ("an empty near_vector", SearchRequest, {"near_vector": {"vector": []}}, "near_vector.vector",
     "List should have at least 1 item after validation, not 0"),
    ("an empty order_by field", SearchRequest, {"order_by": {"field": ""}}, "order_by.field",
     "String should have at least 1 character"),
    ("an empty facet field", FacetsRequest, {"field": ""}, "field",
     "String should have at least 1 character"),
    ("a query text with a lone surrogate", SearchRequest, {"near_text": {"query": "a\ud800"}},
     "near_text.query", "holds a lone surrogate (U+D800) at character 1: a text must be valid Unicode"),
    ("a body that is a list", SearchRequest, [TEXT], "body", "must be a JSON object"),
    ("a body that is a string", ScrollRequest, "{}", "body", "must be a JSON object"),
]


@pytest.mark.parametrize("name,model,body", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_the_last_value_a_bound_accepts_is_accepted(name, model, body):
    parsed = parse(model, body)
    assert isinstance(parsed, model)


@pytest.mark.parametrize("name,model,body,field,message", REFUSED, ids=[c[0] for c in REFUSED])
def test_the_first_value_past_a_bound_is_refused_naming_the_field(name, model, body, field, message):
    with pytest.raises(BadRequest) as exc:
        parse(model, body)
    assert (exc.value.field, exc.value.detail) == (field, message)


def test_a_body_that_is_not_an_object_is_named_by_the_prefix_inside_a_batch():
    with pytest.raises(BadRequest) as exc:
        parse(SearchRequest, ["near_text"], "searches.2")
    assert (exc.value.field, exc.value.detail) == ("searches.2", "must be a JSON object")


def test_the_values_given_are_kept():
    req = parse(SearchRequest, {"hybrid": {"query": "a", "alpha": 1.0}, "limit": MAX_LIMIT, "offset": 3})
    assert (req.kind, req.hybrid.alpha, req.limit, req.offset) == ("hybrid", 1.0, MAX_LIMIT, 3)
    assert parse(SearchRequest, {"order_by": {"field": "year"}}).kind == "browse"
    assert parse(ObjectIn, {"id": " a "}).id == " a "
