"""One base64 decoder and one text rule for both services (issue 7, defect 12).

The rules themselves (services.input_rules) on a table of inputs, then the same table through both
services' real entry points: the inference service's HTTP /vectorize and the gateway's near_image /
near_text / bm25 / hybrid searches and imports (with the real inference server behind the gateway).
Each input is accepted by all of them, giving the same image, or refused by all of them with the same
message.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from gateway.errors import BadRequest
from services.inference.config import InferenceSettings
from services.inference.main import start_servers
from services.input_rules import InputError, check_text, decode_base64, find_invalid_text
from tests.fake_encoders import FakeEncoder
from tests.gateway_support import gateway_with_inference, make_store


def _png() -> bytes:
    """A small PNG whose base64 holds both '+' and '/' (so the URL-safe alphabet differs)."""
    rng = np.random.default_rng(7)
    for _ in range(50):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(buf, format="PNG")
        data = buf.getvalue()
        text = base64.b64encode(data).decode()
        if "+" in text and "/" in text and text.endswith("="):
            return data
    raise AssertionError("no suitable test image")


PNG = _png()
STD = base64.b64encode(PNG).decode()
URLSAFE = base64.urlsafe_b64encode(PNG).decode()

ACCEPTED: list[tuple[str, str]] = [
    ("standard", STD),
    ("unpadded", STD.rstrip("=")),
    ("url-safe", URLSAFE),
    ("url-safe-unpadded", URLSAFE.rstrip("=")),
    ("wrapped-76", "\n".join(STD[i:i + 76] for i in range(0, len(STD), 76))),
    ("wrapped-crlf", "\r\n".join(STD[i:i + 64] for i in range(0, len(STD), 64)) + "\r\n"),
    ("spaces-inside-and-around", "  " + " ".join(STD[i:i + 10] for i in range(0, len(STD), 10)) + "\n"),
    ("data-url", "data:image/png;base64," + STD),
    ("data-url-upper-case", "DATA:image/png;BASE64," + STD),
    ("data-url-params", "data:image/png;name=a.png;base64," + URLSAFE),
    ("data-url-no-type", "data:;base64," + STD),
]
REFUSED: list[tuple[str, str, str]] = [  # (id, value, the message)
    ("other-character", "iVBO*w0K", "invalid base64: the character '*' at data position 4"),
    ("non-ascii", "iVBOéw0K", "invalid base64: the character 'é' at data position 4"),
    ("length-4n+1", STD.rstrip("=")[:9], "invalid base64: 9 data characters is no base64 length (4n+1)"),
    ("padding-inside", STD[:8] + "=" + STD[8:],
     "invalid base64: '=' padding before the end at data position 8"),
    ("padding-too-much", STD.rstrip("=") + "===", "invalid base64: wrong '=' padding"),
    ("padding-on-whole-quads", "iVBORw0K==", "invalid base64: wrong '=' padding (2 after 8 data characters)"),
    ("blank", "  \n\t ", "is empty: no base64 data"),
    ("data-url-not-base64", "data:image/png," + STD, "a data: URL must be base64"),
    ("data-url-empty", "data:image/png;base64,", "is empty: no base64 data"),
]
TEXTS_ACCEPTED = ["plain text", "astral 😀 and CJK 日本語", "combining é and zero\u200bwidth", "\u0000nul"]
TEXTS_REFUSED = [  # (text, the message)
    ("abc\ud800def", "holds a lone surrogate (U+D800) at character 3: a text must be valid Unicode"),
    ("\udfff", "holds a lone surrogate (U+DFFF) at character 0: a text must be valid Unicode"),
    ("pair reversed \udc00\ud83d", "holds a lone surrogate (U+DC00) at character 14"),
]


# --------------------------------------------------------------------------------------------------
# the rules
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [v for _, v in ACCEPTED], ids=[i for i, _ in ACCEPTED])
def test_accepted_base64_decodes_to_the_image(value):
    assert decode_base64(value) == PNG


@pytest.mark.parametrize("value,message", [(v, m) for _, v, m in REFUSED], ids=[i for i, _, _ in REFUSED])
def test_refused_base64_says_why(value, message):
    with pytest.raises(InputError) as err:
        decode_base64(value)
    assert message in str(err.value)


def test_base64_of_every_length_round_trips_in_every_form():
    for n in range(0, 40):
        data = bytes(range(256))[:n] + b"\xfb\xff" * (n % 3)
        for encoded in (base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode()):
            for form in (encoded, encoded.rstrip("=")):
                if form:
                    assert decode_base64(form) == data, form
    with pytest.raises(InputError, match="must be a base64 string, not bytes"):
        decode_base64(b"QUJD")


def test_text_rule():
    for text in TEXTS_ACCEPTED:
        check_text(text)
    for text, message in TEXTS_REFUSED:
        with pytest.raises(InputError) as err:
            check_text(text)
        assert message in str(err.value)


# --------------------------------------------------------------------------------------------------
# both services agree
# --------------------------------------------------------------------------------------------------

COLLECTION = {"name": "rules", "vectorizers": {"clip": {"model": "clip", "text_fields": ["title"],
                                                        "image_fields": ["photo"]}},
              "bm25": {"fields": ["title"]}}


async def _inference_http(client: httpx.AsyncClient, **body: Any) -> tuple[str, Any]:
    # json.dumps escapes a lone surrogate as \\udXXX, as any JSON client sends it
    resp = await client.post("/vectorize", content=json.dumps(body).encode(),
                             headers={"content-type": "application/json"})
    if resp.status_code == 200:
        vectors = resp.json()
        return "ok", (vectors["imageVectors"] or vectors["textVectors"])[0]
    assert resp.status_code == 422, resp.text
    field, _, message = resp.json()["error"].partition(": ")
    return "refused", message


async def _gateway_search(svc, body: dict, field: str) -> tuple[str, Any]:
    try:
        await svc.search("rules", body)
    except BadRequest as exc:
        assert exc.field == field, (exc.field, exc.detail)
        return "refused", exc.detail
    return "ok", None


async def _gateway_import(svc, properties: dict, field: str) -> tuple[str, Any]:
    out = await svc.import_objects("rules", {"objects": [{"id": "probe", "properties": properties}]})
    result = out["results"][0]
    if result["status"] == "ok":
        got = await svc.get_object("rules", "probe", with_vectors=True)
        await svc.delete_object("rules", "probe")
        return "ok", got["vectors"]["clip"]
    assert result["field"] == field, result
    return "refused", result["error"]


def test_both_services_accept_and_refuse_the_same_inputs(tmp_path):
    settings = InferenceSettings(model="fake", host="127.0.0.1", grpc_port=0, http_port=0).validate()
    encoder = FakeEncoder(dims=32, name="fake-clip")

    async def scenario() -> list[tuple]:
        inference = await start_servers(encoder, settings)
        rows = []
        try:
            async with httpx.AsyncClient(base_url=inference.http_url, timeout=30) as http, \
                    gateway_with_inference(make_store("qdrant", tmp_path), dims=32) as (svc, _):
                await svc.create_collection(COLLECTION)
                for case, value in [(i, v) for i, v in ACCEPTED] + [(i, v) for i, v, _ in REFUSED]:
                    rows.append(("image", case, await _inference_http(http, images=[value]),
                                 await _gateway_search(svc, {"near_image": {"image": value}},
                                                       "near_image.image"),
                                 await _gateway_import(svc, {"photo": value}, "objects.0.properties.photo")))
                texts = [(t, None) for t in TEXTS_ACCEPTED] + TEXTS_REFUSED
                for text, _ in texts:
                    title = "objects.0.properties.title"
                    near_text = {"near_text": {"query": text}}
                    rows.append(("text", text, await _inference_http(http, texts=[text]),
                                 await _gateway_search(svc, near_text, "near_text.query"),
                                 await _gateway_search(svc, {"bm25": {"query": text}}, "bm25.query"),
                                 await _gateway_search(svc, {"hybrid": {"query": text}}, "hybrid.query"),
                                 await _gateway_import(svc, {"title": text}, title),
                                 await _gateway_import(svc, {"title": [text, "x"]}, title + ".0")))
        finally:
            await inference.stop(grace=1)
        return rows

    rows = asyncio.run(asyncio.wait_for(scenario(), 120))
    refused_images = {case: message for case, _, message in REFUSED}
    refused_texts = dict(TEXTS_REFUSED)
    for kind, case, inference_answer, *gateway_answers in rows:
        verdicts = {inference_answer[0], *(answer[0] for answer in gateway_answers)}
        assert len(verdicts) == 1, (kind, case, inference_answer, gateway_answers)
        expected = refused_images.get(case) if kind == "image" else refused_texts.get(case)
        if expected is None:
            assert verdicts == {"ok"}, (kind, case)
            if kind == "image":  # the same picture reached the model through both services
                np.testing.assert_allclose(inference_answer[1], gateway_answers[1][1], rtol=1e-5)
        else:
            messages = {inference_answer[1], *(answer[1] for answer in gateway_answers)}
            assert len(messages) == 1 and expected in messages.pop(), (kind, case, inference_answer,
                                                                        gateway_answers)


def test_find_invalid_text_names_the_path():
    assert find_invalid_text({"a": ["ok", {"b": "fine 😀"}], "n": 3}) is None
    where, message = find_invalid_text({"a": ["ok", {"b": "x\ud800"}]}, "objects.0.properties")
    assert where == "objects.0.properties.a.1.b" and "lone surrogate (U+D800) at character 1" in message
    where, message = find_invalid_text({"ok": 1, "bad\udc00name": 2})
    # the path escapes the bad name, so that the error text is valid Unicode itself (strict JSON parsers)
    assert where == "bad\\udc00name" and message.startswith("the name holds a lone surrogate (U+DC00)")
    deep: Any = "\ud800"
    for _ in range(5000):  # no recursion: a deep value is walked without a RecursionError
        deep = [deep]
    assert find_invalid_text(deep)[0] == ".".join(["0"] * 5000)


@pytest.mark.parametrize("kind", ["qdrant", "edge"])
def test_gateway_refuses_a_lone_surrogate_anywhere_in_an_object(kind, tmp_path):
    """Not only the texts it embeds: any property (the embedded store used to fail with a 503 that
    blamed the storage) and the id; the other objects of the import are written."""
    objects = [
        {"id": "a", "properties": {"title": "ok", "author": "x\ud800y"}},
        {"id": "b", "properties": {"title": "ok", "tags": ["fine", "\udfff"]}},
        {"id": "c", "properties": {"title": "ok", "meta": {"k\ud800": 1}}},
        {"id": "d\ud800", "properties": {"title": "ok"}},
        {"id": "good", "properties": {"title": "all fine 😀", "author": "ü"}},
    ]

    async def scenario():
        async with gateway_with_inference(make_store(kind, tmp_path), dims=8) as (svc, _):
            await svc.create_collection(COLLECTION)
            out = await svc.import_objects("rules", {"objects": objects})
            got = await svc.get_object("rules", "good")
            return out, got

    out, got = asyncio.run(asyncio.wait_for(scenario(), 120))
    fields = [(r["status"], r.get("field")) for r in out["results"]]
    assert fields == [("error", "objects.0.properties.author"), ("error", "objects.1.properties.tags.1"),
                      ("error", "objects.2.properties.meta.k\\ud800"), ("error", "objects.3.id"),
                      ("ok", None)], out
    assert all("lone surrogate" in r["error"] for r in out["results"][:4])
    assert got["properties"]["author"] == "ü"


@pytest.mark.parametrize("kind", ["qdrant", "edge"])
def test_gateway_refuses_a_lone_surrogate_in_filters_and_ids(kind, tmp_path):
    """A filter value or field name, or an id to delete: a 400 naming where, never a 500 from the
    UTF-8 encoder or a 503 from the embedded store; the same requests without it work."""
    bad = {"tag": {"eq": "x\ud800"}}

    async def scenario():
        async with gateway_with_inference(make_store(kind, tmp_path), dims=8) as (svc, _):
            await svc.create_collection(COLLECTION)
            one = {"id": "a", "properties": {"title": "t", "tag": "x"}}
            await svc.import_objects("rules", {"objects": [one]})
            calls = {
                "search": lambda f: svc.search("rules", {"near_text": {"query": "t"}, "filter": f}),
                "count": lambda f: svc.count_objects("rules", {"filter": f}),
                "scroll": lambda f: svc.scroll_objects("rules", {"filter": f}),
                "delete": lambda f: svc.delete_objects("rules", {"filter": f}),
            }
            refused = {}
            for name, call in calls.items():
                with pytest.raises(BadRequest) as err:
                    await call(bad)
                refused[name] = (err.value.field, err.value.detail)
            batch = await svc.search_batch("rules", {"searches": [{"bm25": {"query": "t"}, "filter": bad},
                                                                  {"bm25": {"query": "t"}}]})
            refused["batch"] = tuple(batch["results"][0].get(k) for k in ("field", "error"))
            batch_rest = batch["results"][1]
            with pytest.raises(BadRequest) as err:
                await call({"must": [{"ta\udc00g": {"eq": "x"}}]})
            refused["name"] = (err.value.field, err.value.detail)
            with pytest.raises(BadRequest) as err:
                await svc.delete_objects("rules", {"ids": ["b", "a\ud800"]})
            refused["ids"] = (err.value.field, err.value.detail)
            good = await svc.count_objects("rules", {"filter": {"tag": {"eq": "x"}}})
            deleted = await svc.delete_objects("rules", {"ids": ["a"]})
            return refused, good, deleted, batch_rest

    refused, good, deleted, batch_rest = asyncio.run(asyncio.wait_for(scenario(), 120))
    message = "holds a lone surrogate (U+D800) at character 1: a text must be valid Unicode"
    for name in ("search", "count", "scroll", "delete"):
        assert refused[name] == ("filter.tag.eq", message), (name, refused[name])
    assert refused["batch"][0] == "searches.0.filter.tag.eq" and message in refused["batch"][1], refused
    assert "hits" in batch_rest
    assert refused["name"][0] == "filter.must.0.ta\\udc00g" and "the name holds a lone surrogate" in \
        refused["name"][1]
    assert refused["ids"][0] == "ids.1" and message in refused["ids"][1], refused["ids"]
    assert good == {"count": 1} and deleted == {"deleted": 1}
