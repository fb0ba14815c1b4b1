"""sentence-transformers loader: folder, zip and URL through resolve_artifact; fidelity with encode()."""

from __future__ import annotations

import http.server
import threading
from functools import partial

import numpy as np
import pytest
from PIL import Image

from services.inference.device import choose_device
from services.inference.loaders import UnsupportedModality, load_encoder
from services.inference.loaders.torchvision_compat import ensure_torchvision_importable
from services.inference.model_spec import ModelSpec, ModelSpecError, parse_model_properties
from tests.model_factories import (
    TINY_BERT_DIMS,
    TINY_ST_MAX_SEQ_LENGTH,
    build_sentence_transformers_folder,
    build_sentence_transformers_zip,
)

ensure_torchvision_importable()
from sentence_transformers import SentenceTransformer  # noqa: E402

TEXTS = ["a cat sits on the mat", "a kitten on a rug", "the stock market crash hit the bank", "dog"]
CPU = choose_device(False)


def cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def st_dir(tmp_path_factory):
    return build_sentence_transformers_folder(tmp_path_factory.mktemp("st") / "tiny-st")


@pytest.fixture(scope="module")
def raw_st_dir(tmp_path_factory):
    """Without a Normalize module, so normalisation is the encoder's job."""
    return build_sentence_transformers_folder(tmp_path_factory.mktemp("st_raw") / "tiny-st-raw", seed=2,
                                              normalize=False)


@pytest.fixture(scope="module")
def st_zip(tmp_path_factory):
    return build_sentence_transformers_zip(tmp_path_factory.mktemp("st_zip"))


def test_folder_matches_library(st_dir, cache):
    enc = load_encoder(parse_model_properties({"type": "sentence_transformers", "localpath": str(st_dir)}),
                       CPU, cache_dir=cache)
    info = enc.info
    assert info.dimensions == TINY_BERT_DIMS and info.modalities == ("text",)
    assert info.type == "sentence_transformers" and info.max_text_tokens == TINY_ST_MAX_SEQ_LENGTH
    ref = SentenceTransformer(str(st_dir), device="cpu").encode(TEXTS, convert_to_numpy=True)
    ours = enc.encode_text(TEXTS)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), TINY_BERT_DIMS)
    assert cos_rows(ours, ref).min() >= 0.9999
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("normalize", [False, True])
def test_normalisation_as_configured(raw_st_dir, cache, normalize):
    enc = load_encoder(ModelSpec(name="raw", type="sentence_transformers", localpath=str(raw_st_dir),
                                 normalize=normalize), CPU, cache_dir=cache)
    ref = SentenceTransformer(str(raw_st_dir), device="cpu").encode(TEXTS, normalize_embeddings=normalize)
    ours = enc.encode_text(TEXTS)  # default follows spec.normalize
    assert cos_rows(ours, ref).min() >= 0.9999
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    norms = np.linalg.norm(ours, axis=1)
    assert np.allclose(norms, 1.0, rtol=1e-5) == normalize
    # a per-call override wins over the configured default
    flipped = enc.encode_text(TEXTS, normalize=not normalize)
    assert np.allclose(np.linalg.norm(flipped, axis=1), 1.0, rtol=1e-5) == (not normalize)


def test_two_step_equals_library_in_batches(st_dir, cache):
    enc = load_encoder(ModelSpec(name="st", type="sentence_transformers", localpath=str(st_dir)), CPU,
                       cache_dir=cache)
    prepared = enc.prepare_texts(TEXTS)
    assert "input_ids" in prepared and prepared["input_ids"].shape[0] == len(TEXTS)
    vectors = enc.forward_texts(prepared)
    ref = SentenceTransformer(str(st_dir), device="cpu").encode(TEXTS, batch_size=2)
    assert cos_rows(vectors, ref).min() >= 0.9999


def test_zip_through_resolve_artifact(st_zip, st_dir, cache):
    enc = load_encoder(ModelSpec(name="zipped", type="sentence_transformers", localpath=str(st_zip)), CPU,
                       cache_dir=cache)
    extracted = list((cache / "extracted").iterdir())
    assert extracted and any((p / "modules.json").is_file() for p in extracted)
    ref = SentenceTransformer(str(st_zip.parent / "tiny-st"), device="cpu").encode(TEXTS)
    assert cos_rows(enc.encode_text(TEXTS), ref).min() >= 0.9999


def test_zip_from_url_on_loopback(st_zip, tmp_path):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(st_zip.parent))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{st_zip.name}"
        spec = parse_model_properties({"type": "sentence_transformers", "name": "tiny", "url": url})
        enc = load_encoder(spec, CPU, cache_dir=tmp_path / "cache")
    finally:
        server.shutdown()
        server.server_close()
    ref = SentenceTransformer(str(st_zip.parent / "tiny-st"), device="cpu").encode(TEXTS)
    assert cos_rows(enc.encode_text(TEXTS), ref).min() >= 0.9999


