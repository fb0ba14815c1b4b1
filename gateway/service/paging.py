"""Opaque scroll cursors: the point id the next page starts from, so pages are id ranges, not offsets."""

from __future__ import annotations

import base64
import binascii
import uuid

from gateway.errors import BadRequest

_VERSION = b"\x01"


def encode_cursor(point_id: str | None) -> str | None:
    """The cursor of the page starting at ``point_id`` (None: there is no next page)."""
    if point_id is None:
        return None
    raw = _VERSION + uuid.UUID(point_id).bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, field: str = "cursor") -> str | None:
    """The point id a cursor from :func:`encode_cursor` holds; BadRequest naming ``field`` otherwise."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 17 or raw[:1] != _VERSION:
        raise BadRequest(field, "is not a cursor this API returned (pass next_cursor back unchanged)")
    return str(uuid.UUID(bytes=raw[1:]))
