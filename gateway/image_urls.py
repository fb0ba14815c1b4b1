"""Fetching images given as http(s) URLs (object image fields and near_image queries).

A gateway that fetches URLs its callers choose can be pointed at internal services (SSRF), so the
policy is explicit and enforced on every hop of a redirect:

* ``IMAGE_URLS=off`` turns fetching off (then only base64 / data: URLs are accepted);
* ``IMAGE_URL_HOSTS`` (comma list, ``*.example.com`` matches subdomains) limits the hosts; empty = any;
* addresses that are not public (loopback, private, shared 100.64/10, link-local, multicast, reserved,
  unspecified; IPv4-mapped and NAT64/6to4 IPv6 addresses are judged by the IPv4 address inside) are
  refused unless ``IMAGE_URL_ALLOW_PRIVATE=1``. A host name is resolved once and every address it
  resolves to is checked; the connection then goes to the checked address (no second resolution, so a
  name cannot re-bind to a private address in between), while the Host header, TLS SNI and certificate
  check keep the name. IP literals in every spelling a resolver accepts (``2130706433``,
  ``0x7f000001``, ``0177.0.0.1``, ``127.1``) are read as the address they denote;
* ``IMAGE_URL_MAX_BYTES`` caps the body (checked while streaming), ``IMAGE_URL_TIMEOUT_S`` each fetch
  (resolution, connects, redirects and body together); at most 3 redirects are followed, each hop
  checked again; at most ``IMAGE_URL_CONCURRENCY`` fetches run at once (the rest wait their turn);
* proxy environment variables (HTTP_PROXY, ...) and SSL_CERT_FILE / SSL_CERT_DIR are ignored unless
  ``IMAGE_URL_TRUST_ENV=1``. Through a
  proxy the target's addresses are still checked first, but the proxy resolves the name itself, so the
  connection is not pinned to the checked address: the proxy must then enforce its own egress rules.

Errors are :class:`ImageFetchError` with a message meant for the caller (the field is named by the
caller); whatever the URL, no other exception leaves :meth:`ImageFetcher.fetch`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpcore
import httpx

MAX_REDIRECTS = 3
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``resolve(host, port)`` -> the addresses a host name resolves to (the system resolver by default).
Resolver = Callable[[str, int], Awaitable[list[str]]]
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NUMERIC_HOST = re.compile(r"^[0-9a-fA-FxX.]+$")


class ImageFetchError(ValueError):
    """The image URL could not be fetched under the policy; the message says why."""


@dataclass(frozen=True)
class ImageUrlPolicy:
    enabled: bool = True
    allowed_hosts: tuple[str, ...] = ()
    allow_private: bool = False
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0
    trust_env: bool = False
    concurrency: int = 8


def is_image_url(value: str) -> bool:
    """Whether ``value`` is an http(s) URL; surrounding whitespace is ignored here as by the fetch, which
    takes the stripped URL (a leading space used to make it 'invalid base64', a trailing one not)."""
    head = value.lstrip()[:8].lower()
    return head.startswith(("http://", "https://"))


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    if not allowed:
        return True
    host = host.lower().rstrip(".")
    for pattern in allowed:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):  # a subdomain; not the domain itself
                return True
        elif host == pattern:
            return True
    return False


def _without_zone(address: str) -> str:
    """An address without its IPv6 zone index (``fe80::1%eth0`` -> ``fe80::1``: from the first ``%``)."""
    return address.partition("%")[0]


def literal_address(host: str) -> IPAddress | None:
    """The address an IP literal host denotes, in any spelling a resolver reads as one; else None."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(_without_zone(host))
    except ValueError:
        pass
    # (the pattern also keeps out what glibc's inet_aton reads leniently: "127.0.0.1 x" is 127.0.0.1 to it)
    if _NUMERIC_HOST.match(host):
        try:  # decimal 2130706433, hex 0x7f000001, octal 0177.0.0.1, short 127.1: what inet_aton reads
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (IPv4-mapped, NAT64, 6to4), else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def is_public(address: IPAddress) -> bool:
    """True for a globally routable unicast address (what an image URL may point at by default); an IPv6
    address carrying an IPv4 one (mapped, NAT64, 6to4) is judged by the IPv4 address."""
    a = _embedded_ipv4(address)
    return a.is_global and not (a.is_private or a.is_loopback or a.is_link_local or a.is_multicast
                                or a.is_reserved or a.is_unspecified)


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, in the resolver's order, without duplicates."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in out:
            out.append(address)
    return out


