"""gateway.service.filters, unit by unit: what a filter turns into, and which field each error names.

Written to kill the mutants a mutation run of filters.py left alive (see the issue 7 report): the depth
limit and the path it names, empty field names, several negations in one filter, the simplification of
one-condition filters, datetime equality, the path of mixed range bounds, the operators each declared
type allows, typed operands (uuid, bool, keyword, integer), the negated operators' paths, prefix,
exists / is_null / is_empty, geo and values_count bounds.
"""

from __future__ import annotations

import pytest

from gateway.errors import BadRequest
from gateway.fields import FieldType
from gateway.service.filters import parse_filter
from gateway.storage.base import (
    FieldAny,
    FieldDatetimeRange,
    FieldGeoBox,
    FieldGeoRadius,
    FieldIsEmpty,
    FieldIsNull,
    FieldMatch,
    FieldPrefix,
    FieldRange,
    FieldValuesCount,
    Filter,
    GeoPoint,
)

TYPES = {name: FieldType.parse(kind) for name, kind in {
    "released": "datetime", "price": "float", "brand": "keyword", "id": "uuid", "stock": "integer",
    "in_stock": "bool", "place": "geo", "tags": "keyword[]"}.items()}
UUID = "3c88a3f6-ffb5-5692-b7a3-1ddda3edcb31"


def bad(flt, fields=None, **kwargs) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parse_filter(flt, "filter", fields, **kwargs)
    return info.value


def nest(levels: int) -> dict:
    value: dict = {"n": 1}
    for _ in range(levels):
        value = {"must": [value]}
    return value


def test_the_depth_limit_counts_objects_and_lists_and_names_the_place():
    assert parse_filter(nest(15), max_depth=32) is not None  # 31 deep
    err = bad(nest(16), max_depth=32)  # 33 deep
    assert err.field == "filter" + ".must.0" * 16
    assert err.detail == "filters nest at most 32 levels deep (FILTER_MAX_DEPTH)"
    assert bad(nest(2), max_depth=4).field == "filter.must.0.must.0"
    with pytest.raises(BadRequest) as info:
        parse_filter(nest(2), "f", max_depth=4)
    assert info.value.field == "f.must.0.must.0"


def test_structure_errors_name_the_path():
    assert bad("x").field == "filter" and "a filter must be a JSON object" in bad("x").detail
    assert bad({"must": {"a": 1}}).field == "filter.must"
    assert bad({"must": {"a": 1}}).detail == "must be a list of filters"
    assert bad({"should": ["x"]}).field == "filter.should.0"
    err = bad({"": 1})
    assert err.field == "filter" and err.detail == "field names must be non-empty strings"


def test_several_negations_and_conditions_are_all_kept():
    flt = parse_filter({"a": {"ne": 1}, "b": {"ne": 2}, "c": {"not_in": ["x"]}, "d": 4})
    assert flt == Filter(must=[FieldMatch("d", 4)],
                         must_not=[FieldMatch("a", 1), FieldMatch("b", 2), FieldAny("c", ["x"])])


def test_only_a_single_positive_condition_is_simplified():
    flt = parse_filter({"must": [{"a": 1}, {"b": 2, "c": 3}, {"d": {"ne": 4}}],
                        "should": [{"e": 5, "must_not": [{"f": 6}]}]})
    assert flt.must[0] == FieldMatch("a", 1)
    assert flt.must[1] == Filter(must=[FieldMatch("b", 2), FieldMatch("c", 3)])
    assert flt.must[2] == Filter(must_not=[FieldMatch("d", 4)])
    assert flt.should[0] == Filter(must=[FieldMatch("e", 5)], must_not=[FieldMatch("f", 6)])


def test_eq_ne_in_not_in_with_explicit_operators():
    flt = parse_filter({"a": {"eq": "x"}, "b": {"in": [1, 2]}, "c": {"eq": 1.5}})
    assert flt.must == [FieldMatch("a", "x"), FieldAny("b", [1, 2]), FieldRange("c", gte=1.5, lte=1.5)]
    assert bad({"a": {"eq": [1]}}).field == "filter.a.eq"
    assert bad({"a": {"ne": [1]}}).field == "filter.a.ne"
    assert bad({"a": {"in": "x"}}).field == "filter.a.in"
    assert bad({"a": {"not_in": "x"}}).field == "filter.a.not_in"
    assert bad({"a": {"not_in": ["x", 1]}}).detail.endswith("(not mixed)")
    assert bad({"a": {"in": []}}).detail == "must be a non-empty list of strings or of integers"


def test_datetime_equality_is_a_closed_range():
    flt = parse_filter({"released": "2024-05-01T12:00:00Z"}, fields=TYPES)
    assert flt.must == [FieldDatetimeRange("released", gte="2024-05-01T12:00:00+00:00",
                                           lte="2024-05-01T12:00:00+00:00")]
    assert bad({"released": {"eq": 5}}, TYPES).field == "filter.released.eq"


