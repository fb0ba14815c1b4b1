"""Credentials for fetching model artifacts (``MODEL_AUTH``), Marqo ``modelAuth`` shape.

``{"s3": {"aws_access_key_id", "aws_secret_access_key", "aws_session_token", "endpoint_url", "region"},
"hf": {"token"}}``. Credentials are used only for a spec with ``authRequired``; they never appear
in a repr, a log line or an error message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from .model_spec import ModelSpecError, blank, decode_json, refuse_unknown

_WHERE = "MODEL_AUTH"
_SECRET_FIELDS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token", "hf_token")
_S3_KEYS: tuple[str, ...] = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token",
                             "endpoint_url", "region")
_HF_KEYS: tuple[str, ...] = ("token",)


class ModelAuthError(ModelSpecError):
    """``MODEL_AUTH`` is invalid; the message names the key, never a secret value."""


@dataclass(frozen=True)
class ModelAuth:
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)
    s3_endpoint_url: str | None = None
    region: str | None = None
    hf_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            parts.append(f"{f.name}={'***' if f.name in _SECRET_FIELDS else repr(value)}")
        return f"ModelAuth({', '.join(parts)})"

    __str__ = __repr__

    @property
    def has_s3_keys(self) -> bool:
        return bool(self.aws_access_key_id and self.aws_secret_access_key)


def parse_model_auth(raw: str | bytes | Mapping[str, Any] | None) -> ModelAuth | None:
    """Parse ``MODEL_AUTH`` (JSON text or a dict); ``None`` or empty gives ``None``."""
    if raw is None or blank(raw):
        return None
    raw = decode_json(raw, _WHERE, ModelAuthError)
    if not isinstance(raw, Mapping):
        raise ModelAuthError(f"{_WHERE} must be a JSON object with s3 and/or hf")
    refuse_unknown(raw, ("s3", "hf"), _WHERE, ModelAuthError, show_key=False)

    values: dict[str, str | None] = {}
    if raw.get("s3") is not None:
        s3 = _section(raw["s3"], "s3")
        refuse_unknown(s3, _S3_KEYS, f"{_WHERE}.s3", ModelAuthError, show_key=False)
        for key in _S3_KEYS:
            values["s3_endpoint_url" if key == "endpoint_url" else key] = _opt_str(s3, key, f"{_WHERE}.s3")
        key_id, secret = values.get("aws_access_key_id"), values.get("aws_secret_access_key")
        if bool(key_id) != bool(secret):
            missing = "aws_secret_access_key" if key_id else "aws_access_key_id"
            raise ModelAuthError(f"{_WHERE}.s3.{missing} is required when the other key is given")
        if values.get("aws_session_token") and not key_id:
            raise ModelAuthError(f"{_WHERE}.s3.aws_session_token needs aws_access_key_id and "
                                 "aws_secret_access_key")
        endpoint = values.get("s3_endpoint_url")
        if endpoint and not endpoint.lower().startswith(("http://", "https://")):
            raise ModelAuthError(f"{_WHERE}.s3.endpoint_url must start with http:// or https://")
    if raw.get("hf") is not None:
        hf = _section(raw["hf"], "hf")
        refuse_unknown(hf, _HF_KEYS, f"{_WHERE}.hf", ModelAuthError, show_key=False)
        values["hf_token"] = _opt_str(hf, "token", f"{_WHERE}.hf")
    return ModelAuth(**values)


def _section(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ModelAuthError(f"{_WHERE}.{name} must be an object")
    return value


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ModelAuthError(f"{where}.{key} must be a string")  # no value: it may be a secret
    return value.strip() or None


_NOT_SECRET = ("region",)


def secret_values(raw: str | bytes | Mapping[str, Any] | None) -> list[str]:
    """What in ``MODEL_AUTH`` must never be logged: every string value but ``region`` and
    ``endpoint_url`` (only its user and password), and every key that is not a known one (a secret
    pasted as a key). Text that is not JSON is taken whole, and word by word."""
    if raw is None or blank(raw):
        return []
    try:
        data = decode_json(raw, _WHERE, ModelAuthError)
    except (ModelAuthError, UnicodeDecodeError):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
        return [text, *re.findall(r"[^\s\"'{}:,\[\]]{8,}", text)]
    known = {"s3", "hf", *_S3_KEYS, *_HF_KEYS}
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if isinstance(key, str) and key not in known:
                    found.append(key)
                if key == "endpoint_url" and isinstance(item, str):
                    parts = urlsplit(item.strip())
                    found.extend(v for v in (parts.username, parts.password) if v)
                elif key not in _NOT_SECRET:
                    walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            found.append(value)

    walk(data)
    return found
