"""Image URLs cannot reach private networks (SSRF), whatever the spelling, resolution or redirect.

The fetcher's name resolution and TCP connect are played by the test: ``resolve`` answers what a
resolver would (and can change its answer between calls, like a re-binding DNS server), and every TCP
connect lands on one loopback HTTP(S) server whatever address was asked for, recording that address.
So a policy that lets a private target through *succeeds* here (the loopback server answers with an
image) and the test fails: every case below fails on a policy that refuses only loopback addresses.
Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpcore
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.image_urls import ImageFetcher, ImageFetchError, ImageUrlPolicy, is_public, literal_address


def png_bytes(colour: tuple[int, int, int], size: int = 16) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


RED = png_bytes((220, 30, 30))
PUBLIC = "93.184.216.34"  # a global address (never dialled: every connect lands on the loopback server)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        self.server.hosts.append(self.headers.get("Host"))
        self.server.agents.append(self.headers.get("User-Agent"))
        self.server.auths.append(self.headers.get("Authorization"))
        if self.path.startswith("/redirect?to="):
            status, body, headers = 302, b"", {"Location": self.path.split("=", 1)[1]}
        else:
            status, body, headers = 200, RED, {}
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(httpd: ThreadingHTTPServer):
    httpd.hosts, httpd.agents, httpd.auths = [], [], []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd


@pytest.fixture(scope="module")
def server():
    httpd = _serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    yield httpd
    httpd.shutdown()


class World:
    """A resolver the test controls and a connect that always reaches the loopback server."""

    def __init__(self, port: int, names: dict[str, list[list[str]]]) -> None:
        self.port = port
        self.names = names  # name -> successive answers (the last one repeats)
        self.lookups: list[str] = []
        self.asked: list[tuple[str, int]] = []  # (host, port) as the resolver was asked
        self.dialled: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        self.asked.append((host, port))
        if host.startswith("unicode-error."):  # what the system resolver raises for a label it cannot encode
            raise UnicodeError("label too long")
        answers = self.names.get(host)
        if answers is None:
            try:  # numeric spellings resolve without DNS, as the system resolver reads them
                return [socket.inet_ntoa(socket.inet_aton(host))]
            except OSError:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return answers.pop(0) if len(answers) > 1 else answers[0]

    async def open_tcp(self, address: str, port: int, **kwargs) -> httpcore.AsyncNetworkStream:
        self.dialled.append(address)
        return await httpcore.AnyIOBackend().connect_tcp("127.0.0.1", self.port, **kwargs)


def fetch(world: World, url: str, **policy) -> bytes:
    async def go():
        fetcher = ImageFetcher(ImageUrlPolicy(**policy), resolve=world.resolve, open_tcp=world.open_tcp)
        try:
            return await fetcher.fetch(url)
        finally:
            await fetcher.aclose()

    return asyncio.run(go())


NAMES = {
    "images.example": [[PUBLIC]],
    "internal.example": [["10.1.2.3"]],
    "cgnat.example": [["100.64.7.7"]],
    "metadata.example": [["169.254.169.254"]],
    "v6private.example": [["fd00::7"]],
    "mixed.example": [[PUBLIC, "192.168.1.20"]],  # one private address among public ones is enough
    "localhost": [["127.0.0.1", "::1"]],
}

PRIVATE_TARGETS = [
    "http://10.0.0.1/a.png", "http://10.255.255.254/a.png",
    "http://172.16.0.1/a.png", "http://172.31.255.254/a.png",
    "http://192.168.0.1/a.png", "http://192.168.255.254/a.png",
    "http://100.64.0.1/a.png", "http://100.127.255.254/a.png",
    "http://169.254.169.254/latest/meta-data/", "http://169.254.0.1/a.png",
    "http://0.0.0.0/a.png", "http://224.0.0.1/a.png", "http://240.0.0.1/a.png",
    "http://[fc00::1]/a.png", "http://[fd12:3456::1]/a.png", "http://[fe80::1]/a.png",
    "http://[::ffff:10.0.0.1]/a.png", "http://[::ffff:169.254.169.254]/a.png", "http://[::ffff:192.168.1.1]/a.png",
    "http://[64:ff9b::a00:1]/a.png",  # NAT64 of 10.0.0.1
    "http://[2002:a00:1::]/a.png",  # 6to4 of 10.0.0.1
    "http://167772161/a.png", "http://0xa000001/a.png", "http://012.0.0.1/a.png",  # 10.0.0.1 spelled
    "http://0xA9FEA9FE/latest/", "http://2852039166/latest/",  # 169.254.169.254 spelled
    "http://internal.example/a.png", "http://cgnat.example/a.png", "http://metadata.example/a.png",
    "http://v6private.example/a.png", "http://mixed.example/a.png",
]
LOOPBACK_TARGETS = [
    "http://127.0.0.1/a.png", "http://127.8.9.10/a.png", "http://[::1]/a.png", "http://[::ffff:127.0.0.1]/a.png",
    "http://2130706433/a.png", "http://0x7f000001/a.png", "http://0177.0.0.1/a.png", "http://127.1/a.png",
    "http://localhost/a.png", "http://LOCALHOST./a.png",
]


@pytest.mark.parametrize("url", PRIVATE_TARGETS + LOOPBACK_TARGETS)
def test_private_and_loopback_targets_are_refused(server, url):
    world = World(server.server_address[1], {k: [list(a) for a in v] for k, v in NAMES.items()})
    with pytest.raises(ImageFetchError, match="non-public address .*IMAGE_URL_ALLOW_PRIVATE"):
        fetch(world, url)
    assert world.dialled == []  # refused before any connection


def test_the_same_policy_fetches_public_targets(server):
    """The loopback server stands for a public host: the refusals above are the policy, not the set-up."""
    world = World(server.server_address[1], {k: [list(a) for a in v] for k, v in NAMES.items()})
    assert fetch(world, "http://images.example/a.png") == RED
    assert fetch(world, f"http://{PUBLIC}/a.png") == RED
    assert fetch(world, "http://[::ffff:93.184.216.34]/a.png") == RED  # judged by the IPv4 inside
    assert world.dialled == [PUBLIC, PUBLIC, "::ffff:5db8:d822"]
    # and a private target passes when private networks are allowed
    assert fetch(world, "http://internal.example/a.png", allow_private=True) == RED
    assert world.dialled[-1] == "10.1.2.3"


def test_redirects_are_checked_hop_by_hop(server):
    world = World(server.server_address[1], {k: [list(a) for a in v] for k, v in NAMES.items()})
    for target in ("http://internal.example/a.png", "http://192.168.0.10/a.png", "http://[::1]/a.png",
                   "http://2130706433/a.png"):
        with pytest.raises(ImageFetchError, match="non-public address"):
            fetch(world, f"http://images.example/redirect?to={target}")
    # the public first hop was fetched each time; no private hop was ever dialled
    assert set(world.dialled) == {PUBLIC}
    with pytest.raises(ImageFetchError, match="'internal.example' is not in IMAGE_URL_HOSTS"):
        fetch(world, "http://images.example/redirect?to=http://internal.example/a.png",
              allowed_hosts=("images.example",), allow_private=True)


def test_dns_rebinding_cannot_slip_a_private_address_in(server):
    """The name resolves once; the connection goes to the address that was checked."""
    world = World(server.server_address[1], {"rebind.example": [[PUBLIC], ["10.0.0.7"]],
                                             "rebind2.example": [["10.0.0.8"], [PUBLIC]]})
    assert fetch(world, "http://rebind.example/a.png") == RED
    assert world.lookups == ["rebind.example"] and world.dialled == [PUBLIC]
    with pytest.raises(ImageFetchError, match="10.0.0.8"):
        fetch(world, "http://rebind2.example/a.png")
    assert world.dialled == [PUBLIC]


def test_host_header_keeps_the_name(server):
    world = World(server.server_address[1], NAMES | {"cdn.example": [[PUBLIC]]})
    server.hosts.clear()
    assert fetch(world, "http://cdn.example:8080/a.png") == RED
    assert server.hosts == ["cdn.example:8080"] and world.dialled == [PUBLIC]


def test_unresolvable_and_malformed_urls_are_clear_errors(server):
    world = World(server.server_address[1], {})
    with pytest.raises(ImageFetchError, match="does not resolve"):
        fetch(world, "http://nowhere.example/a.png")
    with pytest.raises(ImageFetchError, match="not valid"):
        fetch(world, "http://images.example:99999/a.png")
    with pytest.raises(ImageFetchError, match="only http and https"):
        fetch(world, "file:///etc/passwd")
    assert world.dialled == []


def test_resolution_details_names_scopes_and_messages(server):
    """What the resolver answers is read exactly (mutants of checked_addresses that survived)."""
    world = World(server.server_address[1], {"images.example": [[PUBLIC]], "empty.example": [[]],
                                             "scoped.example": [["fe80::1%2"]],
                                             "v6public.example": [["2606:4700::1111%3"]]})
    # the reason the resolver gave is passed on; an empty answer is its own reason
    with pytest.raises(ImageFetchError, match=r"^host 'nowhere.example' does not resolve "
                                              r"\(Name or service not known\)$"):
        fetch(world, "http://nowhere.example/a.png")
    with pytest.raises(ImageFetchError, match=r"^host 'empty.example' does not resolve \(no addresses\)$"):
        fetch(world, "http://empty.example/a.png")
    # a resolver error without a reason of its own (a UnicodeError has no strerror)
    with pytest.raises(ImageFetchError,
                       match=r"^host 'unicode-error.example' does not resolve \(no such host\)$"):
        fetch(world, "http://unicode-error.example/a.png")
    # a fully qualified name (trailing dot) is looked up without the dot, and fetched
    assert fetch(world, "http://images.example./a.png") == RED
    assert world.lookups[-1] == "images.example" and world.dialled[-1] == PUBLIC
    # an IPv6 answer with a zone index is judged (and dialled) without it
    with pytest.raises(ImageFetchError, match=r"^host 'scoped.example' resolves to the non-public address "
                                              r"fe80::1; "):
        fetch(world, "http://scoped.example/a.png")
    assert fetch(world, "http://v6public.example/a.png") == RED
    assert world.dialled[-1] == "2606:4700::1111"
    # a literal address is "named by the URL", not resolved
    with pytest.raises(ImageFetchError, match=r"^the URL names the non-public address 10.0.0.1; image URLs "
                                              r"on private networks are refused \(IMAGE_URL_ALLOW_PRIVATE=1 "
                                              r"allows them\)$"):
        fetch(world, "http://10.0.0.1/a.png")
    assert "10.0.0.1" not in world.lookups


def test_a_literal_address_in_any_spelling_keeps_its_port(server):
    """The URL is rewritten with the canonical address (httpx refuses some spellings); the port, the
    user info and an IPv6 literal's brackets survive the rewrite."""
    world = World(server.server_address[1], {})
    server.hosts.clear()
    assert fetch(world, "http://0x5db8d822:8080/a.png") == RED  # 93.184.216.34 in hex
    assert fetch(world, "http://user@1572395042/a.png") == RED  # ... in decimal, with user info
    assert fetch(world, "http://[2606:4700::1111]:8443/a.png") == RED
    assert server.hosts == ["93.184.216.34:8080", "93.184.216.34", "[2606:4700::1111]:8443"]
    assert world.dialled == [PUBLIC, PUBLIC, "2606:4700::1111"] and world.lookups == []
    # the user info survives the rewrite whole, an unescaped "@" in it included (the host is after the last)
    server.auths.clear()
    assert fetch(world, "http://us@er:pw@1572395042/a.png") == RED
    assert fetch(world, "http://1572395042/a.png") == RED
    assert server.auths == ["Basic " + base64.b64encode(b"us@er:pw").decode(), None]
    with pytest.raises(ImageFetchError, match=r"^the image URL has no host$"):
        fetch(world, "http:///a.png")


