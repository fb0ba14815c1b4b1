"""API keys, shared by the HTTP and gRPC fronts: ``x-api-key: KEY`` or ``authorization: Bearer KEY``."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

from gateway.errors import Unauthorized


def check_api_key(headers: Mapping[str, str], keys: Sequence[str], how: str) -> None:
    """Raise Unauthorized unless ``headers`` (lower-case names) carry one of ``keys``; no keys: open.

    ``how`` tells the caller how to send a key on this front. Keys are compared in constant time.
    """
    if not keys:
        return
    presented = headers.get("x-api-key")
    auth = headers.get("authorization", "")
    if presented is None and isinstance(auth, str) and auth.lower().startswith("bearer "):
        presented = auth[7:].strip()
    if not presented or not any(hmac.compare_digest(str(presented).encode(), k.encode()) for k in keys):
        raise Unauthorized(f"missing or invalid API key ({how})")
