"""Fetching images given as http(s) URLs (object image fields and near_image queries).

A gateway that fetches URLs its callers choose can be pointed at internal services (SSRF), so the
policy is explicit and enforced on every hop of a redirect:

* ``IMAGE_URLS=off`` turns fetching off (then only base64 / data: URLs are accepted);
* ``IMAGE_URL_HOSTS`` (comma list, ``*.example.com`` matches subdomains) limits the hosts; empty = any;
* addresses that are not global (loopback, private, link-local, multicast, reserved...) are refused
  unless ``IMAGE_URL_ALLOW_PRIVATE=1``; the host name is resolved and every address it resolves to
  is checked;
* ``IMAGE_URL_MAX_BYTES`` caps the body (checked while streaming), ``IMAGE_URL_TIMEOUT_S`` each fetch;
  at most 3 redirects are followed.

Errors are :class:`ImageFetchError` with a message meant for the caller (the field is named by the
caller).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

MAX_REDIRECTS = 3


class ImageFetchError(ValueError):
    """The image URL could not be fetched under the policy; the message says why."""


@dataclass(frozen=True)
class ImageUrlPolicy:
    enabled: bool = True
    allowed_hosts: tuple[str, ...] = ()
    allow_private: bool = False
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0


def is_image_url(value: str) -> bool:
    head = value[:8].lower()
    return head.startswith(("http://", "https://"))


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    if not allowed:
        return True
    host = host.lower().rstrip(".")
    for pattern in allowed:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


class ImageFetcher:
    """Fetches image URLs under an :class:`ImageUrlPolicy` (one shared HTTP client)."""

    def __init__(self, policy: ImageUrlPolicy, *, concurrency: int = 8) -> None:
        self.policy = policy
        self._client: httpx.AsyncClient | None = None
        self._limit = asyncio.Semaphore(concurrency)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.policy.timeout_s, follow_redirects=False,
                                             headers={"user-agent": "polyvec-gateway"})
        return self._client

    async def _check_target(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ImageFetchError(f"only http and https image URLs are fetched, not {parts.scheme!r}")
        host = parts.hostname
        if not host:
            raise ImageFetchError("the image URL has no host")
        if not _host_allowed(host, self.policy.allowed_hosts):
            raise ImageFetchError(f"host {host!r} is not in IMAGE_URL_HOSTS")
        if self.policy.allow_private:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 443,
                                                                 type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ImageFetchError(f"host {host!r} does not resolve ({exc.strerror})") from None
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if not address.is_global:
                raise ImageFetchError(
                    f"host {host!r} resolves to the non-public address {address}; image URLs on private "
                    "networks are refused (IMAGE_URL_ALLOW_PRIVATE=1 allows them)"
                )

    async def fetch(self, url: str) -> bytes:
        """The body of ``url`` (after at most 3 redirects), or :class:`ImageFetchError`."""
        if not self.policy.enabled:
            raise ImageFetchError("image URLs are turned off here (IMAGE_URLS=off): send the image as base64")
        async with self._limit:
            try:
                return await asyncio.wait_for(self._fetch(url), self.policy.timeout_s)
            except TimeoutError:
                limit = f"{self.policy.timeout_s:g}s"
                raise ImageFetchError(f"fetching the image took longer than {limit}") from None

    async def _fetch(self, url: str) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            await self._check_target(url)
            try:
                async with self._http().stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise ImageFetchError(f"the image URL answered HTTP {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > self.policy.max_bytes:
                        raise ImageFetchError(
                            f"the image is {int(declared)} bytes; at most {self.policy.max_bytes} are "
                            "fetched (IMAGE_URL_MAX_BYTES)")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self.policy.max_bytes:
                            raise ImageFetchError(f"the image is larger than {self.policy.max_bytes} bytes "
                                                  "(IMAGE_URL_MAX_BYTES)")
                    if not body:
                        raise ImageFetchError("the image URL returned an empty body")
                    return bytes(body)
            except httpx.HTTPError as exc:
                raise ImageFetchError(f"fetching the image failed: {type(exc).__name__}: {exc}") from None
        raise ImageFetchError(f"more than {MAX_REDIRECTS} redirects")
