"""JSON request bodies under a nesting limit, with the path where a body nests too deeply.

``json.loads`` recurses once per nesting level and fails with ``RecursionError`` near 1,000 levels;
other code that walks a parsed value (validation, storage, the answer's encoder) may recurse too.
:func:`loads` therefore measures the nesting before parsing, at C speed (:func:`max_depth`), and
refuses a body deeper than the limit with :class:`TooDeep`, which names the dotted path of the first
container that is one level too deep (``filter.must.0.must.0``): the field a caller has to fix.
:func:`check_depth` does the same for a value that is already parsed (the gRPC front's Structs).

Depth counts containers: ``{}`` and ``[]`` are depth 1, ``{"a": [1]}`` is depth 2.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import orjson

_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # a backslash escape inside a string (2 bytes)
_STRING = re.compile(rb'"[^"]*"')  # a string, once its escapes are neutralised
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}')
_STRUCTURE = np.zeros(256, dtype=bool)
_STRUCTURE[list(b'"[]{}')] = True
_PAIR = re.compile(rb"\[\]|\{\}")
_CLOSER = {ord("["): b"]", ord("{"): b"}"}
_MARK = "\u0000polyvec: too deep here"
_PLACEHOLDER = json.dumps(_MARK).encode()
_CHUNK = 1 << 22  # bytes per step of the positional scan (bounds its memory)
# Digits -> "1"; "." "e" "E" -> "."; anything else -> "0". An integer of 19 digits or more (one orjson
# might read as a float) is then "0" + 19 x "1": digits not after a "." or an exponent's "e".
_NUMBER_MAP = bytes(ord("1") if 48 <= c <= 57 else ord(".") if c in b".eE" else ord("0") for c in range(256))
_LONG_INTEGER = b"0" + b"1" * 19


def _may_hold_a_long_integer(data: bytes) -> bool:
    """True when ``data`` may hold an integer of 19+ digits (also for a few harmless look-alikes: such
    digits in a string, a signed exponent); False for floats with long fractions, however many."""
    return _LONG_INTEGER in b"0" + data.translate(_NUMBER_MAP)


class TooDeep(ValueError):
    """A value nests more than ``limit`` containers; ``path`` is the dotted path of the first one too deep
    ("" when the top level itself is, or when the place cannot be told)."""

    def __init__(self, path: str, limit: int) -> None:
        self.path = path
        self.limit = limit
        super().__init__(f"nested more than {limit} levels deep" + (f" at {path}" if path else ""))


class _Pairs(list):
    """An object's (key, value) pairs in order (json's object_pairs_hook), told apart from arrays."""


def _neutral(raw: bytes) -> bytes:
    """``raw`` with every backslash escape replaced by two inert bytes (same length, same offsets)."""
    return _ESCAPE.sub(b"__", raw) if b"\\" in raw else raw


def max_depth(raw: bytes) -> int:
    """The deepest container nesting of the JSON text ``raw`` (exact for valid JSON)."""
    structure = _neutral(raw).translate(None, _NOT_STRUCTURE)  # quotes and brackets only: small
    brackets = _STRING.sub(b"", structure).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1).astype(np.int32)
    return int(np.cumsum(steps).max())


def _first_too_deep(neutral: bytes, limit: int) -> int | None:
    """Offset of the first bracket outside strings that opens level ``limit + 1``, or None."""
    depth = 0
    in_string = False
    for start in range(0, len(neutral), _CHUNK):
        codes = np.frombuffer(neutral, dtype=np.uint8, count=min(_CHUNK, len(neutral) - start), offset=start)
        where = np.flatnonzero(_STRUCTURE[codes])  # offsets of quotes and brackets in this chunk
        if not where.size:
            continue
        marks = codes[where]
        quotes = marks == ord('"')
        # inside a string: an odd number of quotes so far (a quote itself counts as inside)
        parity = (np.cumsum(quotes, dtype=np.int64) + in_string) & 1
        outside = (parity == 0) & ~quotes
        opens = outside & ((marks == ord("[")) | (marks == ord("{")))
        closes = outside & ((marks == ord("]")) | (marks == ord("}")))
        levels = np.cumsum(opens.astype(np.int64) - closes, dtype=np.int64) + depth
        over = np.flatnonzero(opens & (levels > limit))
        if over.size:
            return start + int(where[over[0]])
        depth = int(levels[-1])
        in_string = bool(parity[-1])
    return None


def _path_to(raw: bytes, neutral: bytes, offset: int) -> str:
    """Dotted path of the value that starts at ``offset``: the prefix before it is closed after a
    placeholder and parsed; the placeholder is the last member of every container on the way."""
    structure = neutral[:offset].translate(None, _NOT_STRUCTURE)
    opened = _STRING.sub(b"", structure).translate(None, _NOT_BRACKETS)
    while True:
        shorter = _PAIR.sub(b"", opened)
        if shorter == opened:
            break
        opened = shorter
    if any(c in b"]}" for c in opened):
        return ""  # not a JSON prefix
    closers = b"".join(_CLOSER[c] for c in reversed(opened))
    text = raw[:offset] + _PLACEHOLDER + closers
    # Plain dicts first (C speed): the place is the last member at every level. A key given twice keeps
    # its first position in a dict, so when the walk misses the placeholder, parse again keeping pairs.
    for hook in (None, _Pairs):
        try:
            node: Any = json.loads(text, object_pairs_hook=hook)
        except (ValueError, RecursionError):
            return ""
        parts: list[str] = []
        while isinstance(node, dict | list) and node:
            if isinstance(node, dict):
                key = next(reversed(node))
                parts.append(str(key))
                node = node[key]
            elif isinstance(node, _Pairs):
                key, node = node[-1]
                parts.append(str(key))
            else:
                parts.append(str(len(node) - 1))
                node = node[-1]
        if node == _MARK:
            return ".".join(parts)
    return ""


def loads(raw: bytes | str, limit: int) -> Any:
    """Parse JSON text nested at most ``limit`` containers deep.

    Raises :class:`TooDeep` (naming where) past the limit, ``ValueError`` (``json.JSONDecodeError``, or
    ``UnicodeDecodeError`` for bytes that are not UTF-8/16/32) when it is not JSON.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if max_depth(data) > limit:
        neutral = _neutral(data)
        offset = _first_too_deep(neutral, limit)
        raise TooDeep(_path_to(data, neutral, offset) if offset is not None else "", limit)
    # orjson parses ~10x faster (a batch of 32 near_vector searches: 2.5 ms against 24 ms) but reads an
    # integer beyond 64 bits as a float and refuses what json accepts (NaN, lone surrogates, UTF-16):
    # such text goes to json, so the answer is the same either way
    if not _may_hold_a_long_integer(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(data)
    except RecursionError:  # only for text the scan misjudged (it is not JSON then)
        raise TooDeep("", limit) from None


def check_depth(value: Any, limit: int, path: str = "") -> None:
    """Raise :class:`TooDeep` when the parsed ``value`` nests more than ``limit`` dicts/lists."""
    stack: list[tuple[Any, str, int]] = [(value, path, 1)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, dict):
            items: Any = ((str(k), v) for k, v in node.items())
        elif isinstance(node, list | tuple):
            items = ((str(i), v) for i, v in enumerate(node))
        else:
            continue
        if depth > limit:
            raise TooDeep(where, limit)
        children = [(child, f"{where}.{key}" if where else key, depth + 1) for key, child in items
                    if isinstance(child, dict | list | tuple)]
        stack += reversed(children)  # visited in document order, so the first place too deep is named