def test_literal_spellings_and_public_rule():
    assert literal_address("2130706433") == ipaddress.ip_address("127.0.0.1")
    assert literal_address("0x7f000001") == ipaddress.ip_address("127.0.0.1")
    assert literal_address("0177.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert literal_address("127.1") == ipaddress.ip_address("127.0.0.1")
    assert literal_address("[::1]") == ipaddress.ip_address("::1")
    assert literal_address("cafe.example") is None and literal_address("deadbeef.") is None
    # a zone index is dropped from the first "%" on; half a bracket pair is no literal
    for spelled in ("fe80::1%eth0", "[fe80::1%eth0]", "fe80::1%a%b"):
        assert str(literal_address(spelled)) == "fe80::1", spelled
    assert literal_address("::1]") is None and literal_address("[::1") is None
    # glibc's inet_aton reads "127.0.0.1 x" as 127.0.0.1 (it stops at the space): not an address here
    assert literal_address("127.0.0.1 x") is None and literal_address("127.1\t5") is None
    assert is_public(ipaddress.ip_address(PUBLIC)) and is_public(ipaddress.ip_address("2606:4700::1111"))
    for address in ("10.0.0.1", "100.64.0.1", "169.254.169.254", "0.0.0.0", "::", "::1", "fc00::1",
                    "fe80::1", "::ffff:10.0.0.1", "224.0.0.1", "ff02::1", "192.0.2.1", "198.18.0.1"):
        assert not is_public(ipaddress.ip_address(address)), address


def test_an_ipv6_address_carrying_an_ipv4_one_is_judged_by_that_ipv4_address():
    """IPv4-mapped, NAT64 (64:ff9b::/96, the low 32 bits) and 6to4 (2002:AABB:CCDD::) addresses of a
    public IPv4 address are public; of a private one, not (mutants of the NAT64 mask survived)."""
    for prefix in ("::ffff:", "64:ff9b::"):
        for inner, public in ((PUBLIC, True), ("8.8.8.8", True), ("10.0.0.1", False),
                              ("169.254.169.254", False), ("255.255.255.255", False)):
            address = ipaddress.ip_address(prefix + inner)
            assert is_public(address) is public, address
    assert is_public(ipaddress.ip_address("2002:5db8:d822::1"))  # 6to4 of 93.184.216.34
    assert not is_public(ipaddress.ip_address("2002:a9fe:a9fe::1"))  # 6to4 of 169.254.169.254
    world = World(0, {})
    with pytest.raises(ImageFetchError, match=r"non-public address 64:ff9b::a9fe:a9fe"):
        fetch(world, "http://[64:ff9b::a9fe:a9fe]/latest/")
    assert world.dialled == []


def test_the_resolver_is_asked_for_the_urls_port(server, monkeypatch):
    """resolve(host, port) gets the URL's port (80 for http, 443 for https when the URL names none), on
    the pinned connection and, through a proxy, in the check made before it."""
    world = World(server.server_address[1], NAMES | {"cdn.example": [[PUBLIC]]})
    assert fetch(world, "http://images.example/a.png") == RED
    assert fetch(world, "http://cdn.example:8080/a.png") == RED
    with pytest.raises(ImageFetchError, match="non-public"):
        fetch(world, "https://internal.example/a.png")
    assert world.asked == [("images.example", 80), ("cdn.example", 8080), ("internal.example", 443)]
    proxy = _serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    try:
        _proxy_environment(monkeypatch, f"http://127.0.0.1:{proxy.server_address[1]}")
        world.asked.clear()
        assert fetch(world, "http://images.example/a.png", trust_env=True) == RED
        assert fetch(world, "http://cdn.example:81/a.png", trust_env=True) == RED
        with pytest.raises(ImageFetchError, match="non-public"):
            fetch(world, "https://internal.example/a.png", trust_env=True)
        assert world.asked == [("images.example", 80), ("cdn.example", 81), ("internal.example", 443)]
    finally:
        proxy.shutdown()


def test_fetches_say_they_come_from_the_gateway(server, monkeypatch):
    """The User-Agent is polyvec-gateway, directly and through a proxy (image hosts can tell and allow it)."""
    world = World(server.server_address[1], NAMES)
    server.agents.clear()
    assert fetch(world, "http://images.example/a.png") == RED
    proxy = _serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    try:
        _proxy_environment(monkeypatch, f"http://127.0.0.1:{proxy.server_address[1]}")
        assert fetch(world, "http://images.example/a.png", trust_env=True) == RED
    finally:
        proxy.shutdown()
    assert server.agents == ["polyvec-gateway"] and proxy.agents == ["polyvec-gateway"]


# -- proxies ------------------------------------------------------------------------------------------------

def _proxy_environment(monkeypatch, proxy: str | None) -> None:
    """The environment's proxy settings: ``proxy`` for http, none for the rest (CI may set its own)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    if proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy)


def test_proxy_environment_is_ignored_unless_asked_for(server, monkeypatch):
    """HTTP_PROXY would send every fetch through a proxy of the environment's choosing."""
    proxy = _serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    try:
        _proxy_environment(monkeypatch, f"http://127.0.0.1:{proxy.server_address[1]}")
        world = World(server.server_address[1], NAMES)
        assert fetch(world, "http://images.example/a.png") == RED
        assert world.dialled == [PUBLIC] and proxy.hosts == []
        # trust_env: the proxy is used (it answers for the target here), the target still checked first
        assert fetch(world, "http://images.example/a.png", trust_env=True) == RED
        assert proxy.hosts == ["images.example"]
        with pytest.raises(ImageFetchError, match="non-public address"):
            fetch(world, "http://internal.example/a.png", trust_env=True)
        assert proxy.hosts == ["images.example"]
    finally:
        proxy.shutdown()


# -- TLS: SNI and certificate checks use the host name, not the address dialled ------------------------------

def _certificate(tmp_path, name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - day).not_valid_after(now + day)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_tls_uses_the_host_name_for_sni_and_the_certificate(tmp_path):
    cert_file, key_file = _certificate(tmp_path, "images.example")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    names: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: names.append(name)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    _serve(httpd)
    port = httpd.server_address[1]
    try:
        world = World(port, {"images.example": [[PUBLIC]], "other.example": [[PUBLIC]]})

        async def go(url: str, ca: bool):
            fetcher = ImageFetcher(ImageUrlPolicy(), resolve=world.resolve, open_tcp=world.open_tcp)
            if ca:  # trust the test certificate (through the same transport the fetcher builds)
                fetcher.ssl_context = ssl.create_default_context(cafile=str(cert_file))
            try:
                return await fetcher.fetch(url)
            finally:
                await fetcher.aclose()

        # not trusted: refused, after the server saw the name in SNI
        with pytest.raises(ImageFetchError, match="CERTIFICATE_VERIFY_FAILED"):
            asyncio.run(go(f"https://images.example:{port}/a.png", ca=False))
        assert names[-1] == "images.example" and world.dialled[-1] == PUBLIC
        # trusted, and the certificate names the host asked for: fetched (though 127.0.0.1 was dialled)
        assert asyncio.run(go(f"https://images.example:{port}/a.png", ca=True)) == RED
        assert httpd.hosts[-1] == f"images.example:{port}"
        # the same certificate for another name: refused
        with pytest.raises(ImageFetchError, match="CERTIFICATE_VERIFY_FAILED|match|mismatch"):
            asyncio.run(go(f"https://other.example:{port}/a.png", ca=True))
        assert names[-1] == "other.example"
    finally:
        httpd.shutdown()


def test_ssl_cert_file_is_trusted_only_with_trust_env(tmp_path, monkeypatch):
    """SSL_CERT_FILE / SSL_CERT_DIR are the environment too: read only with IMAGE_URL_TRUST_ENV=1."""
    cert_file, key_file = _certificate(tmp_path, "localhost")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    _serve(httpd)
    url = f"https://localhost:{httpd.server_address[1]}/a.png"

    async def go(**policy) -> bytes:
        fetcher = ImageFetcher(ImageUrlPolicy(allow_private=True, **policy),
                               resolve=lambda host, port: _loopback(host))
        try:
            return await fetcher.fetch(url)
        finally:
            await fetcher.aclose()

    try:
        _proxy_environment(monkeypatch, None)
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
        with pytest.raises(ImageFetchError, match="CERTIFICATE_VERIFY_FAILED"):
            asyncio.run(go())
        assert asyncio.run(go(trust_env=True)) == RED
    finally:
        httpd.shutdown()


async def _loopback(host: str) -> list[str]:
    assert host == "localhost"
    return ["127.0.0.1"]
