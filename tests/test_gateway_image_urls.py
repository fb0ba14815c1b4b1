"""Image URLs: fetched under an explicit policy (hosts, private networks, size, time, redirects)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway.image_urls import ImageFetcher, ImageFetchError, ImageUrlPolicy, _host_allowed, is_image_url
from tests.gateway_support import gateway_with_inference, make_store, png_bytes

RED = png_bytes("red", 16)
BLUE = png_bytes("blue", 16)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        port = self.server.server_address[1]
        routes = {
            "/red.png": (200, RED, {}),
            "/blue.png": (200, BLUE, {}),
            "/big.png": (200, b"x" * 5000, {}),
            "/empty.png": (200, b"", {}),
            "/to-red": (302, b"", {"Location": "/red.png"}),
            "/to-ip": (302, b"", {"Location": f"http://127.0.0.1:{port}/red.png"}),
            "/loop": (302, b"", {"Location": "/loop"}),
            "/exact.png": (200, b"x" * 1000, {}),
            "/hop1": (302, b"", {"Location": "/red.png"}),
            "/hop2": (302, b"", {"Location": "/hop1"}),
            "/hop3": (302, b"", {"Location": "/hop2"}),
            "/hop4": (302, b"", {"Location": "/hop3"}),
            "/no-location": (302, b"", {}),
        }
        if self.path == "/unsized.png":  # no Content-Length: the body runs until the connection closes
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"x" * 5000)
            return
        if self.path == "/pieces.png":  # no Content-Length, written (and flushed) in three pieces
            self.send_response(200)
            self.end_headers()
            for start in range(0, len(RED), len(RED) // 3 + 1):
                self.wfile.write(RED[start:start + len(RED) // 3 + 1])
                self.wfile.flush()
                time.sleep(0.05)
            return
        if self.path == "/held.png":  # answers once the test lets it go, counting the fetches in flight
            with self.server.lock:
                self.server.in_flight += 1
                self.server.most_in_flight = max(self.server.most_in_flight, self.server.in_flight)
            self.server.release.wait(10)
            with self.server.lock:
                self.server.in_flight -= 1
        if self.path == "/slow.png":
            time.sleep(1.5)
        status, body, headers = routes.get(self.path, (404, b"not here", {}))
        if self.path in ("/slow.png", "/held.png"):
            status, body = 200, RED
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.lock, httpd.release = threading.Lock(), threading.Event()
    httpd.in_flight = httpd.most_in_flight = 0
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", f"http://localhost:{httpd.server_address[1]}", httpd
    httpd.shutdown()


def fetch(url: str, **policy) -> bytes:
    async def go():
        fetcher = ImageFetcher(ImageUrlPolicy(**policy))
        try:
            return await fetcher.fetch(url)
        finally:
            await fetcher.aclose()

    return asyncio.run(go())


def test_private_addresses_are_refused_by_default(server):
    ip_base, *_ = server
    with pytest.raises(ImageFetchError, match="non-public address 127.0.0.1.*IMAGE_URL_ALLOW_PRIVATE"):
        fetch(f"{ip_base}/red.png")


def test_fetches_follows_redirects_and_reports_failures(server):
    ip_base, *_ = server
    assert fetch(f"{ip_base}/red.png", allow_private=True) == RED
    assert fetch(f"{ip_base}/to-red", allow_private=True) == RED
    with pytest.raises(ImageFetchError, match="HTTP 404"):
        fetch(f"{ip_base}/missing.png", allow_private=True)
    with pytest.raises(ImageFetchError, match="IMAGE_URL_MAX_BYTES"):
        fetch(f"{ip_base}/big.png", allow_private=True, max_bytes=1000)
    with pytest.raises(ImageFetchError, match=r"^the image URL returned an empty body$"):
        fetch(f"{ip_base}/empty.png", allow_private=True)
    with pytest.raises(ImageFetchError, match="more than 3 redirects"):
        fetch(f"{ip_base}/loop", allow_private=True)
    with pytest.raises(ImageFetchError, match="longer than 0.5s"):
        fetch(f"{ip_base}/slow.png", allow_private=True, timeout_s=0.5)
    with pytest.raises(ImageFetchError, match=r"^image URLs are turned off here \(IMAGE_URLS=off\): send the "
                                              r"image as base64$"):
        fetch(f"{ip_base}/red.png", enabled=False)
    with pytest.raises(ImageFetchError, match="only http and https"):
        fetch("ftp://example.com/a.png")


def test_a_body_in_pieces_is_read_whole(server):
    """A body that arrives in several reads is joined, not replaced by its last piece."""
    ip_base, *_ = server
    assert fetch(f"{ip_base}/pieces.png", allow_private=True) == RED


def test_a_refused_connection_names_the_error(server):
    ip_base, *_ = server
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ImageFetchError, match=r"^fetching the image failed: ConnectError: "):
        fetch(f"http://127.0.0.1:{port}/red.png", allow_private=True)


def test_at_most_concurrency_fetches_run_at_once(server):
    """IMAGE_URL_CONCURRENCY (the policy's concurrency) bounds the fetches in flight; the rest wait and
    then succeed."""
    ip_base, _, httpd = server

    async def go(concurrency: int, fetches: int) -> tuple[list[bytes], int]:
        httpd.release.clear()
        httpd.most_in_flight = 0
        fetcher = ImageFetcher(ImageUrlPolicy(allow_private=True, concurrency=concurrency))
        try:
            tasks = [asyncio.create_task(fetcher.fetch(f"{ip_base}/held.png")) for _ in range(fetches)]
            for _ in range(500):  # until as many as may run have reached the server (10 s at most)
                await asyncio.sleep(0.02)
                if httpd.in_flight >= min(concurrency, fetches):
                    break
            await asyncio.sleep(0.2)  # time for any fetch over the limit to arrive as well
            seen = httpd.most_in_flight
            httpd.release.set()
            return await asyncio.gather(*tasks), seen
        finally:
            await fetcher.aclose()

    bodies, seen = asyncio.run(go(2, 5))
    assert bodies == [RED] * 5 and seen == 2
    bodies, seen = asyncio.run(go(8, 10))  # the default policy's limit
    assert ImageUrlPolicy().concurrency == 8 and bodies == [RED] * 10 and seen == 8


def test_the_fetcher_closes_twice_and_reopens(server):
    ip_base, *_ = server

    async def go() -> bytes:
        fetcher = ImageFetcher(ImageUrlPolicy(allow_private=True))
        assert await fetcher.fetch(f"{ip_base}/red.png") == RED
        await fetcher.aclose()
        await fetcher.aclose()  # a second close (shutdown paths may close twice) is a no-op
        try:
            return await fetcher.fetch(f"{ip_base}/blue.png")  # and a closed fetcher opens a new client
        finally:
            await fetcher.aclose()

    assert asyncio.run(go()) == BLUE


HOSTILE_URLS = [
    "http://xn--a.com/a.png",  # an IDNA label that does not decode
    "http://\u2100.com/a.png",  # changes under NFKC normalisation (urlsplit refuses it)
    "http://exa mple.com/a.png", "http://[::1/a.png", "http://[zz::1]/a.png", "http://127.0.0.1:99999/a.png",
    "http://127.0.0.1:-1/a.png", "http://127.0.0.1:0x50/a.png", "http://a..b/a.png",
    "http://" + "a" * 64 + ".com/",
    "http://" + "a." * 200 + "com/", "http://\udcff.com/a.png", "http://127.0.0.1/\x00", "http://%zz/a.png",
    "http://[fe80::1%25eth0]/a.png", "http://@/a.png", "http://:80/a.png", "https://[::]:0/",
    "http://user:pass@/a.png", "http://\u0000/a.png", "http://\t/a.png", "http:/\\127.0.0.1/a.png",
    "http://" + "9" * 40 + "/a.png", "http://0x" + "f" * 20 + "/a.png", "http://1.2.3.4.5/a.png",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_a_hostile_url_is_an_image_fetch_error_and_nothing_else(url):
    """Whatever the URL, the fetch ends in ImageFetchError (the caller turns it into a 4xx naming the
    field): an IDNA or NFKC error used to escape as a bare UnicodeError/ValueError."""
    for policy in ({}, {"allow_private": True}):
        with pytest.raises(ImageFetchError):
            fetch(url, timeout_s=5, **policy)


def test_size_and_redirect_limits_are_exact(server):
    """Survivors of a mutation run over _fetch: the bounds are inclusive, a body of undeclared length
    is counted as it streams in, and exactly MAX_REDIRECTS (3) redirects are followed."""
    ip_base, *_ = server
    assert fetch(f"{ip_base}/exact.png", allow_private=True, max_bytes=1000) == b"x" * 1000
    with pytest.raises(ImageFetchError, match=r"^the image is 1000 bytes; at most 999 are fetched "
                                              r"\(IMAGE_URL_MAX_BYTES\)$"):
        fetch(f"{ip_base}/exact.png", allow_private=True, max_bytes=999)
    assert fetch(f"{ip_base}/unsized.png", allow_private=True, max_bytes=5000) == b"x" * 5000
    with pytest.raises(ImageFetchError,
                       match=r"^the image is larger than 4999 bytes \(IMAGE_URL_MAX_BYTES\)$"):
        fetch(f"{ip_base}/unsized.png", allow_private=True, max_bytes=4999)
    assert fetch(f"{ip_base}/hop3", allow_private=True) == RED
    with pytest.raises(ImageFetchError, match=r"^more than 3 redirects$"):
        fetch(f"{ip_base}/hop4", allow_private=True)
    with pytest.raises(ImageFetchError, match=r"^the image URL answered HTTP 302$"):
        fetch(f"{ip_base}/no-location", allow_private=True)


def test_every_redirect_hop_is_checked_against_the_host_list(server):
    _, name_base, _ = server
    assert fetch(f"{name_base}/red.png", allow_private=True, allowed_hosts=("localhost",)) == RED
    with pytest.raises(ImageFetchError, match="'127.0.0.1' is not in IMAGE_URL_HOSTS"):
        fetch(f"{name_base}/to-ip", allow_private=True, allowed_hosts=("localhost",))


def test_host_patterns():
    assert _host_allowed("anything.org", ())
    assert _host_allowed("cdn.example.com", ("*.example.com",))
    assert _host_allowed("a.b.example.com", ("*.example.com",))
    assert not _host_allowed("example.com", ("*.example.com",))
    assert not _host_allowed("badexample.com", ("*.example.com",))
    assert _host_allowed("Images.Example.COM.", ("images.example.com",))
    # a pattern written fully qualified (trailing dot) is the same pattern
    assert _host_allowed("images.example.com", ("Images.Example.COM.",))
    assert _host_allowed("cdn.example.com", ("*.example.com.",))
    assert not _host_allowed("example.com", ("*.example.com.",))
    assert is_image_url("HTTPS://x/y.png") and not is_image_url("iVBORw0KGgo=")
    # surrounding whitespace on either side: a URL all the same (the fetch strips it)
    assert is_image_url(" https://x/y.png") and is_image_url("\n\thttp://x/y.png ")
    assert not is_image_url(" iVBORw0KGgo=") and not is_image_url("  ")


def test_gateway_imports_and_searches_with_image_urls(server, tmp_path):
    ip_base, *_ = server

    async def scenario(settings):
        store = make_store("edge", tmp_path / str(len(settings)))
        async with gateway_with_inference(store, settings=settings) as (svc, _):
            await svc.create_collection({"name": "pics", "vectorizers": {"clip": {
                "model": "clip", "text_fields": ["caption"], "image_fields": ["picture"]}}})
            out = await svc.import_objects("pics", {"objects": [
                {"id": "red", "properties": {"picture": f"{ip_base}/red.png"}},
                {"id": "blue", "properties": {"picture": f"{ip_base}/blue.png"}},
                {"id": "gone", "properties": {"caption": "gone", "picture": f"{ip_base}/missing.png"}},
                {"id": "idna", "properties": {"picture": "http://xn--a.com/a.png"}},  # these two were 500s
                {"id": "bracket", "properties": {"picture": "http://[::1/a.png"}},
            ]})
            hits = None
            if out["ok"]:
                hits = await svc.search("pics", {"near_image": {"image": f"{ip_base}/to-red"}, "limit": 1})
            return out, hits

    out, hits = asyncio.run(asyncio.wait_for(scenario({"image_url_allow_private": True}), 60))
    status = {r["id"]: r for r in out["results"]}
    assert status["red"]["status"] == status["blue"]["status"] == "ok"
    assert status["gone"]["status"] == "error" and "HTTP 404" in status["gone"]["error"]
    assert status["gone"]["field"] == "objects.2.properties.picture"
    for n, name in ((3, "idna"), (4, "bracket")):  # a URL that does not parse fails its object alone
        assert status[name]["status"] == "error"
        assert status[name]["field"] == f"objects.{n}.properties.picture"
        assert status[name]["error"].startswith("the image URL is not valid ("), status[name]
    assert hits["hits"][0]["id"] == "red"

    out, _ = asyncio.run(asyncio.wait_for(scenario({}), 60))  # default policy: loopback refused
    assert out["ok"] == 0
    assert all("IMAGE_URL_ALLOW_PRIVATE" in r["error"] for r in out["results"][:3])