def test_long_text_truncated_by_the_library(st_dir, cache):
    enc = load_encoder(ModelSpec(name="st", type="sentence_transformers", localpath=str(st_dir)), CPU,
                       cache_dir=cache)
    long = "a cat sits on the mat " * 50
    prepared = enc.prepare_texts([long])
    assert prepared["input_ids"].shape[1] == TINY_ST_MAX_SEQ_LENGTH
    a, b = enc.encode_text([long, long + " and the stock market crash"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    ref = SentenceTransformer(str(st_dir), device="cpu").encode([long])
    assert cos_rows(a[None], ref)[0] >= 0.9999
    assert enc.text_length(long) == TINY_ST_MAX_SEQ_LENGTH


def test_max_text_tokens_lowers_the_limit(st_dir, cache):
    enc = load_encoder(ModelSpec(name="st", type="sentence_transformers", localpath=str(st_dir),
                                 max_text_tokens=6), CPU, cache_dir=cache)
    assert enc.info.max_text_tokens == 6
    assert enc.prepare_texts(["a cat sits on the mat and a dog runs"])["input_ids"].shape[1] == 6


def test_prepare_texts_from_many_threads(st_dir, cache):
    """The batcher tokenises on several CPU threads at once; results must not mix or fail."""
    from concurrent.futures import ThreadPoolExecutor

    enc = load_encoder(ModelSpec(name="st", type="sentence_transformers", localpath=str(st_dir)), CPU,
                       cache_dir=cache)
    batches = [[f"{TEXTS[i % 4]} " * (1 + i % 5)] * (1 + i % 3) for i in range(40)]
    expected = [enc.prepare_texts(b)["input_ids"] for b in batches]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda b: enc.prepare_texts(b)["input_ids"], batches))
    assert all(bool((g == e).all()) and g.shape == e.shape for g, e in zip(got, expected, strict=True))


def test_fp16_choice_on_cpu_is_refused(st_dir, cache):
    from services.inference.device import DeviceChoice, DeviceError

    with pytest.raises(DeviceError, match="fp16"):
        load_encoder(ModelSpec(name="st", type="sentence_transformers", localpath=str(st_dir)),
                     DeviceChoice(device="cpu", precision="fp16"), cache_dir=cache)


def test_images_are_refused(st_dir, cache):
    enc = load_encoder(ModelSpec(name="st", type="sentence_transformers", localpath=str(st_dir)), CPU,
                       cache_dir=cache)
    with pytest.raises(UnsupportedModality, match="does not embed images"):
        enc.encode_image([Image.new("RGB", (8, 8))])


def test_clip_style_model_embeds_images_too(tmp_path, cache):
    from tests.model_factories import build_sentence_transformers_clip_folder

    folder = build_sentence_transformers_clip_folder(tmp_path / "st-clip")
    enc = load_encoder(ModelSpec(name="st-clip", type="sentence_transformers", localpath=str(folder)), CPU,
                       cache_dir=cache)
    assert enc.info.modalities == ("text", "image") and enc.info.dimensions == 16
    rng = np.random.RandomState(3)
    imgs = [Image.fromarray((rng.rand(40, 64, 3) * 255).astype("uint8")),
            Image.fromarray((rng.rand(50, 50) * 255).astype("uint8"), "L")]
    library = SentenceTransformer(str(folder), device="cpu")
    for normalize in (False, True):
        ref_i = library.encode([im.convert("RGB") for im in imgs], normalize_embeddings=normalize)
        ref_t = library.encode(TEXTS, normalize_embeddings=normalize)
        assert cos_rows(enc.encode_image(imgs, normalize=normalize), ref_i).min() >= 0.9999
        assert cos_rows(enc.encode_text(TEXTS, normalize=normalize), ref_t).min() >= 0.9999
        np.testing.assert_allclose(enc.encode_image(imgs, normalize=normalize), ref_i, rtol=1e-4, atol=1e-5)
    bf16 = load_encoder(ModelSpec(name="st-clip", type="sentence_transformers", localpath=str(folder),
                                  precision="bf16"), choose_device(False, precision="bf16"), cache_dir=cache)
    assert cos_rows(bf16.encode_image(imgs), enc.encode_image(imgs)).min() >= 0.99


def test_bf16_on_cpu(st_dir, cache):
    fp32 = load_encoder(ModelSpec(name="st", type="sentence_transformers", localpath=str(st_dir)), CPU,
                        cache_dir=cache)
    spec = ModelSpec(name="st", type="sentence_transformers", localpath=str(st_dir), precision="bf16")
    bf16 = load_encoder(spec, choose_device(False, precision="bf16"), cache_dir=cache)
    assert bf16.info.precision == "bf16"
    import torch

    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    out = bf16.encode_text(TEXTS)
    assert out.dtype == np.float32
    assert cos_rows(out, fp32.encode_text(TEXTS)).min() >= 0.99


def test_dimensions_mismatch_and_bad_type(st_dir, cache):
    with pytest.raises(ModelSpecError, match="dimensions is 384"):
        load_encoder(ModelSpec(name="st", type="sentence_transformers", localpath=str(st_dir),
                               dimensions=384), CPU, cache_dir=cache)
    with pytest.raises(ModelSpecError, match="type 'nope'"):
        load_encoder(ModelSpec(name="st", type="nope", localpath=str(st_dir)), CPU, cache_dir=cache)


def test_hub_name_from_the_offline_hub_cache(st_dir, tmp_path):
    """A bare hub name (no location) is resolved by the library from <cache_dir>/hf, offline."""
    from tests.model_factories import install_in_hub_cache

    cache_dir = tmp_path / "models"
    install_in_hub_cache(st_dir, cache_dir / "hf", "polyvec-test/tiny-st")
    spec = parse_model_properties({"type": "sentence_transformers", "name": "polyvec-test/tiny-st"})
    enc = load_encoder(spec, CPU, cache_dir=cache_dir)
    ref = SentenceTransformer(str(st_dir), device="cpu").encode(TEXTS)
    assert cos_rows(enc.encode_text(TEXTS), ref).min() >= 0.9999
