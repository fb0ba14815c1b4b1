"""Typed errors: every error the gateway answers becomes one of these, carrying its status and field."""

from __future__ import annotations

from typing import Any


class PolyvecError(Exception):
    """Base of every polyvec-client error.

    ``status``: the HTTP status (None when no answer came); ``field``: the dotted path of the offending
    field when the gateway named one (``"searches.3.hybrid.alpha"``); ``service``: the dependency that
    did not answer (503); ``message``: the gateway's text.
    """

    def __init__(self, message: str, *, status: int | None = None, field: str | None = None,
                 service: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field
        self.service = service
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.message!r}, status={self.status!r}, field={self.field!r})")


class BadRequestError(PolyvecError):
    """400 / 422: the request is malformed; ``field`` names what."""


class AuthenticationError(PolyvecError):
    """401: no valid API key."""


class NotFoundError(PolyvecError):
    """404: unknown collection or object."""


class ConflictError(PolyvecError):
    """409: the collection already exists."""


class PayloadTooLargeError(PolyvecError):
    """413: the request body is over the gateway's MAX_REQUEST_BYTES."""


class RateLimitedError(PolyvecError):
    """429: the gateway sheds load; retried automatically (honouring Retry-After) before this is raised."""


class UnavailableError(PolyvecError):
    """503: an inference service or the store did not answer (``service`` names it); retried first."""


class ServerError(PolyvecError):
    """Another 5xx answer."""


class TransportError(PolyvecError):
    """No answer at all: the gateway could not be reached, or the connection broke.

    ``may_have_run``: the request was sent before the connection broke (retried only when idempotent).
    """

    def __init__(self, message: str, *, may_have_run: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.may_have_run = may_have_run


_BY_STATUS: dict[int, type[PolyvecError]] = {
    400: BadRequestError, 422: BadRequestError, 401: AuthenticationError, 403: AuthenticationError,
    404: NotFoundError, 409: ConflictError, 413: PayloadTooLargeError, 429: RateLimitedError,
    503: UnavailableError,
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import datetime as dt

    now = dt.datetime.now(when.tzinfo or dt.UTC)
    return max(0.0, (when - now).total_seconds())


def error_from_response(status: int, body: Any, retry_after: str | None = None) -> PolyvecError:
    """The typed error of a gateway answer (its JSON ``{"error", "field"?, "service"?}``)."""
    message = f"HTTP {status}"
    field = service = None
    if isinstance(body, dict):
        message = str(body.get("error") or body.get("detail") or message)
        field = body.get("field")
        service = body.get("service")
    elif isinstance(body, str) and body.strip():
        message = body.strip()[:500]
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else PolyvecError)
    return cls(message, status=status, field=field, service=service,
               retry_after=parse_retry_after(retry_after))
