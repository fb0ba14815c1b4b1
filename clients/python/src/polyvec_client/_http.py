"""HTTP transport: one request at a time over httpx, retries with jittered backoff, errors typed.

429 and 503 (and 502/504 from a proxy in front) are retried with full-jitter exponential backoff, or
after the gateway's ``Retry-After`` when it sends one, within a time budget; so are requests that never
reached the gateway (connection refused). A request that may have been processed (the connection broke
after sending) is retried only when it is idempotent.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from polyvec_client import _json
from polyvec_client.errors import PolyvecError, TransportError, error_from_response

RETRY_STATUSES = frozenset({429, 502, 503, 504})
USER_AGENT = "polyvec-client/0.1"


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying: ``attempts`` tries at most, within ``budget_s`` seconds."""

    attempts: int = 10
    backoff_s: float = 0.2
    max_backoff_s: float = 10.0
    budget_s: float = 120.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before try ``attempt + 1`` (attempt counts from 0)."""
        if retry_after is not None:
            return retry_after * random.uniform(1.0, 1.2) + random.uniform(0.0, 0.05)
        return random.uniform(0.0, min(self.max_backoff_s, self.backoff_s * 2 ** attempt))


@dataclass
class Request:
    method: str
    path: str
    json: Any = None
    content: bytes | None = None
    params: dict[str, Any] | None = None
    idempotent: bool = True
    headers: dict[str, str] = field(default_factory=dict)


def base_headers(api_key: str | None) -> dict[str, str]:
    headers = {"user-agent": USER_AGENT, "accept": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def tls_verify(url: str) -> bool:
    """Verify certificates for an https:// gateway; a plain http:// one never does TLS, so its client
    skips loading the CA bundle (40-90 ms of CPU at every start of the command line)."""
    return not url.lower().startswith("http://")


def _build(client: httpx.Client | httpx.AsyncClient, req: Request) -> httpx.Request:
    headers = dict(req.headers)
    content = req.content
    if req.json is not None:
        content = json.dumps(req.json, separators=(",", ":")).encode()
    if content is not None:
        headers.setdefault("content-type", "application/json")
    return client.build_request(req.method, req.path, content=content, params=req.params, headers=headers)


def _answer(response: httpx.Response) -> Any:
    if response.status_code < 400:
        if not response.content:
            return None
        return _json.loads(response.content)
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    raise error_from_response(response.status_code, body, response.headers.get("retry-after"))


def _retryable_transport(exc: httpx.TransportError, req: Request) -> bool:
    """Connection never made: always safe. Broken after sending: only for idempotent requests."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    return req.idempotent


class _Retrying:
    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def next_delay(self, attempt: int, started: float, error: PolyvecError) -> float | None:
        """Seconds to wait before trying again, or None to give up (raise ``error``)."""
        if attempt + 1 >= self.policy.attempts:
            return None
        pause = self.policy.delay(attempt, error.retry_after)
        if time.monotonic() + pause - started > self.policy.budget_s:
            return None
        return pause


class SyncHTTP(_Retrying):
    def __init__(self, url: str, *, api_key: str | None, timeout: float, retry: RetryPolicy,
                 transport: httpx.BaseTransport | None = None, max_connections: int = 32) -> None:
        super().__init__(retry)
        self.client = httpx.Client(base_url=url, headers=base_headers(api_key), timeout=timeout,
                                   transport=transport, verify=tls_verify(url),
                                   limits=httpx.Limits(max_connections=max_connections,
                                                       max_keepalive_connections=max_connections))

    def send(self, req: Request) -> Any:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return _answer(self.client.send(_build(self.client, req)))
            except PolyvecError as exc:
                if exc.status not in RETRY_STATUSES:
                    raise
                error = exc
            except httpx.TransportError as exc:
                error = TransportError(f"{req.method} {req.path}: {type(exc).__name__}: {exc}")
                if not _retryable_transport(exc, req):
                    raise error from exc
            pause = self.next_delay(attempt, started, error)
            if pause is None:
                raise error
            time.sleep(pause)
            attempt += 1

    def close(self) -> None:
        self.client.close()


class AsyncHTTP(_Retrying):
    def __init__(self, url: str, *, api_key: str | None, timeout: float, retry: RetryPolicy,
                 transport: httpx.AsyncBaseTransport | None = None, max_connections: int = 32) -> None:
        super().__init__(retry)
        self.client = httpx.AsyncClient(base_url=url, headers=base_headers(api_key), timeout=timeout,
                                        transport=transport, verify=tls_verify(url),
                                        limits=httpx.Limits(max_connections=max_connections,
                                                            max_keepalive_connections=max_connections))

    async def send(self, req: Request) -> Any:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return _answer(await self.client.send(_build(self.client, req)))
            except PolyvecError as exc:
                if exc.status not in RETRY_STATUSES:
                    raise
                error = exc
            except httpx.TransportError as exc:
                error = TransportError(f"{req.method} {req.path}: {type(exc).__name__}: {exc}")
                if not _retryable_transport(exc, req):
                    raise error from exc
            pause = self.next_delay(attempt, started, error)
            if pause is None:
                raise error
            await asyncio.sleep(pause)
            attempt += 1

    async def close(self) -> None:
        await self.client.aclose()
