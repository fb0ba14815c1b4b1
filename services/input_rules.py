"""The rules both services apply to what clients send: one base64 decoder and one text rule.

The gateway and the inference service both use this module, so an image or a text that one of them
accepts, the other accepts too. It needs only the standard library (the gateway imports it without
the inference stack).

Base64 (images in JSON)
  * the standard (``+/``) or the URL-safe (``-_``) alphabet, with or without ``=`` padding;
  * white space anywhere is ignored (wrapped lines, MIME's 76-column lines, a trailing newline);
  * an optional ``data:[<type>][;param...];base64,`` prefix, as browsers write it;
  * anything else is refused, saying what is wrong: another character, padding that is not at the
    end, a length no base64 text has (4n+1 characters), a ``data:`` URL that is not base64, nothing
    left to decode.

Texts
  * every text must be valid Unicode: a text to embed, a query, a property (name or value), an
    object id. JSON's ``\\ud800`` escape can carry a lone surrogate (U+D800..U+DFFF), which UTF-8,
    protobuf and the stores cannot: such a text is refused, naming where and the position. It is
    not replaced, so what is stored and embedded is always what was sent.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

__all__ = ["InputError", "check_text", "decode_base64", "find_invalid_text"]


class InputError(ValueError):
    """A value breaks an input rule; the message says how (the caller names the field)."""


_DATA_URL = re.compile(r"data:(?:[\w.+-]+/[\w.+-]+)?(?:;[^;,]*)*?;base64,", re.IGNORECASE)
_SPACE = re.compile(r"\s")
_SPACES = re.compile(r"\s+")
_OUTSIDE_ALPHABET = re.compile(r"[^A-Za-z0-9+/]")
_URL_SAFE = str.maketrans("-_", "+/")
_SURROGATE = re.compile("[\ud800-\udfff]")


def decode_base64(value: str) -> bytes:
    """The bytes of a base64 string (see the module's rules); :class:`InputError` when it breaks them."""
    if not isinstance(value, str):
        raise InputError(f"must be a base64 string, not {type(value).__name__}")
    text = value.strip()
    if text[:5].lower() == "data:":
        match = _DATA_URL.match(text)
        if match is None:
            raise InputError("a data: URL must be base64, like data:image/png;base64,<data>")
        text = text[match.end():]
    if _SPACE.search(text):
        text = _SPACES.sub("", text)
    if not text:
        raise InputError("is empty: no base64 data")
    text = text.translate(_URL_SAFE)
    data = text.rstrip("=")
    padding = len(text) - len(data)
    bad = _OUTSIDE_ALPHABET.search(data)
    if bad is not None:
        what = "'=' padding before the end" if bad.group() == "=" else f"the character {bad.group()!r}"
        raise InputError(f"invalid base64: {what} at data position {bad.start()}")
    if len(data) % 4 == 1:
        raise InputError(f"invalid base64: {len(data)} data characters is no base64 length (4n+1)")
    if padding and (padding > 2 or (len(data) + padding) % 4):
        raise InputError(f"invalid base64: wrong '=' padding ({padding} after {len(data)} data characters)")
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - the checks above leave nothing for it
        raise InputError(f"invalid base64: {exc}") from None


def check_text(text: str) -> None:
    """:class:`InputError` when ``text`` holds a lone surrogate (it is not valid Unicode)."""
    match = _SURROGATE.search(text)
    if match is not None:
        raise InputError(_surrogate_message(match))


def find_invalid_text(value: Any, path: str = "") -> tuple[str, str] | None:
    """The first string or mapping key inside a JSON-like ``value`` that breaks the text rule, as
    ``(dotted path, message)`` (``path`` prefixes it); None when every text is valid."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            match = _SURROGATE.search(item)
            if match is not None:
                return where, _surrogate_message(match)
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                inner = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and (match := _SURROGATE.search(key)) is not None:
                    # the path names the key with the surrogate escaped: an error text must itself be valid
                    shown = key.encode("utf-8", "backslashreplace").decode("utf-8")
                    return (f"{where}.{shown}" if where else shown), "the name " + _surrogate_message(match)
                children.append((inner, child))
            stack.extend(reversed(children))
        elif isinstance(item, list | tuple):
            stack.extend(reversed([(f"{where}.{i}" if where else str(i), child)
                                   for i, child in enumerate(item)]))
    return None


def _surrogate_message(match: re.Match[str]) -> str:
    return (f"holds a lone surrogate (U+{ord(match.group()):04X}) at character {match.start()}: "
            "a text must be valid Unicode")
