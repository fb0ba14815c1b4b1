"""Declared field types: the payload index each gets, the per-object value check, and the filters it takes.

A collection may declare ``"fields": {"price": "float", "tags": "keyword[]", "title": {"type": "text",
"language": "english"}, ...}``. Types: keyword, integer, float, bool, datetime (RFC 3339 strings), uuid,
text (full-text search; ``language`` adds its stopwords and Snowball stemmer), geo (``{"lat", "lon"}``);
``T[]`` is a list of T. A declared field may be missing or null in an object; any other value must have
the declared type.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from gateway.storage.base import FACET_KINDS, ORDER_KINDS, PayloadIndex

BASE_TYPES = ("keyword", "integer", "float", "bool", "datetime", "uuid", "text", "geo")
TYPE_NAMES = tuple(t + suffix for t in BASE_TYPES for suffix in ("", "[]"))
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Filter operators each base type takes (besides exists / is_null / is_empty / values_count, which all do).
COMMON_OPS = ("exists", "is_null", "is_empty", "values_count")
RANGE_OPS = ("gt", "gte", "lt", "lte")
TYPE_OPS: dict[str, tuple[str, ...]] = {
    "keyword": ("eq", "ne", "in", "not_in", "prefix"),
    "uuid": ("eq", "ne", "in", "not_in"),
    "integer": ("eq", "ne", "in", "not_in", *RANGE_OPS),
    "float": ("eq", "ne", *RANGE_OPS),
    "bool": ("eq", "ne"),
    "datetime": ("eq", "ne", *RANGE_OPS),
    "text": ("match", "match_all", "phrase", "prefix"),
    "geo": ("geo_radius", "geo_box"),
}

# RFC 3339 date-time (seconds required; "T", "t" or a space between date and time; zone optional = UTC)
# or a full date: what Qdrant's datetime index and filters parse.
_DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):?(\d{2}))?)?$"
)


def unknown_type(name: str) -> str:
    """The refusal of a field type name that is not one of TYPE_NAMES."""
    return f"unknown type {name!r}; one of {', '.join(TYPE_NAMES)}"


@dataclass(frozen=True)
class FieldType:
    """A declared field type: ``base`` (one of BASE_TYPES), ``array`` for ``T[]``, ``language`` for text."""

    base: str
    array: bool = False
    language: str | None = None

    @classmethod
    def parse(cls, name: str, language: str | None = None) -> FieldType:
        if name not in TYPE_NAMES:
            raise ValueError(unknown_type(name))
        base = name.removesuffix("[]")
        if language is not None and base != "text":
            raise ValueError("only text fields take a language")
        return cls(base, name.endswith("[]"), language)

    @property
    def name(self) -> str:
        return self.base + ("[]" if self.array else "")

    def index(self) -> PayloadIndex:
        return PayloadIndex(self.base, self.language)

    @property
    def facetable(self) -> bool:
        return self.base in FACET_KINDS

    @property
    def orderable(self) -> bool:
        return self.base in ORDER_KINDS and not self.array

    def ops(self) -> tuple[str, ...]:
        return (*TYPE_OPS[self.base], *COMMON_OPS)

    def check(self, value: Any) -> tuple[str, str] | None:
        """None when ``value`` fits (None always does); else (sub-path, problem), sub-path "" or ".3"."""
        if value is None:
            return None
        if self.array:
            if not isinstance(value, list):
                return "", f"must be a list of {self.base} values (declared {self.name})"
            for i, item in enumerate(value):
                problem = check_scalar(self.base, item)
                if problem:
                    return f".{i}", problem
            return None
        if isinstance(value, list):
            return "", f"must be one {self.base} value, not a list (declare {self.base}[] for lists)"
        problem = check_scalar(self.base, value)
        return None if problem is None else ("", problem)


def check_scalar(base: str, value: Any) -> str | None:
    """None when ``value`` is a valid ``base`` value, else what is wrong (declared type named)."""
    if value is None:
        return f"must be a {base} value, not null"
    if base in ("keyword", "text"):
        return None if isinstance(value, str) else f"must be a string ({base} field), got {_kind(value)}"
    if base == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return None if INT64_MIN <= value <= INT64_MAX else "is outside the 64-bit integer range"
        return f"must be an integer (integer field), got {_kind(value)}"
    if base == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return None if math.isfinite(value) else "must be a finite number"
        return f"must be a number (float field), got {_kind(value)}"
    if base == "bool":
        return None if isinstance(value, bool) else f"must be true or false (bool field), got {_kind(value)}"
    if base == "datetime":
        if not isinstance(value, str):
            return f"must be an RFC 3339 date-time string (datetime field), got {_kind(value)}"
        try:
            parse_datetime(value)
        except ValueError as exc:
            return str(exc)
        return None
    if base == "uuid":
        if isinstance(value, str):
            try:
                uuid.UUID(value)
                return None
            except ValueError:
                pass
        return f"must be a UUID string (uuid field), got {_kind(value)}"
    if base == "geo":
        return check_geo(value)
    raise ValueError(f"unknown base type {base!r}")


def check_geo(value: Any) -> str | None:
    if not isinstance(value, dict) or set(value) != {"lat", "lon"}:
        return 'must be a geo point {"lat": number, "lon": number} (geo field)'
    lat, lon = value["lat"], value["lon"]
    for name, v, bound in (("lat", lat, 90), ("lon", lon, 180)):
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
            return f"{name} must be a number"
        if not -bound <= v <= bound:
            return f"{name} must be in [-{bound}, {bound}], got {v}"
    return None


def parse_datetime(text: str) -> datetime:
    """An RFC 3339 date-time (or a date) as an aware datetime; a missing zone means UTC."""
    m = _DATETIME_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not an RFC 3339 date-time (like 2024-05-01T12:00:00Z) or a date "
                         "(2024-05-01)")
    year, month, day, hour, minute, second, frac, zulu, sign, tz_h, tz_m = m.groups()
    tz = UTC
    if sign:
        offset = timedelta(hours=int(tz_h), minutes=int(tz_m))
        if offset >= timedelta(hours=24):
            raise ValueError(f"{text!r} has an invalid time zone offset")
        tz = timezone(offset if sign == "+" else -offset)
    micro = int((frac or "0").ljust(6, "0")[:6])
    try:
        return datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                        micro, tzinfo=tz)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date-time: {exc}") from None


def canonical_datetime(text: str) -> str:
    """The same instant as ``text``, written ``YYYY-MM-DDTHH:MM:SS[.ffffff]+HH:MM`` (what both Qdrant
    adapters parse alike)."""
    return parse_datetime(text).isoformat()


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
