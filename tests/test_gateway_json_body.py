"""gateway.json_body: JSON parsed under a nesting limit, naming the path where a body nests too deeply."""

from __future__ import annotations

import json

import pytest

from gateway.json_body import TooDeep, check_depth, loads, max_depth


def nest(depth: int, inner: str = "0", key: str = "must") -> str:
    """A filter-like value ``depth`` containers deep: {"must": [{"must": [... inner ...]}]}."""
    opens = [f'{{"{key}": ' if level % 2 else "[" for level in range(depth)]
    closes = ["}" if level % 2 else "]" for level in range(depth)]
    return "".join(reversed(opens)) + inner + "".join(closes)


@pytest.mark.parametrize("text,depth", [
    ("0", 0), ('"[[{{"', 0), ("[]", 1), ("{}", 1), ('{"a": [1, {"b": []}]}', 4),
    ('["\\"[[[", "\\\\", "]]"]', 1),  # brackets inside strings, escaped quotes and backslashes
    ('{"a": "x\\\\"}', 1), ('[[["\\u005b"]]]', 3),
])
def test_max_depth_counts_containers_outside_strings(text, depth):
    assert max_depth(text.encode()) == depth
    assert loads(text, depth) == json.loads(text)


def test_a_body_one_level_too_deep_names_the_place():
    body = '{"bm25": {"query": "x"}, "filter": {"must": [{"must": [{"a": 1}]}]}}'
    assert loads(body, 6)["filter"]["must"][0]["must"][0] == {"a": 1}
    with pytest.raises(TooDeep) as info:
        loads(body, 5)
    assert info.value.path == "filter.must.0.must.0" and info.value.limit == 5
    assert str(info.value) == "nested more than 5 levels deep at filter.must.0.must.0"


@pytest.mark.parametrize("depth", [65, 1_000, 100_000])
def test_very_deep_bodies_fail_cleanly(depth):
    body = '{"bm25": {"query": "x"}, "filter": ' + nest(depth) + "}"
    with pytest.raises(TooDeep) as info:
        loads(body, 64)
    parts = info.value.path.split(".")
    assert parts[0] == "filter" and set(parts[1:]) == {"must", "0"}
    assert len(parts) == 64  # the body is container 1, "filter" names container 2: this is the 65th
    with pytest.raises(TooDeep) as info:
        loads("[" * depth, 64)  # not even JSON: still a clean answer
    assert info.value.path in ("", "0" + ".0" * 63)


def test_the_first_place_in_document_order_is_named_and_siblings_count():
    body = '{"a": [1, 2, [[5]]], "b": {"c": [[["deep"]]]}}'
    with pytest.raises(TooDeep) as info:
        loads(body, 3)
    assert info.value.path == "a.2.0"
    with pytest.raises(TooDeep) as info:
        loads(body, 4)
    assert info.value.path == "b.c.0.0"


def test_a_key_given_twice_is_followed_to_the_deep_value():
    # json keeps a repeated key at its first position: the walk must still find the deep one
    with pytest.raises(TooDeep) as info:
        loads('{"b": 1, "a": 2, "b": [[[1]]]}', 3)
    assert info.value.path == "b.0.0"


def test_strings_with_brackets_do_not_count_and_invalid_json_is_a_value_error():
    assert loads('{"q": "' + "[" * 5000 + '"}', 2) == {"q": "[" * 5000}
    for bad in (b"{nope", b"", b'{"a": 1', b"\xff\xfe\x00"):
        with pytest.raises(ValueError) as info:
            loads(bad, 10)
        assert not isinstance(info.value, TooDeep)


def test_check_depth_on_parsed_values():
    value = {"a": [1, {"b": [{"c": 1}]}], "d": 2}
    check_depth(value, 5)
    with pytest.raises(TooDeep) as info:
        check_depth(value, 4, "filter")
    assert info.value.path == "filter.a.1.b.0"
    with pytest.raises(TooDeep) as info:
        check_depth([[1], [[2]]], 2)
    assert info.value.path == "1.0"
    check_depth("scalar", 0)


@pytest.mark.parametrize("text", [
    b'{"n": 123456789012345678901234567890}',  # beyond 64 bits: orjson would read a float
    b"[-9223372036854775809, 18446744073709551616, 9223372036854775807]",
    b'{"v": [0.1, NaN, Infinity, -Infinity]}',  # json's extensions, refused by orjson
    b'{"v": [1e400, -1e400]}',  # infinities
    b'["\\ud800 lone surrogate"]',
    b'{"a": 1, "a": [2]}',
    '{"text": "h\u00e9llo \u2603"}'.encode("utf-16"),
    b'{"x": 0.30000000000000004, "y": -0.0, "z": 1E5, "s": "\\u00e9\\n"}',
])
def test_loads_answers_what_json_loads_answers(text):
    """The fast parser is only used where it gives the same value as json (types included)."""
    assert repr(loads(text, 10)) == repr(json.loads(text))


def test_only_long_integers_keep_a_body_from_the_fast_parser():
    from gateway.json_body import _may_hold_a_long_integer

    floats = json.dumps({"v": [-0.0012345678901234567, 1.2345678901234567e-300, 0.1 + 0.2]}).encode()
    assert not _may_hold_a_long_integer(floats)  # long fractions and exponents are floats to both
    assert not _may_hold_a_long_integer(b"[123456789012345678, -123456789012345678]")  # 18 digits
    for text in (b"[1234567890123456789]", b'{"n": -12345678901234567890}', b"99999999999999999999"):
        assert _may_hold_a_long_integer(text)
