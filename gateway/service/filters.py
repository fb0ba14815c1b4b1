"""The JSON filter syntax of searches, turned into storage filters.

```
filter    := { FIELD: spec, ..., "must": [filter, ...], "should": [filter, ...], "must_not": [filter, ...] }
spec      := scalar                      equality                 {"color": "red"}
           | [scalar, ...]               any of                   {"color": ["red", "blue"]}
           | {op: value, ...}            every op must hold       {"price": {"gte": 10, "lt": 20}}
op        := "eq" scalar | "ne" scalar | "in" [scalar] | "not_in" [scalar]
           | "gt" | "gte" | "lt" | "lte"  number, or an RFC 3339 date-time string
           | "match" text                 full text: any of the terms
           | "match_all" text             full text: every term, in any order
           | "phrase" text                full text: the terms consecutively, in order
           | "prefix" string              the value starts with it (case-sensitive)
           | "geo_radius" {"lat", "lon", "meters"}
           | "geo_box" {"top_left": {"lat", "lon"}, "bottom_right": {"lat", "lon"}}
           | "exists" bool                has a value that is not null and not []
           | "is_null" bool               is null
           | "is_empty" bool              is missing, null or []
           | "values_count" {gt|gte|lt|lte: integer}   number of values (a list's length)
scalar    := string | integer | boolean  (a non-integer number means an exact numeric match)
```

All conditions of one object must hold (AND); ``should`` needs at least one of its filters to hold
(OR); ``must_not`` needs none to hold (NOT). FIELD is a property name; dots address nested objects
(``"author.name"``). ``must``, ``should`` and ``must_not`` are reserved words at every level.
``ne`` / ``not_in`` hold for objects that lack the field (add ``"exists": true`` to exclude them).

A collection that declares its fields (``fields`` in its definition) may only filter on declared fields,
with the operators of each type (:data:`gateway.fields.TYPE_OPS`), and values of that type.

A filter nests at most FILTER_MAX_DEPTH (default 32) objects and lists, counting the filter itself:
``{"must": [{"a": 1}]}`` is 3 deep. A deeper one is refused naming the path where it went too deep.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from typing import Any

from gateway.errors import BadRequest
from gateway.fields import COMMON_OPS, RANGE_OPS, FieldType, canonical_datetime, check_geo
from gateway.json_body import TooDeep, check_depth
from gateway.storage.base import (
    Condition,
    FieldAny,
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
)
from services.input_rules import find_invalid_text

BOOLEAN_KEYS = ("must", "should", "must_not")
TEXT_OPS = {"match": "any", "match_all": "all", "phrase": "phrase"}
OPS = ("eq", "ne", "in", "not_in", *RANGE_OPS, *TEXT_OPS, "prefix", "geo_radius", "geo_box", *COMMON_OPS)
MAX_DEPTH = 32  # the default of FILTER_MAX_DEPTH
Fields = Mapping[str, FieldType]


def parse_filter(data: Any, field: str = "filter", fields: Fields | None = None,
                 max_depth: int = MAX_DEPTH) -> Filter | None:
    """Parse a JSON filter (None or {} -> None); BadRequest naming the offending path.

    ``fields``: the collection's declared fields (empty or None: any field, operands of any type).
    ``max_depth``: the deepest nesting of objects and lists (FILTER_MAX_DEPTH).
    """
    if data is None:
        return None
    try:
        check_depth(data, max_depth, field)
    except TooDeep as exc:
        raise BadRequest(exc.path, f"filters nest at most {max_depth} levels deep (FILTER_MAX_DEPTH)") \
            from None
    invalid = find_invalid_text(data, field)  # the text rule both services share: a value or a name
    if invalid is not None:
        raise BadRequest(*invalid)
    flt = _parse_object(data, field, fields or {})
    if not (flt.must or flt.should or flt.must_not):
        return None
    return flt


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse_object(data: Any, path: str, fields: Fields) -> Filter:
    if not isinstance(data, dict):
        raise BadRequest(path, "a filter must be a JSON object")
    must: list[Condition] = []
    should: list[Condition] = []
    must_not: list[Condition] = []
    for key, value in data.items():
        sub = f"{path}.{key}"
        if key in BOOLEAN_KEYS:
            if not isinstance(value, list):
                raise BadRequest(sub, "must be a list of filters")
            target = {"must": must, "should": should, "must_not": must_not}[key]
            for i, item in enumerate(value):
                target.append(_simplify(_parse_object(item, f"{sub}.{i}", fields)))
        else:
            if not isinstance(key, str) or not key:
                raise BadRequest(path, "field names must be non-empty strings")
            ftype = fields.get(key)
            if fields and ftype is None:
                raise BadRequest(sub, f"{key!r} is not a declared field of this collection (declared: "
                                      f"{', '.join(sorted(fields))}); declare it first (PATCH fields)")
            pos, neg = _FieldSpec(key, ftype, sub).parse(value)
            must += pos
            must_not += neg
    return Filter(must=must, should=should, must_not=must_not)


def _simplify(flt: Filter) -> Condition:
    """A filter with exactly one positive condition is that condition."""
    if len(flt.must) == 1 and not flt.should and not flt.must_not:
        return flt.must[0]
    return flt


class _FieldSpec:
    """Parses the spec of one field: its conditions (positive, negative), checked against its type."""

    def __init__(self, key: str, ftype: FieldType | None, path: str) -> None:
        self.key, self.ftype, self.path = key, ftype, path

    def _allowed(self, op: str, path: str) -> None:
        if self.ftype is not None and op not in self.ftype.ops():
            raise BadRequest(path, f"{op!r} does not apply to {self.ftype.name} field {self.key!r}; use one "
                                   f"of {', '.join(self.ftype.ops())}")

    def parse(self, value: Any) -> tuple[list[Condition], list[Condition]]:
        if isinstance(value, list):
            self._allowed("in", self.path)
            return [self._any(value, self.path)], []
        if not isinstance(value, dict):
            self._allowed("eq", self.path)
            return [self._eq(value, self.path)], []
        if not value:
            raise BadRequest(self.path, f"give at least one of {', '.join(self._ops())}")
        pos: list[Condition] = []
        neg: list[Condition] = []
        bounds: dict[str, Any] = {}
        for op, arg in value.items():
            sub = f"{self.path}.{op}"
            if op not in OPS:
                raise BadRequest(sub, f"unknown operator; use one of {', '.join(self._ops())}")
            self._allowed(op, sub)
            if op == "eq":
                pos.append(self._eq(arg, sub))
            elif op == "ne":
                neg.append(self._eq(arg, sub))
            elif op == "in":
                pos.append(self._any(arg, sub))
            elif op == "not_in":
                neg.append(self._any(arg, sub))
            elif op in RANGE_OPS:
                bounds[op] = arg
            elif op in TEXT_OPS:
                pos.append(FieldText(self.key, self._text(arg, sub), TEXT_OPS[op]))  # type: ignore[arg-type]
            elif op == "prefix":
                if not isinstance(arg, str) or not arg:
                    raise BadRequest(sub, "must be a non-empty string")
                pos.append(FieldPrefix(self.key, arg))
            elif op == "geo_radius":
                pos.append(self._geo_radius(arg, sub))
            elif op == "geo_box":
                pos.append(self._geo_box(arg, sub))
            elif op in ("exists", "is_null", "is_empty"):
                if not isinstance(arg, bool):
                    raise BadRequest(sub, "must be true or false")
                cond: Condition = FieldIsNull(self.key) if op == "is_null" else FieldIsEmpty(self.key)
                holds = (not arg) if op == "exists" else arg
                (pos if holds else neg).append(cond)
            else:  # values_count
                pos.append(FieldValuesCount(self.key, **self._counts(arg, sub)))
        if bounds:
            pos.append(self._range(bounds))
        return pos, neg

    def _ops(self) -> tuple[str, ...]:
        return self.ftype.ops() if self.ftype is not None else OPS

    # -- operands -------------------------------------------------------------------------------------------
    def _base(self) -> str | None:
        return None if self.ftype is None else self.ftype.base

    def _eq(self, value: Any, path: str) -> Condition:
        base = self._base()
        if base == "datetime":
            when = self._datetime(value, path)
            return FieldDatetimeRange(self.key, gte=when, lte=when)
        if base == "float":
            if not _is_number(value):
                raise BadRequest(path, f"must be a number ({self.key!r} is a float field)")
            return FieldRange(self.key, gte=float(value), lte=float(value))
        if base is not None:
            self._check_typed(value, base, path)
        if _is_scalar(value):
            return FieldMatch(self.key, value)
        if isinstance(value, float) and math.isfinite(value):
            return FieldRange(self.key, gte=value, lte=value)
        raise BadRequest(path, "must be a string, number or boolean")

    def _check_typed(self, value: Any, base: str, path: str) -> None:
        ok = {
            "keyword": isinstance(value, str),
            "uuid": isinstance(value, str) and _is_uuid(value),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
        }.get(base, True)
        if not ok:
            want = {"keyword": "a string", "uuid": "a UUID string", "integer": "an integer",
                    "bool": "true or false"}[base]
            raise BadRequest(path, f"must be {want} ({self.key!r} is a {base} field)")

    def _any(self, values: Any, path: str) -> FieldAny:
        base = self._base()
        if not isinstance(values, list) or not values:
            raise BadRequest(path, "must be a non-empty list of strings or of integers")
        if base is not None:
            for i, v in enumerate(values):
                self._check_typed(v, base, f"{path}.{i}")
        if all(isinstance(v, str) for v in values) or all(isinstance(v, int) and not isinstance(v, bool)
                                                          for v in values):
            return FieldAny(self.key, list(values))
        raise BadRequest(path, "must be a non-empty list of strings or of integers (not mixed)")

    def _range(self, bounds: dict[str, Any]) -> Condition:
        base = self._base()
        numbers = all(_is_number(v) for v in bounds.values())
        if base is None:
            is_datetime = all(isinstance(v, str) for v in bounds.values())
            if not numbers and not is_datetime:
                op = next(iter(bounds))
                raise BadRequest(f"{self.path}.{op}", "must be a number or an RFC 3339 date-time string (all "
                                                      "bounds of one field the same kind)")
        else:
            is_datetime = base == "datetime"
        if is_datetime:
            return FieldDatetimeRange(self.key, **{op: self._datetime(v, f"{self.path}.{op}")
                                                   for op, v in bounds.items()})
        for op, v in bounds.items():
            if not _is_number(v):
                raise BadRequest(f"{self.path}.{op}", "must be a number")
        return FieldRange(self.key, **{op: float(v) for op, v in bounds.items()})

    def _datetime(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise BadRequest(path, "must be an RFC 3339 date-time string (like 2024-05-01T12:00:00Z)")
        try:
            return canonical_datetime(value)
        except ValueError as exc:
            raise BadRequest(path, str(exc)) from None

    def _text(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise BadRequest(path, "must be a non-empty string")
        return value

    def _point(self, value: Any, path: str) -> GeoPoint:
        problem = check_geo(value)
        if problem:
            raise BadRequest(path, problem.replace(" (geo field)", ""))
        return GeoPoint(float(value["lat"]), float(value["lon"]))

    def _geo_radius(self, value: Any, path: str) -> FieldGeoRadius:
        if not isinstance(value, dict) or set(value) != {"lat", "lon", "meters"}:
            raise BadRequest(path, 'must be {"lat": number, "lon": number, "meters": number}')
        meters = value["meters"]
        if not _is_number(meters) or meters <= 0:
            raise BadRequest(f"{path}.meters", "must be a number > 0")
        center = self._point({"lat": value["lat"], "lon": value["lon"]}, path)
        return FieldGeoRadius(self.key, center, float(meters))

    def _geo_box(self, value: Any, path: str) -> FieldGeoBox:
        if not isinstance(value, dict) or set(value) != {"top_left", "bottom_right"}:
            raise BadRequest(path, 'must be {"top_left": {"lat", "lon"}, "bottom_right": {"lat", "lon"}}')
        top_left = self._point(value["top_left"], f"{path}.top_left")
        bottom_right = self._point(value["bottom_right"], f"{path}.bottom_right")
        if top_left.lat < bottom_right.lat:
            raise BadRequest(f"{path}.top_left.lat", "the top left corner must not be south of the bottom "
                                                     "right one")
        return FieldGeoBox(self.key, top_left, bottom_right)

    def _counts(self, value: Any, path: str) -> dict[str, int]:
        if not isinstance(value, dict) or not value:
            raise BadRequest(path, "must be an object of gt / gte / lt / lte integer bounds")
        out: dict[str, int] = {}
        for op, v in value.items():
            if op not in RANGE_OPS:
                raise BadRequest(f"{path}.{op}", f"unknown bound; use one of {', '.join(RANGE_OPS)}")
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise BadRequest(f"{path}.{op}", "must be an integer >= 0")
            out[op] = v
        return out


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except ValueError:
        return False
