"""Long texts are cut before tokenizing (issue 7, defect 4): a huge text never stalls other callers.

The bound is ``TEXT_CHARS_PER_TOKEN x max_text_tokens`` characters (Encoder.max_text_chars), the same
for every loader; Meta reports it. The model reads at most ``max_text_tokens`` tokens anyway, so the
vector of a cut text equals the vector of the whole text truncated by the model's own tokenizer.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx
import numpy as np
import pytest

from protos import inference_pb2, inference_pb2_grpc
from services.inference.config import InferenceSettings
from services.inference.device import choose_device
from services.inference.loaders import load_encoder
from services.inference.loaders.base import TEXT_CHARS_PER_TOKEN, Encoder
from services.inference.main import start_servers
from services.inference.model_spec import ModelSpec, parse_model_properties
from services.inference.wire import unpack_vectors
from tests.fake_encoders import FakeEncoder
from tests.model_factories import (
    build_hf_clip_folder,
    build_open_clip_checkpoint,
    build_sentence_transformers_folder,
)

CPU = choose_device(False)
HUGE = 15 * 1024 * 1024
# ordinary prose: about five characters a token for the usual tokenizers
PROSE = ("the cat sits on the mat while a dog runs in the park and people walk by the river at night . "
         "a photo of a red car and a blue house , the stock market crash hit the bank . ")


def prose(chars: int) -> str:
    return (PROSE * (chars // len(PROSE) + 1))[:chars]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, Encoder]:
    root = tmp_path_factory.mktemp("text-bound")
    cache = root / "cache"
    tiny = build_open_clip_checkpoint(root / "open_clip")
    specs = {
        "open_clip": ModelSpec(name=str(tiny.config_path), type="open_clip",
                               localpath=str(tiny.checkpoint_path)),
        "hf_clip": parse_model_properties({"type": "clip", "name": "tiny-clip",
                                           "localpath": str(build_hf_clip_folder(root / "hf_clip"))}),
        "sentence_transformers": parse_model_properties(
            {"type": "sentence_transformers", "name": "tiny-st",
             "localpath": str(build_sentence_transformers_folder(root / "st" / "tiny-st"))}),
    }
    return {kind: load_encoder(spec, CPU, cache_dir=cache) for kind, spec in specs.items()}


class Recording:
    """Records the length of every text an encoder's tokenizer is given."""

    def __init__(self, encoder: Encoder) -> None:
        self.lengths: list[int] = []
        prepare = encoder.prepare_texts

        def recorded(texts):
            self.lengths.extend(len(t) for t in texts)
            return prepare(texts)

        encoder.prepare_texts = recorded  # type: ignore[method-assign]


@pytest.mark.parametrize("kind", ["open_clip", "hf_clip", "sentence_transformers"])
def test_every_loader_cuts_at_the_bound_and_the_vector_is_unchanged(encoders, kind):
    enc = encoders[kind]
    assert enc.max_text_chars == TEXT_CHARS_PER_TOKEN * enc.info.max_text_tokens > 0
    text = prose(20 * enc.max_text_chars)
    assert enc.cut_text(text) == text[:enc.max_text_chars]
    assert enc.cut_text("short text") == "short text"
    cut = enc.encode_text([text])  # cut before tokenizing
    whole = enc._finish(enc.forward_texts(enc.prepare_texts([text])), None)  # the tokenizer truncates
    np.testing.assert_allclose(cut, whole, rtol=1e-5, atol=1e-6)
    # and the cut really matters: a text shorter than the model's window changes the vector
    assert not np.allclose(enc.encode_text([text[:20]]), whole, atol=1e-4)


@pytest.mark.parametrize("kind", ["open_clip", "hf_clip", "sentence_transformers"])
def test_the_tokenizer_never_sees_more_than_the_bound(encoders, kind):
    enc = encoders[kind]
    seen = Recording(enc)
    try:
        enc.encode_text([prose(HUGE // 8), "one"])
    finally:
        del enc.prepare_texts  # the instance attribute goes, the class method is back
    assert max(seen.lengths) == enc.max_text_chars


def test_a_huge_text_does_not_stall_a_short_request_sent_right_after(encoders):
    """15 MB of text, then one word: the word's answer does not wait for 15 MB of tokenizing (which
    takes tens of seconds here), and the tokenizer only ever sees the cut text."""
    enc = encoders["sentence_transformers"]
    seen = Recording(enc)
    huge = prose(HUGE)
    settings = InferenceSettings(model="tiny", host="127.0.0.1", grpc_port=0, http_port=0,
                                 max_request_bytes=32 * 1024 * 1024).validate()

    async def main():
        running = await start_servers(enc, settings)
        channel = grpc.aio.insecure_channel(running.grpc_target, options=[
            ("grpc.max_send_message_length", -1)])
        stub = inference_pb2_grpc.InferenceStub(channel)
        try:
            long_call = asyncio.ensure_future(stub.Vectorize(inference_pb2.VectorizeRequest(texts=[huge])))
            await asyncio.sleep(0)
            start = time.perf_counter()
            short = await stub.Vectorize(inference_pb2.VectorizeRequest(texts=["word"]))
            short_s = time.perf_counter() - start
            long = await long_call
            async with httpx.AsyncClient(base_url=running.http_url, timeout=120) as client:
                over_http = (await client.post("/vectorize", json={"texts": [huge]})).json()
                meta = (await client.get("/meta")).json()
            grpc_meta = await stub.Meta(inference_pb2.MetaRequest())
        finally:
            await channel.close()
            await running.stop(grace=1)
        return short, short_s, long, over_http, meta, grpc_meta

    try:
        short, short_s, long, over_http, meta, grpc_meta = asyncio.run(asyncio.wait_for(main(), 300))
    finally:
        del enc.prepare_texts
    dims = enc.dimensions
    assert max(seen.lengths) == enc.max_text_chars  # the tokenizer saw the cut text, never 15 MB
    assert short_s < 10.0, short_s  # generous: tokenizing 15 MB takes 15-70 s on a 2-core machine
    expected = enc.encode_text([huge[:enc.max_text_chars]])[0]
    np.testing.assert_allclose(unpack_vectors(long.text_vectors, dims)[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(over_http["textVectors"][0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(unpack_vectors(short.text_vectors, dims)[0], enc.encode_text(["word"])[0],
                               rtol=1e-5, atol=1e-6)
    assert meta["max_text_chars"] == grpc_meta.max_text_chars == enc.max_text_chars
    assert meta["max_text_tokens"] == grpc_meta.max_text_tokens == enc.info.max_text_tokens


def test_the_fake_encoder_and_any_other_encoder_get_the_rule_from_the_base():
    enc = FakeEncoder()
    assert enc.max_text_chars == TEXT_CHARS_PER_TOKEN * 77
    assert enc.cut_text("x" * (enc.max_text_chars + 5)) == "x" * enc.max_text_chars
