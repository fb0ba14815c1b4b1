"""The JSON filter syntax of searches, turned into storage filters.

```
filter    := { FIELD: spec, ..., "must": [filter, ...], "should": [filter, ...], "must_not": [filter, ...] }
spec      := scalar                      equality                 {"color": "red"}
           | [scalar, ...]               any of                   {"color": ["red", "blue"]}
           | {op: value, ...}            every op must hold       {"price": {"gte": 10, "lt": 20}}
op        := "eq" scalar | "ne" scalar | "in" [scalar] | "not_in" [scalar]
           | "gt" | "gte" | "lt" | "lte" number
scalar    := string | integer | boolean  (a non-integer number means an exact numeric match)
```

All conditions of one object must hold (AND); ``should`` needs at least one of its filters to hold
(OR); ``must_not`` needs none to hold (NOT). FIELD is a property name; dots address nested objects
(``"author.name"``). ``must``, ``should`` and ``must_not`` are reserved words at every level.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import BadRequest
from gateway.storage.base import Condition, FieldAny, FieldMatch, FieldRange, Filter

BOOLEAN_KEYS = ("must", "should", "must_not")
RANGE_OPS = ("gt", "gte", "lt", "lte")
OPS = ("eq", "ne", "in", "not_in", *RANGE_OPS)
MAX_DEPTH = 8


def parse_filter(data: Any, field: str = "filter") -> Filter | None:
    """Parse a JSON filter (None or {} -> None); BadRequest naming the offending path."""
    if data is None:
        return None
    flt = _parse_object(data, field, 0)
    if not (flt.must or flt.should or flt.must_not):
        return None
    return flt


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_object(data: Any, path: str, depth: int) -> Filter:
    if depth > MAX_DEPTH:
        raise BadRequest(path, f"filters nest at most {MAX_DEPTH} levels deep")
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
                target.append(_simplify(_parse_object(item, f"{sub}.{i}", depth + 1)))
        else:
            if not isinstance(key, str) or not key:
                raise BadRequest(path, "field names must be non-empty strings")
            pos, neg = _parse_spec(key, value, sub)
            must += pos
            must_not += neg
    return Filter(must=must, should=should, must_not=must_not)


def _simplify(flt: Filter) -> Condition:
    """A filter with exactly one positive condition is that condition."""
    if len(flt.must) == 1 and not flt.should and not flt.must_not:
        return flt.must[0]
    return flt


def _any(key: str, values: Any, path: str) -> FieldAny:
    if not isinstance(values, list) or not values:
        raise BadRequest(path, "must be a non-empty list of strings or of integers")
    if all(isinstance(v, str) for v in values) or all(isinstance(v, int) and not isinstance(v, bool)
                                                      for v in values):
        return FieldAny(key, list(values))
    raise BadRequest(path, "must be a non-empty list of strings or of integers (not mixed)")


def _eq(key: str, value: Any, path: str) -> Condition:
    if _is_scalar(value):
        return FieldMatch(key, value)
    if isinstance(value, float):
        return FieldRange(key, gte=value, lte=value)
    raise BadRequest(path, "must be a string, number or boolean")


def _parse_spec(key: str, value: Any, path: str) -> tuple[list[Condition], list[Condition]]:
    if isinstance(value, list):
        return [_any(key, value, path)], []
    if not isinstance(value, dict):
        return [_eq(key, value, path)], []
    if not value:
        raise BadRequest(path, f"give at least one of {', '.join(OPS)}")
    pos: list[Condition] = []
    neg: list[Condition] = []
    bounds: dict[str, float] = {}
    for op, arg in value.items():
        sub = f"{path}.{op}"
        if op == "eq":
            pos.append(_eq(key, arg, sub))
        elif op == "ne":
            neg.append(_eq(key, arg, sub))
        elif op == "in":
            pos.append(_any(key, arg, sub))
        elif op == "not_in":
            neg.append(_any(key, arg, sub))
        elif op in RANGE_OPS:
            if not _is_number(arg):
                raise BadRequest(sub, "must be a number")
            bounds[op] = float(arg)
        else:
            raise BadRequest(sub, f"unknown operator; use one of {', '.join(OPS)}")
    if bounds:
        pos.append(FieldRange(key, **bounds))
    return pos, neg
