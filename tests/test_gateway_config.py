"""Gateway settings, collection definitions, the filter syntax and vector helpers (no network, no store)."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.config import ENV_VARS, GatewaySettings, SettingsError, parse_models
from gateway.definitions import parse_definition
from gateway.errors import BadRequest
from gateway.service.filters import parse_filter
from gateway.service.requests import SearchRequest, parse
from gateway.service.vectors import object_uuid, weighted_mean
from gateway.storage.base import FieldAny, FieldMatch, FieldRange, Filter

# -- settings --------------------------------------------------------------------------------------


def test_defaults_and_env_vars_listed():
    s = GatewaySettings.from_env({})
    assert (s.http_port, s.grpc_port, s.qdrant_url, s.api_keys, s.models) == (8000, 50050, None, (), {})
    assert s.embedded
    for var in ("QDRANT_URL", "QDRANT_API_KEY", "QDRANT_HTTPS", "QDRANT_TLS_CA", "DATA_DIR", "HTTP_PORT",
                "GRPC_PORT", "HOST", "MODELS", "API_KEYS", "INFERENCE_TIMEOUT_S", "INFERENCE_CONCURRENCY",
                "IMPORT_BATCH_SIZE", "MAX_REQUEST_BYTES", "LOG_LEVEL", "INFERENCE_MAX_WAITING",
                "INFERENCE_RETRY_BUDGET_S", "INFERENCE_QUERY_RETRY_BUDGET_S", "INFERENCE_QUERY_MAX_WAIT_S"):
        assert var in ENV_VARS
    budgets = (s.inference_retry_budget_s, s.inference_query_retry_budget_s)
    assert s.inference_max_waiting == 64 and budgets == (30, 2)
    assert s.inference_query_max_wait_s == 10
    assert GatewaySettings.from_env({"INFERENCE_QUERY_MAX_WAIT_S": "0"}).inference_query_max_wait_s == 0
    # the image fetcher's limits reach its policy
    assert s.image_url_policy().concurrency == 8 and "IMAGE_URL_CONCURRENCY" in ENV_VARS
    assert GatewaySettings.from_env({"IMAGE_URL_CONCURRENCY": "3"}).image_url_policy().concurrency == 3


def test_env_parsing_and_overrides():
    env = {"MODELS": "clip=10.0.0.1:50051, minilm=inf:9", "API_KEYS": "a, b,,", "HTTP_PORT": "off",
           "QDRANT_URL": "https://q:6333", "QDRANT_HTTPS": "true", "INFERENCE_TIMEOUT_S": "2.5",
           "LOG_LEVEL": "debug", "DATA_DIR": "/x"}
    s = GatewaySettings.from_env(env, grpc_port=1234)
    assert s.models == {"clip": "10.0.0.1:50051", "minilm": "inf:9"}
    assert s.api_keys == ("a", "b")
    assert s.http_port is None and s.grpc_port == 1234
    assert s.qdrant_https is True and not s.embedded
    assert s.inference_timeout_s == 2.5 and s.log_level == "DEBUG" and s.data_dir == "/x"


@pytest.mark.parametrize("env,name", [
    ({"HTTP_PORT": "99999"}, "HTTP_PORT"),
    ({"GRPC_PORT": "x"}, "GRPC_PORT"),
    ({"MODELS": "clip"}, "MODELS"),
    ({"INFERENCE_CONCURRENCY": "0"}, "INFERENCE_CONCURRENCY"),
    ({"INFERENCE_TIMEOUT_S": "soon"}, "INFERENCE_TIMEOUT_S"),
    ({"QDRANT_URL": "q:6333"}, "QDRANT_URL"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ({"QDRANT_HTTPS": "maybe"}, "QDRANT_HTTPS"),
    ({"DRAIN_TIMEOUT_S": "-1"}, "DRAIN_TIMEOUT_S"),
    ({"DRAIN_TIMEOUT_S": "later"}, "DRAIN_TIMEOUT_S"),
    ({"INFERENCE_MAX_WAITING": "-1"}, "INFERENCE_MAX_WAITING"),
    ({"INFERENCE_RETRY_BUDGET_S": "-2"}, "INFERENCE_RETRY_BUDGET_S"),
    ({"INFERENCE_RETRY_BUDGET_S": "long"}, "INFERENCE_RETRY_BUDGET_S"),
    ({"INFERENCE_QUERY_RETRY_BUDGET_S": "nan"}, "INFERENCE_QUERY_RETRY_BUDGET_S"),
    ({"INFERENCE_QUERY_MAX_WAIT_S": "-1"}, "INFERENCE_QUERY_MAX_WAIT_S"),
    ({"INFERENCE_QUERY_MAX_WAIT_S": "a while"}, "INFERENCE_QUERY_MAX_WAIT_S"),
    ({"IMAGE_URL_CONCURRENCY": "0"}, "IMAGE_URL_CONCURRENCY"),
    ({"IMAGE_URL_CONCURRENCY": "many"}, "IMAGE_URL_CONCURRENCY"),
])
def test_bad_settings_name_the_variable(env, name):
    with pytest.raises(SettingsError, match=name):
        GatewaySettings.from_env(env)


def test_models_duplicate_rejected():
    with pytest.raises(SettingsError, match="twice"):
        parse_models("a=h:1,a=h:2")


# -- definitions -----------------------------------------------------------------------------------

GOOD = {"name": "products", "vectorizers": {"clip": {"model": "clip", "text_fields": ["title"],
                                                     "image_fields": ["photo"], "weights": {"photo": 2}}}}


def test_good_definition_defaults():
    d = parse_definition(GOOD)
    assert d.distance == "cosine"
    assert d.bm25.fields == ["title"] and d.bm25.k1 == 1.2 and d.bm25.b == 0.75
    assert d.vectorizers["clip"].weight("photo") == 2.0 and d.vectorizers["clip"].weight("title") == 1.0
    assert d.default_vector() == "clip"


def _with(**changes):
    import copy

    d = copy.deepcopy(GOOD)
    for path, value in changes.items():
        target = d
        keys = path.split("__")
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return d


@pytest.mark.parametrize("definition,field", [
    (_with(name="9lives"), "name"),
    (_with(name="_polyvec_x"), "name"),
    (_with(distance="manhattan"), "distance"),
    (_with(vectorizers__clip__text_fields=["ok", "bad field"]), "vectorizers.clip.text_fields"),
    (_with(vectorizers__clip__weights={"nope": 1}), "vectorizers.clip"),
    (_with(vectorizers__clip__weights={"photo": -1}), "vectorizers.clip"),
    (_with(vectorizers__clip__inference_url="no-port"), "vectorizers.clip.inference_url"),
    (_with(vectorizers__clip__dimensions=0), "vectorizers.clip.dimensions"),
    (_with(vectorizers__clip__surprise=1), "vectorizers.clip.surprise"),
    (_with(vectorizers={"bm25": {"model": "clip", "text_fields": ["t"]}}), "vectorizers"),
    (_with(bm25={"fields": ["t"], "b": 2}), "bm25.b"),
    (_with(bm25={"fields": ["t"], "k1": -1}), "bm25.k1"),
    (_with(shard_number=0), "shard_number"),
    ({"name": "x", "vectorizers": {"v": {"model": "m"}}}, "vectorizers.v"),
    ({"name": "x", "vectorizers": {"v": {"text_fields": ["t"]}}}, "vectorizers.v"),
    ({"name": "x", "vectorizers": {"v": {"model": "m", "inference_url": "h:1", "text_fields": ["t"]}}},
     "vectorizers.v"),
    ({"vectorizers": {}}, "name"),
])
def test_bad_definitions_name_the_field(definition, field):
    with pytest.raises(BadRequest) as info:
        parse_definition(definition)
    assert info.value.field is not None and info.value.field.startswith(field), info.value.field


def test_user_vectors_only_vectorizer():
    d = parse_definition({"name": "own", "vectorizers": {"v": {"dimensions": 4}}})
    assert not d.vectorizers["v"].uses_service and not d.has_bm25


# -- filters ---------------------------------------------------------------------------------------

def test_filter_syntax():
    flt = parse_filter({"color": "red", "price": {"gte": 1, "lt": 5}, "tags": ["a", "b"],
                        "should": [{"size": 1}, {"size": 2}], "must_not": [{"sold": True}]})
    assert flt == Filter(
        must=[FieldMatch("color", "red"), FieldRange("price", gte=1.0, lt=5.0), FieldAny("tags", ["a", "b"])],
        should=[FieldMatch("size", 1), FieldMatch("size", 2)],
        must_not=[FieldMatch("sold", True)],
    )
    assert parse_filter({"a": {"ne": "x", "not_in": [1, 2]}}) == Filter(
        must_not=[FieldMatch("a", "x"), FieldAny("a", [1, 2])])
    assert parse_filter(None) is None and parse_filter({}) is None


@pytest.mark.parametrize("flt,field", [
    ({"price": {"gte": "cheap"}}, "filter.price.gte"),
    ({"price": {"around": 3}}, "filter.price.around"),
    ({"tags": []}, "filter.tags"),
    ({"tags": ["a", 1]}, "filter.tags"),
    ({"must": {"a": 1}}, "filter.must"),
    ({"must": [{"a": {"x": 1}}]}, "filter.must.0.a.x"),
    ({"a": {"b": 1}}, "filter.a.b"),
    ("color=red", "filter"),
])
def test_bad_filters_name_the_path(flt, field):
    with pytest.raises(BadRequest) as info:
        parse_filter(flt)
    assert info.value.field == field


# -- search requests -------------------------------------------------------------------------------

@pytest.mark.parametrize("body,field", [
    ({}, "near_text|near_image|near_vector|bm25|neural_sparse|hybrid"),
    ({"near_text": {"query": "a"}, "bm25": {"query": "a"}},
     "near_text|near_image|near_vector|bm25|neural_sparse|hybrid"),
    ({"hybrid": {"query": "a", "alpha": 1.5}}, "hybrid.alpha"),
    ({"hybrid": {"query": "a", "fusion": "max"}}, "hybrid.fusion"),
    ({"near_text": {"query": ""}}, "near_text.query"),
    ({"near_text": {"query": "a"}, "limit": 0}, "limit"),
    ({"near_text": {"query": "a"}, "offset": -1}, "offset"),
    ({"near_text": {"query": "a"}, "colour": 1}, "colour"),
])
def test_bad_search_requests(body, field):
    with pytest.raises(BadRequest) as info:
        parse(SearchRequest, body)
    assert info.value.field == field


# -- vectors and ids -------------------------------------------------------------------------------

def test_weighted_mean_is_normalised():
    a = np.array([1.0, 0.0], dtype=np.float32)
    b = np.array([0.0, 1.0], dtype=np.float32)
    v = weighted_mean([a, b], [1.0, 3.0])
    assert np.isclose(np.linalg.norm(v), 1.0)
    assert np.allclose(v, np.array([1, 3]) / np.sqrt(10), atol=1e-6)


def test_object_uuid_stable():
    assert object_uuid("doc-1") == object_uuid("doc-1") != object_uuid("doc-2")
    u = "3c88a3f6-ffb5-5692-b7a3-1ddda3edcb31"
    assert object_uuid(u) == u and object_uuid(u.upper()) == u