def test_mixed_range_bounds_name_the_first_bound():
    err = bad({"n": {"gte": 1, "lt": "2024-01-01T00:00:00Z"}})
    assert err.field == "filter.n.gte" and "all bounds of one field the same kind" in err.detail
    assert bad({"price": {"gte": "x"}}, TYPES).field == "filter.price.gte"
    assert parse_filter({"price": {"gt": 1, "lte": 2}}, fields=TYPES).must == [FieldRange("price", gt=1.0,
                                                                                          lte=2.0)]


def test_declared_types_allow_only_their_operators_and_operands():
    assert bad({"place": [1, 2]}, TYPES).field == "filter.place"  # 'in' on a geo field
    assert bad({"place": "x"}, TYPES).field == "filter.place"  # 'eq' on a geo field
    assert "does not apply to geo field 'place'" in bad({"place": "x"}, TYPES).detail
    assert bad({"zz": 1}, TYPES).field == "filter.zz"
    err = bad({"price": {"match": "x"}}, TYPES)
    assert err.field == "filter.price.match" and "use one of" in err.detail and "geo_radius" not in err.detail
    assert bad({"id": "not-a-uuid"}, TYPES).detail == "must be a UUID string ('id' is a uuid field)"
    assert parse_filter({"id": UUID}, fields=TYPES).must == [FieldMatch("id", UUID)]
    assert bad({"in_stock": "true"}, TYPES).detail == "must be true or false ('in_stock' is a bool field)"
    assert bad({"brand": 5}, TYPES).detail == "must be a string ('brand' is a keyword field)"
    assert bad({"stock": True}, TYPES).detail == "must be an integer ('stock' is a integer field)"
    assert bad({"stock": {"in": [1, "2"]}}, TYPES).field == "filter.stock.in.1"


def test_prefix_and_presence_operators():
    assert parse_filter({"sku": {"prefix": "AB-"}}).must == [FieldPrefix("sku", "AB-")]
    for value in (5, "", None):
        assert bad({"sku": {"prefix": value}}).field == "filter.sku.prefix"
    flt = parse_filter({"a": {"is_null": True}, "b": {"is_empty": True}, "c": {"exists": True},
                        "d": {"exists": False}, "e": {"is_null": False}})
    assert flt.must == [FieldIsNull("a"), FieldIsEmpty("b"), FieldIsEmpty("d")]
    assert flt.must_not == [FieldIsEmpty("c"), FieldIsNull("e")]
    err = bad({"a": {"exists": "yes"}})
    assert err.field == "filter.a.exists" and err.detail == "must be true or false"


def test_geo_operands():
    flt = parse_filter({"place": {"geo_radius": {"lat": 52.5, "lon": 13.4, "meters": 0.5}}}, fields=TYPES)
    assert flt.must == [FieldGeoRadius("place", GeoPoint(52.5, 13.4), 0.5)]
    radius = "filter.place.geo_radius"
    assert bad({"place": {"geo_radius": {"lat": 1, "lon": 1, "meters": 0}}}).field == f"{radius}.meters"
    assert bad({"place": {"geo_radius": [1]}}).field == radius
    assert bad({"place": {"geo_radius": {"lat": 100, "lon": 1, "meters": 5}}}).field == radius
    box = {"top_left": {"lat": 10, "lon": 1}, "bottom_right": {"lat": 10, "lon": 2}}  # a line: allowed
    assert parse_filter({"place": {"geo_box": box}}).must == [
        FieldGeoBox("place", GeoPoint(10.0, 1.0), GeoPoint(10.0, 2.0))]
    assert bad({"place": {"geo_box": [box]}}).field == "filter.place.geo_box"
    assert bad({"place": {"geo_box": {**box, "top_left": {"lat": 9, "lon": 1}}}}).field == \
        "filter.place.geo_box.top_left.lat"
    assert bad({"place": {"geo_box": {**box, "top_left": {"lat": 99, "lon": 1}}}}).field == \
        "filter.place.geo_box.top_left"
    assert bad({"place": {"geo_box": {**box, "bottom_right": "x"}}}).field == \
        "filter.place.geo_box.bottom_right"


def test_values_count_bounds():
    assert parse_filter({"tags": {"values_count": {"gte": 0, "lt": 3}}}).must == [
        FieldValuesCount("tags", gte=0, lt=3)]
    for value, field in (([1], "filter.tags.values_count"), ({}, "filter.tags.values_count"),
                         ({"gte": -1}, "filter.tags.values_count.gte"),
                         ({"gte": True}, "filter.tags.values_count.gte"),
                         ({"gte": 1.5}, "filter.tags.values_count.gte"),
                         ({"around": 1}, "filter.tags.values_count.around")):
        assert bad({"tags": {"values_count": value}}).field == field