async def _open_tcp(address: str, port: int, **kwargs: typing.Any) -> httpcore.AsyncNetworkStream:
    return await httpcore.AnyIOBackend().connect_tcp(address, port, **kwargs)


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network layer for image fetches: each connection resolves its host once, through the
    fetcher's policy check, and connects to the checked address (TLS still uses the host name)."""

    def __init__(self, fetcher: ImageFetcher) -> None:
        self._fetcher = fetcher

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: typing.Iterable[typing.Any] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        address = (await self._fetcher.checked_addresses(host, port))[0]
        return await self._fetcher.open_tcp(str(address), port, timeout=timeout, local_address=local_address,
                                            socket_options=socket_options)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over :class:`_PinnedBackend` (certificate checks as usual)."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend, ssl_context: ssl.SSLContext) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(ssl_context=ssl_context, network_backend=backend)


class ImageFetcher:
    """Fetches image URLs under an :class:`ImageUrlPolicy` (one shared HTTP client).

    ``resolve`` and ``open_tcp`` are the name resolution and the TCP connect (the system's by default);
    tests pass their own to play a resolver that changes its answer, or to stand for remote addresses.
    ``ssl_context`` (default: httpx's, with its CA bundle) verifies HTTPS servers.
    """

    def __init__(self, policy: ImageUrlPolicy, *, resolve: Resolver | None = None,
                 open_tcp: Callable[..., Awaitable[httpcore.AsyncNetworkStream]] | None = None) -> None:
        self.policy = policy
        self.resolve = resolve or system_resolve
        self.open_tcp = open_tcp or _open_tcp
        self.ssl_context: ssl.SSLContext | None = None
        self._client: httpx.AsyncClient | None = None
        self._limit = asyncio.Semaphore(policy.concurrency)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            common: dict[str, typing.Any] = dict(timeout=self.policy.timeout_s, follow_redirects=False,
                                                 headers={"user-agent": "polyvec-gateway"})
            if self.policy.trust_env:  # proxies from the environment; the proxy resolves names itself
                self._client = httpx.AsyncClient(trust_env=True, **common)
            else:
                transport = _PinnedTransport(_PinnedBackend(self),
                                             self.ssl_context or httpx.create_ssl_context(trust_env=False))
                self._client = httpx.AsyncClient(trust_env=False, transport=transport, **common)
        return self._client

    async def checked_addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to for ``host``: resolved once, each one checked under the policy."""
        literal = literal_address(host)
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            try:
                found = await self.resolve(host.rstrip("."), port)
            except (socket.gaierror, UnicodeError) as exc:
                reason = getattr(exc, "strerror", None) or "no such host"
                raise ImageFetchError(f"host {host!r} does not resolve ({reason})") from None
            addresses = [ipaddress.ip_address(_without_zone(a)) for a in found]
            if not addresses:
                raise ImageFetchError(f"host {host!r} does not resolve (no addresses)")
        if not self.policy.allow_private:
            for address in addresses:
                if not is_public(address):
                    shown = f"host {host!r} resolves to" if literal is None else "the URL names"
                    raise ImageFetchError(
                        f"{shown} the non-public address {address}; image URLs on private networks are "
                        "refused (IMAGE_URL_ALLOW_PRIVATE=1 allows them)")
        return addresses

    async def _check_target(self, url: str) -> httpx.URL:
        """The URL as httpx reads it, after the scheme/host checks (and, through a proxy, the addresses)."""
        try:  # (urlsplit refuses some hosts too: '℀.com' changes under NFKC normalisation)
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError as exc:
            raise ImageFetchError(f"the image URL is not valid ({exc})") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise ImageFetchError(f"only http and https image URLs are fetched, not {parts.scheme!r}")
        if not host:
            raise ImageFetchError("the image URL has no host")
        if not _host_allowed(host, self.policy.allowed_hosts):
            raise ImageFetchError(f"host {host!r} is not in IMAGE_URL_HOSTS")
        try:
            port = parts.port
            literal = literal_address(host)
            if literal is not None:  # spelled canonically: httpx refuses some spellings (0177.0.0.1)
                userinfo, at, _ = parts.netloc.rpartition("@")
                netloc = userinfo + at + (str(literal) if literal.version == 4 else f"[{literal}]") + (
                    f":{port}" if port else "")
                url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
            target = httpx.URL(url)
            target.host  # noqa: B018 - decodes IDNA labels now ('xn--a' is refused here, not mid-request)
        except (httpx.InvalidURL, ValueError) as exc:  # (an IDNA error is a UnicodeError, a ValueError)
            raise ImageFetchError(f"the image URL is not valid ({exc})") from None
        port = target.port or (443 if target.scheme == "https" else 80)
        if self.policy.trust_env:
            await self.checked_addresses(host, port)  # the proxy connects; check what it is asked to reach
        return target

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
            target = await self._check_target(url)
            try:
                async with self._http().stream("GET", target) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(str(target), response.headers["location"])
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
