"""JSON in and out of the client: orjson when it is installed (the ``fast`` extra; the polyvec server
distribution has it), the standard library otherwise, with the same results either way.

orjson parses and writes several times faster, which is most of what a large ``polyvec export`` or
``iterate`` costs on the client's side. It reads an integer beyond 64 bits as a float and refuses a few
things ``json`` takes; such text and values go through ``json``.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - the fallback is exercised by forcing ``orjson = None``
    orjson = None  # type: ignore[assignment]

# Digits -> "1"; "." "e" "E" -> "."; anything else -> "0". An integer of 19 digits or more (one orjson
# might read as a float) is then "0" + 19 x "1": digits not after a "." or an exponent's "e".
_NUMBER_MAP = bytes(ord("1") if 48 <= c <= 57 else ord(".") if c in b".eE" else ord("0") for c in range(256))
_LONG_INTEGER = b"0" + b"1" * 19


def _may_hold_a_long_integer(data: bytes) -> bool:
    """True when ``data`` may hold an integer of 19+ digits (also for a few harmless look-alikes: such
    digits in a string, a signed exponent); False for floats with long fractions, however many."""
    return _LONG_INTEGER in b"0" + data.translate(_NUMBER_MAP)


def loads(data: bytes) -> Any:
    """Parse a JSON document (bytes)."""
    if orjson is not None and not _may_hold_a_long_integer(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # json decides (and words the error)
    return json.loads(data)


def _line_std(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def dumps_line(value: Any) -> bytes:
    """``value`` as one compact UTF-8 JSON line (non-ASCII kept as is), newline included."""
    if orjson is not None:
        try:
            return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:  # e.g. an int beyond 64 bits
            pass
    return _line_std(value)
