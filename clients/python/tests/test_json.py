"""polyvec_client._json: orjson when installed, json otherwise, and the same bytes and values either way."""

from __future__ import annotations

import json

import pytest
from polyvec_client import _json

VALUES = [
    {"id": "é1", "properties": {"title": "h\u00e9llo \u2603 \U0001f600", "n": 3, "price": 0.1 + 0.2,
                                "flag": True, "none": None, "nested": {"k": [1, "v", -0.0]}}},
    {"id": "big", "properties": {"n": 123456789012345678901234567890}},  # beyond 64 bits
    {"id": "v", "properties": {}, "vectors": {"main": [0.1, -2.5e-8, 3.4028234663852886e38]}},
]


@pytest.fixture(params=["orjson", "json"])
def codec(request, monkeypatch):
    if request.param == "json":
        monkeypatch.setattr(_json, "orjson", None)
    elif _json.orjson is None:
        pytest.skip("orjson is not installed")
    return request.param


@pytest.mark.parametrize("value", VALUES)
def test_lines_read_back_as_the_same_value(codec, value):
    line = _json.dumps_line(value)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert b"\\u" not in line  # UTF-8 as is, like json.dumps(ensure_ascii=False)
    assert repr(json.loads(line)) == repr(value)


@pytest.mark.parametrize("text", [
    b'{"n": 123456789012345678901234567890, "m": -9223372036854775809}',
    b'{"s": "\\u00e9", "f": [0.30000000000000004, 1e-300], "d": {"a": null}}',
    '{"t": "\u2603"}'.encode("utf-16"),
])
def test_loads_answers_what_json_answers(codec, text):
    assert repr(_json.loads(text)) == repr(json.loads(text))


def test_bad_json_is_a_value_error(codec):
    with pytest.raises(ValueError):
        _json.loads(b'{"a": ')


def test_floats_with_long_fractions_take_the_fast_path():
    floats = json.dumps([-0.0012345678901234567, 1.2345678901234567e-300]).encode()
    assert not _json._may_hold_a_long_integer(floats)
    assert _json._may_hold_a_long_integer(b'{"n": 1234567890123456789}')
