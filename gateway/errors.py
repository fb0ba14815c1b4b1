"""Typed errors of the gateway service layer; the HTTP and gRPC fronts map them to status codes."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of the typed errors; ``http_status`` and ``grpc_code`` say what the fronts answer."""

    http_status = 500
    grpc_code = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict:
        body: dict = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body

    def headers(self) -> dict[str, str]:
        """HTTP response headers this error adds (gRPC: trailing metadata, lower-cased)."""
        return {}


class BadRequest(GatewayError):
    """The request is malformed; ``field`` names the offending field (dotted path)."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message, field=field)
        self.detail = message


class NotFound(GatewayError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class Conflict(GatewayError):
    http_status = 409
    grpc_code = "ALREADY_EXISTS"


class PayloadTooLarge(GatewayError):
    """The request body is over MAX_REQUEST_BYTES (counted as it streams in)."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class Forbidden(GatewayError):
    """The request is understood but a setting of this gateway does not allow it."""

    http_status = 403
    grpc_code = "PERMISSION_DENIED"


class Unauthorized(GatewayError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class NotInstalled(GatewayError):
    """The feature needs packages this gateway was installed without; the message names the extra."""

    http_status = 501
    grpc_code = "UNIMPLEMENTED"


class Unavailable(GatewayError):
    """A dependency (an inference service or the store) did not answer; ``service`` names it."""

    http_status = 503
    grpc_code = "UNAVAILABLE"

    def __init__(self, service: str, message: str | None = None) -> None:
        super().__init__(message or f"{service} is unavailable")
        self.service = service

    def to_dict(self) -> dict:
        return {"error": self.message, "service": self.service}


class Overloaded(GatewayError):
    """Too much work for a dependency now (an inference service's queue stayed full, or the gateway
    already has INFERENCE_MAX_WAITING requests waiting for it). Nothing was written; retrying the same
    request after ``retry_after_s`` seconds is safe."""

    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"

    def __init__(self, service: str, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.service = service
        self.retry_after_s = max(1, int(retry_after_s))

    def to_dict(self) -> dict:
        return {"error": self.message, "service": self.service, "retry_after_s": self.retry_after_s}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}
