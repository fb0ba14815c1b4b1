"""End to end: tiny real models loaded through the loaders, served over gRPC and HTTP, equal the
library's own output (cosine >= 0.9999), with normalisation as configured."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from protos import inference_pb2, inference_pb2_grpc
from services.inference.config import InferenceSettings
from services.inference.device import choose_device
from services.inference.loaders import load_encoder
from services.inference.loaders.torchvision_compat import ensure_torchvision_importable
from services.inference.main import start_servers
from services.inference.model_spec import parse_model_properties
from services.inference.wire import unpack_vectors
from tests.model_factories import (
    TINY_OPEN_CLIP_NAME,
    build_open_clip_checkpoint,
    build_sentence_transformers_folder,
)

TEXTS = [
    "a cat sits on the mat",
    "a photo of a red car and a blue house",
    "dog",
    "people walk by the river at night " * 3,
    "",
]


def cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def image_bytes() -> list[bytes]:
    rng = np.random.RandomState(3)
    out = []
    for (h, w), fmt in (((40, 70), "PNG"), ((90, 33), "JPEG"), ((64, 64), "PNG")):
        buf = io.BytesIO()
        Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")).save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


def settings() -> InferenceSettings:
    return InferenceSettings(
        model_properties="{}", host="127.0.0.1", grpc_port=0, http_port=0, batch_wait_ms=2, max_batch_size=4
    ).validate()


async def serve_and_query(encoder, texts: list[str], images: list[bytes], normalize: bool | None):
    """The same request over gRPC (concurrently split into single items too) and over HTTP."""
    running = await start_servers(encoder, settings())
    try:
        async with grpc.aio.insecure_channel(running.grpc_target) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            req = inference_pb2.VectorizeRequest(texts=texts, images=images)
            if normalize is not None:
                req.normalize = normalize
            whole = await stub.Vectorize(req)
            singles = await asyncio.gather(
                *(
                    stub.Vectorize(inference_pb2.VectorizeRequest(texts=[t], normalize=normalize))
                    for t in texts
                )
            )
        d = whole.dimensions
        grpc_text = unpack_vectors(whole.text_vectors, d)
        grpc_image = unpack_vectors(whole.image_vectors, d)
        single_text = np.concatenate([unpack_vectors(s.text_vectors, d) for s in singles])
        body = {"texts": texts, "images": [base64.b64encode(b).decode() for b in images]}
        if normalize is not None:
            body["normalize"] = normalize
        async with httpx.AsyncClient(base_url=running.http_url, timeout=60) as client:
            resp = await client.post("/vectorize", content=json.dumps(body))
        assert resp.status_code == 200, resp.text
        http_text = np.array(resp.json()["textVectors"], dtype=np.float32).reshape(len(texts), d)
        http_image = np.array(resp.json()["imageVectors"], dtype=np.float32).reshape(len(images), d)
        return grpc_text, grpc_image, single_text, http_text, http_image
    finally:
        await running.stop(grace=1)


def assert_same(served: np.ndarray, ref: np.ndarray, normalized: bool) -> None:
    assert served.shape == ref.shape
    assert cos_rows(served, ref).min() >= 0.9999
    norms = np.linalg.norm(served, axis=1)
    if normalized:
        np.testing.assert_allclose(norms, 1.0, atol=1e-4)
    else:
        np.testing.assert_allclose(norms, np.linalg.norm(ref, axis=1), rtol=1e-3)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("normalize", [None, False])
def test_open_clip_served_equals_open_clip(tmp_path_factory, cache, normalize):
    ensure_torchvision_importable()
    import open_clip
    import torch

    tiny = build_open_clip_checkpoint(tmp_path_factory.mktemp("oc"))
    spec = parse_model_properties(
        {"type": "open_clip", "name": str(tiny.config_path), "localpath": str(tiny.checkpoint_path)}
    )
    encoder = load_encoder(spec, choose_device(False), cache_dir=cache)
    images = image_bytes()
    gt, gi, st, ht, hi = asyncio.run(serve_and_query(encoder, TEXTS, images, normalize))

    open_clip.add_model_config(tiny.config_path)
    model, _, preprocess = open_clip.create_model_and_transforms(
        TINY_OPEN_CLIP_NAME, pretrained=str(tiny.checkpoint_path)
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer(TINY_OPEN_CLIP_NAME)
    do_norm = encoder.info.normalize if normalize is None else normalize
    pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
    with torch.no_grad():
        ref_t = model.encode_text(tokenizer(TEXTS), normalize=do_norm).numpy()
        ref_i = model.encode_image(torch.stack([preprocess(im) for im in pil]), normalize=do_norm).numpy()
    for served in (gt, st, ht):
        assert_same(served, ref_t, do_norm)
    for served in (gi, hi):
        assert_same(served, ref_i, do_norm)


def test_sentence_transformers_served_equals_library(tmp_path_factory, cache):
    from sentence_transformers import SentenceTransformer

    folder = build_sentence_transformers_folder(tmp_path_factory.mktemp("st") / "tiny-st")
    spec = parse_model_properties(
        {"type": "sentence_transformers", "name": "tiny-st", "localpath": str(folder)}
    )
    encoder = load_encoder(spec, choose_device(False), cache_dir=cache)
    gt, gi, st, ht, hi = asyncio.run(serve_and_query(encoder, TEXTS, [], None))
    ref = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_numpy=True)
    for served in (gt, st, ht):
        assert_same(served, ref, True)
    assert gi.shape[0] == 0 and hi.shape[0] == 0


def test_hf_clip_served_equals_transformers(tmp_path_factory, cache):
    ensure_torchvision_importable()
    import torch
    from transformers import AutoModel, AutoProcessor

    from tests.model_factories import build_hf_clip_folder

    folder = build_hf_clip_folder(tmp_path_factory.mktemp("hf_clip"))
    spec = parse_model_properties({"type": "clip", "name": "tiny-clip", "localpath": str(folder)})
    encoder = load_encoder(spec, choose_device(False), cache_dir=cache)
    images = image_bytes()
    gt, gi, st, ht, hi = asyncio.run(serve_and_query(encoder, TEXTS, images, None))

    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
    inputs = processor(text=TEXTS, images=pil, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    do_norm = encoder.info.normalize
    ref_t, ref_i = out.text_embeds.numpy(), out.image_embeds.numpy()  # CLIPModel's embeds are L2-normalised
    for served in (gt, st, ht):
        assert cos_rows(served, ref_t).min() >= 0.9999
    for served in (gi, hi):
        assert cos_rows(served, ref_i).min() >= 0.9999
    if do_norm:
        np.testing.assert_allclose(np.linalg.norm(gt, axis=1), 1.0, atol=1e-4)
