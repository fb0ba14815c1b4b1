"""HTTP transport: carries one :class:`~polyvec_client._core.Op` over httpx and types its errors.

Retries are not here: the client's driver (``_core.drive``/``adrive``) decides them for every transport.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from polyvec_client import _json
from polyvec_client._core import Op
from polyvec_client.errors import TransportError, error_from_response

USER_AGENT = "polyvec-client/0.1"


def base_headers(api_key: str | None) -> dict[str, str]:
    headers = {"user-agent": USER_AGENT, "accept": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    return headers


def tls_verify(url: str) -> bool:
    """Verify certificates for an https:// gateway; a plain http:// one never does TLS, so its client
    skips loading the CA bundle (40-90 ms of CPU at every start of the command line)."""
    return not url.lower().startswith("http://")


def _build(client: httpx.Client | httpx.AsyncClient, op: Op) -> httpx.Request:
    headers: dict[str, str] = {}
    content = op.content
    if op.body is not None:
        content = json.dumps(op.body, separators=(",", ":")).encode()
    if content is not None:
        headers["content-type"] = "application/json"
    return client.build_request(op.method, op.path, content=content, params=op.params, headers=headers)


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


def _transport_error(op: Op, exc: httpx.TransportError) -> TransportError:
    """Connection never made: safe to retry. Broken after sending: the request may have run."""
    never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return TransportError(f"{op.method} {op.path}: {type(exc).__name__}: {exc}", may_have_run=not never_sent)


def _limits(max_connections: int) -> httpx.Limits:
    return httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)


class SyncHTTP:
    def __init__(self, url: str, *, api_key: str | None, timeout: float,
                 transport: httpx.BaseTransport | None = None, max_connections: int = 32) -> None:
        self.client = httpx.Client(base_url=url, headers=base_headers(api_key), timeout=timeout,
                                   transport=transport, verify=tls_verify(url),
                                   limits=_limits(max_connections))

    def send(self, op: Op) -> Any:
        try:
            return _answer(self.client.send(_build(self.client, op)))
        except httpx.TransportError as exc:
            raise _transport_error(op, exc) from exc

    def close(self) -> None:
        self.client.close()


class AsyncHTTP:
    def __init__(self, url: str, *, api_key: str | None, timeout: float,
                 transport: httpx.AsyncBaseTransport | None = None, max_connections: int = 32) -> None:
        self.client = httpx.AsyncClient(base_url=url, headers=base_headers(api_key), timeout=timeout,
                                        transport=transport, verify=tls_verify(url),
                                        limits=_limits(max_connections))

    async def send(self, op: Op) -> Any:
        try:
            return _answer(await self.client.send(_build(self.client, op)))
        except httpx.TransportError as exc:
            raise _transport_error(op, exc) from exc

    async def close(self) -> None:
        await self.client.aclose()
