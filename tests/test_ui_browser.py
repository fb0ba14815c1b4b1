"""The search page (/ui) driven in real headless Chromium (Debian's, through Playwright) against a real
gateway and a real inference server with the deterministic test encoder (tests/ui_support.py).

Texts are bags of words and images colour histograms, so the expected hits are known: "red fruit" finds
the apple and the cherry, a blue picture finds the sea. Screenshots go to test-artifacts/ui/.
Without a browser these tests skip with how to install one; in CI (CI set) they fail instead.
"""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import urlparse

import httpx
import pytest

from tests.gateway_support import png_bytes
from tests.ui_support import ARTIFACTS, CHROMIUM_FLAGS, LiveGateway, chromium_path

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")

ITEMS = [("apple", "red", "red apple fruit", 1.2), ("leaf", "green", "green leaf plant", 3.0),
         ("sea", "blue", "blue sea water", 8.5), ("banana", "yellow", "yellow banana fruit", 0.5),
         ("night", "black", "black night sky", 9.0), ("snow", "white", "white snow winter", 4.0),
         ("cherry", "red", "red cherry fruit", 2.5)]
QUERIES = [{"_id": "q1", "text": "apple"}, {"_id": "q2", "text": "sea water"}, {"_id": "q3", "text": "fruit"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\tapple\t1\nq2\tsea\t1\nq3\tapple\t1\nq3\tbanana\t1\nq3\tcherry\t1\n"


@pytest.fixture(scope="module")
def browser_path() -> str:
    return chromium_path()


@pytest.fixture(scope="module")
def gateway(browser_path):
    with LiveGateway() as gw:
        client = httpx.Client(base_url=gw.url, timeout=60)
        r = client.post("/v1/collections", json={
            "name": "shop",
            "vectorizers": {"clip": {"model": "clip", "text_fields": ["title"], "image_fields": ["image"]},
                            "title": {"model": "clip", "text_fields": ["title"]}},
            "fields": {"colour": "keyword", "price": "float"}})
        assert r.status_code == 201, r.text
        r = client.post("/v1/collections/shop/objects", json={"objects": [
            {"id": i, "properties": {"title": t, "colour": c, "price": p,
                                     "image": base64.b64encode(png_bytes(c, 32)).decode()}}
            for i, c, t, p in ITEMS]})
        assert r.json()["ok"] == len(ITEMS), r.text
        yield gw


@pytest.fixture(scope="module")
def browser(browser_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        # Playwright gives every launch a fresh --user-data-dir
        b = p.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, gateway):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    pg.errors = []
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    pg.on("console", lambda msg: msg.type == "error" and pg.errors.append(msg.text))
    yield pg
    context.close()


def _wait(page, expression: str, timeout: float = 20.0) -> None:
    """Wait until ``expression`` is true in the page (polled from here: the page's Content-Security-Policy
    forbids the eval that Playwright's wait_for_function uses, and the tests keep that policy on)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => Boolean({expression})"):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)


def _open(page, url: str) -> None:
    page.goto(f"{url}/ui")
    _wait(page, "document.querySelector('#kind').options.length > 0")


def _ids(page, pane: str = "a") -> list[str]:
    return page.eval_on_selector_all(f"#results-{pane} .card", "cards => cards.map(c => c.dataset.id)")


def _search(page, pane_count: int = 1) -> None:
    page.evaluate("document.querySelectorAll('.grid').forEach(g => g.replaceChildren())")
    page.click("#search-btn")
    page.wait_for_selector("#results-a .card")
    if pane_count == 2:
        page.wait_for_selector("#results-b .card")


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_the_page_is_served_by_the_gateway_and_needs_nothing_else(page, gateway):
    origins = []
    page.on("request", lambda req: origins.append(urlparse(req.url).netloc or req.url.split(":")[0]))
    r = httpx.get(f"{gateway.url}/ui")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "script-src 'self'" in r.headers["content-security-policy"]
    _open(page, gateway.url)
    summary = page.text_content("#collection-summary")
    assert "shop: 7 objects" in summary and "vectors clip, title" in summary
    page.click("#collection-summary")
    details = page.text_content("#collection-details")
    assert "fake-clip" in details and "image (image)" in details and "colour" in details
    assert page.eval_on_selector_all("#kind option", "o => o.map(x => x.value)") == [
        "near_text", "bm25", "hybrid", "near_image"]
    assert set(origins) <= {urlparse(gateway.url).netloc, "data"}, origins
    assert page.errors == []


def test_each_text_kind_shows_its_hits_with_images(page, gateway):
    _open(page, gateway.url)
    page.fill("#query", "red fruit")
    _search(page)
    assert set(_ids(page)[:2]) == {"apple", "cherry"}
    stats = page.text_content("#results-a .stats")
    assert "took_ms" in stats and "end to end" in stats
    # the image field is shown as an image (base64 -> data: URL) that the browser decoded
    widths = page.eval_on_selector_all("#results-a .card-image", "imgs => imgs.map(i => i.naturalWidth)")
    assert widths and all(w == 32 for w in widths)
    assert page.get_attribute("#results-a .card-image", "src").startswith("data:image/png;base64,")
    _shot(page, "near_text")

    page.select_option("#kind", "bm25")
    page.fill("#query", "banana")
    _search(page)
    assert _ids(page) == ["banana"]

    page.select_option("#kind", "hybrid")
    page.fill("#query", "cherry fruit")
    page.fill("#alpha", "0.3")  # the slider
    assert page.text_content("#alpha-value") == "0.30"
    page.select_option("#fusion", "relative_score")
    _search(page)
    assert _ids(page)[0] == "cherry"
    assert "hybrid alpha 0.30 relative_score" in page.text_content("#results-a .pane-title")
    # the raw JSON of a hit, one click away
    page.click("#results-a .card .raw summary")
    raw = json.loads(page.text_content("#results-a .card .raw pre"))
    assert raw["id"] == "cherry" and raw["properties"]["title"] == "red cherry fruit"
    assert page.errors == []


def test_near_image_by_upload_drop_and_paste(page, gateway, tmp_path):
    _open(page, gateway.url)
    page.select_option("#kind", "near_image")
    assert page.is_visible("#image-drop") and not page.is_visible(".hybrid-only")
    blue = tmp_path / "blue.png"
    blue.write_bytes(png_bytes("blue", 24))
    page.set_input_files("#image-file", str(blue))  # choosing a file searches at once
    page.wait_for_selector("#results-a .card")
    assert _ids(page)[0] == "sea"
    assert page.is_visible("#image-preview")
    _shot(page, "near_image")
    # drag-and-drop and paste hand the page a File the same way a desktop does
    for event, colour, expected in (("drop", "green", "leaf"), ("paste", "yellow", "banana")):
        page.evaluate("document.querySelectorAll('.grid').forEach(g => g.replaceChildren())")
        page.evaluate("""([event, b64]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], 'q.png', {type: 'image/png'}));
            if (event === 'drop') {
              document.querySelector('#image-drop').dispatchEvent(
                new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
            } else {
              document.dispatchEvent(
                new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true}));
            }
        }""", [event, base64.b64encode(png_bytes(colour, 24)).decode()])
        page.wait_for_selector("#results-a .card")
        assert _ids(page)[0] == expected, event
    assert page.errors == []


def test_more_like_this_uses_the_stored_vector(page, gateway):
    _open(page, gateway.url)
    page.fill("#query", "green leaf")
    _search(page)
    requests = []
    page.on("request", lambda req: requests.append((req.method, req.url, req.post_data)))
    page.click("#results-a .card[data-id='snow'] .more-like-this")
    page.wait_for_selector("#mlt-chip:not([hidden])")
    _wait(page, "document.querySelector('#results-a .card')?.dataset.id === 'snow'")
    assert "more like snow" in page.text_content("#mlt-text")
    gets = [u for m, u, _ in requests if m == "GET" and "/objects/snow" in u]
    assert gets and "with_vectors=true" in gets[0]
    body = json.loads([d for m, u, d in requests if m == "POST" and u.endswith("/search")][-1])
    stored = httpx.get(f"{gateway.url}/v1/collections/shop/objects/snow",
                       params={"with_vectors": True}).json()
    assert body["near_vector"]["vector"] == stored["vectors"]["clip"] and body["vector"] == "clip"
    assert float(page.text_content("#results-a .card .score")) == pytest.approx(1.0, abs=1e-3)
    page.click("#mlt-clear")
    assert page.is_hidden("#mlt-chip")
    assert page.errors == []


def test_side_by_side_compare_highlights_the_overlap(page, gateway):
    _open(page, gateway.url)
    page.fill("#query", "red fruit")
    page.check("#compare")
    page.select_option("#kind", "hybrid")
    page.fill("#alpha", "0.3")
    page.select_option("#kind-b", "hybrid")
    page.fill("#alpha-b", "0.8")
    page.fill("#limit", "4")
    _search(page, pane_count=2)
    a, b = _ids(page, "a"), _ids(page, "b")
    both = set(a) & set(b)
    assert len(a) == 4 and len(b) == 4 and both
    assert page.text_content("#overlap-count") == str(len(both))
    highlighted = set(page.eval_on_selector_all("#results-a .card.both", "c => c.map(x => x.dataset.id)"))
    assert highlighted == both
    assert "alpha 0.30" in page.text_content("#results-a .pane-title")
    assert "alpha 0.80" in page.text_content("#results-b .pane-title")
    # two vectorizers side by side
    page.select_option("#kind", "near_text")
    page.select_option("#vector", "clip")
    page.select_option("#kind-b", "near_text")
    page.select_option("#vector-b", "title")
    _search(page, pane_count=2)
    assert set(_ids(page, "a")[:2]) == {"apple", "cherry"} == set(_ids(page, "b")[:2])
    _shot(page, "compare")
    assert page.errors == []


def test_a_bad_filter_shows_the_gateways_error_at_the_box(page, gateway):
    _open(page, gateway.url)
    page.fill("#query", "fruit")
    page.fill("#filter", '{"colour": "red", "weight": {"gt": 1}}')
    page.click("#search-btn")
    page.wait_for_selector("#filter-error:not([hidden])")
    message = page.text_content("#filter-error")
    assert message.startswith("filter.weight:") and "not a declared field" in message
    assert "invalid" in page.get_attribute("#filter", "class")
    _shot(page, "filter_error")
    page.fill("#filter", '{"price": {"lte": 2}')  # not JSON: said at the box, nothing sent
    page.click("#search-btn")
    _wait(page, "document.querySelector('#filter-error').textContent.includes('not valid JSON')")
    page.fill("#filter", '{"colour": "red", "price": {"lte": 2}}')
    _search(page)
    assert _ids(page) == ["apple"]
    assert page.is_hidden("#filter-error")


def test_api_key_round_trip(page, gateway):
    page.goto(f"{gateway.keyed_url}/ui")
    page.wait_for_selector("#key-dialog:not([hidden])")
    assert "401" in page.text_content("#key-message")
    page.fill("#key-input", "wrong-key")
    page.click("#key-save")
    _wait(page, "document.querySelector('#key-message').textContent.includes('refused')")
    assert page.is_visible("#key-dialog")
    sent = []
    page.on("request", lambda req: sent.append(req.headers.get("authorization")))
    page.fill("#key-input", LiveGateway.API_KEY)
    page.click("#key-save")
    _wait(page, "document.querySelector('#kind').options.length > 0")
    assert page.is_hidden("#key-dialog")
    assert page.evaluate("sessionStorage.getItem('polyvec.apiKey')") == LiveGateway.API_KEY
    page.fill("#query", "red fruit")
    _search(page)
    assert f"Bearer {LiveGateway.API_KEY}" in sent
    page.reload()  # sessionStorage keeps the key for the tab
    _wait(page, "document.querySelector('#kind').options.length > 0")
    assert page.is_hidden("#key-dialog")


def test_phone_width(browser, gateway):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    _open(page, gateway.url)
    page.fill("#query", "red fruit")
    page.check("#compare")
    page.select_option("#kind-b", "bm25")
    _search(page, pane_count=2)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    boxes = [page.eval_on_selector(f"#results-{p}", "e => e.getBoundingClientRect().toJSON()") for p in "ab"]
    assert boxes[1]["top"] >= boxes[0]["bottom"] - 1  # the two lists stack
    assert all(box["width"] <= 390 for box in boxes)
    _shot(page, "phone")
    context.close()


def test_evaluate_tab_shows_the_table_and_charts(page, gateway, tmp_path):
    queries, qrels = tmp_path / "queries.jsonl", tmp_path / "qrels.tsv"
    queries.write_text("\n".join(json.dumps(q) for q in QUERIES) + "\n")
    qrels.write_text(QRELS)
    _open(page, gateway.url)
    page.click("#tab-eval")
    page.set_input_files("#eval-queries", str(queries))
    page.set_input_files("#eval-qrels", str(qrels))
    page.fill("#eval-alphas", "0,0.5,1")
    page.fill("#eval-k", "1,3,5")
    page.click("#eval-run")
    page.wait_for_selector("#eval-table table")
    runs = page.eval_on_selector_all("#eval-table tbody tr td:first-child", "c => c.map(x => x.textContent)")
    assert runs[:2] == ["near_text", "bm25"] and "hybrid alpha=0.5 rrf" in runs and len(runs) == 8
    header = page.eval_on_selector_all("#eval-table th", "c => c.map(x => x.textContent)")
    assert {"R@1", "P@5", "MRR@10", "nDCG@10", "MAP", "AvgRecall", "p50 ms"} <= set(header)
    assert page.locator("#eval-charts figure.chart > svg").count() == 2
    assert "3 queries" in page.text_content("#eval-status")
    _shot(page, "evaluate")
    # a bad qrels file: the gateway's error, naming the line
    qrels.write_text("q1\tapple\tyes\nq2\tsea\tno\n")
    page.set_input_files("#eval-qrels", str(qrels))
    page.click("#eval-run")
    page.wait_for_selector("#eval-error:not([hidden])")
    assert "qrels: line 2: score" in page.text_content("#eval-error")
