"""Hugging Face CLIP / SigLIP loader: fidelity against transformers itself, padding, truncation, precision."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from services.inference.device import choose_device
from services.inference.loaders import load_encoder
from services.inference.loaders.torchvision_compat import ensure_torchvision_importable
from services.inference.model_spec import ModelSpec, ModelSpecError, parse_model_properties
from tests.model_factories import (
    TINY_HF_CLIP_DIMS,
    build_bert_folder,
    build_hf_clip_folder,
    build_hf_siglip_folder,
    zip_folder,
)

ensure_torchvision_importable()
import torch  # noqa: E402
from transformers import AutoModel, AutoProcessor  # noqa: E402

TEXTS = ["a cat sits on the mat", "a dog", "the stock market crash!", "a photo of a red car and a blue house"]
CPU = choose_device(False)


def cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def images() -> list[Image.Image]:
    rng = np.random.RandomState(11)
    wide = Image.fromarray((rng.rand(40, 70, 3) * 255).astype("uint8"))
    tall = Image.fromarray((rng.rand(90, 33, 3) * 255).astype("uint8"))
    gray = Image.fromarray((rng.rand(64, 48) * 255).astype("uint8"), "L")
    return [wide, tall, gray]


def pooled(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_hf_clip_folder(tmp_path_factory.mktemp("hf_clip"))


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    return build_hf_siglip_folder(tmp_path_factory.mktemp("hf_siglip"))


@pytest.fixture(scope="module")
def clip(clip_dir, cache):
    spec = parse_model_properties({"type": "clip", "name": "tiny-clip", "localpath": str(clip_dir)})
    return load_encoder(spec, CPU, cache_dir=cache)


def library_outputs(folder, texts, imgs, padding):
    """transformers' output with the model's processor: (text_raw, text_embeds, image_raw, image_embeds)."""
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    inputs = processor(text=texts, images=[im.convert("RGB") for im in imgs], padding=padding,
                       truncation=True, max_length=model.config.text_config.max_position_embeddings,
                       return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
        text_raw = pooled(model.get_text_features(input_ids=inputs["input_ids"],
                                                  attention_mask=inputs.get("attention_mask")))
        image_raw = pooled(model.get_image_features(pixel_values=inputs["pixel_values"]))
    return text_raw.numpy(), out.text_embeds.numpy(), image_raw.numpy(), out.image_embeds.numpy()


def test_clip_info(clip):
    info = clip.info
    assert info.type == "clip" and info.dimensions == TINY_HF_CLIP_DIMS
    assert info.modalities == ("text", "image") and info.max_text_tokens == 77 and info.precision == "fp32"


def test_clip_matches_transformers(clip, clip_dir):
    imgs = images()
    text_raw, text_embeds, image_raw, image_embeds = library_outputs(clip_dir, TEXTS, imgs, padding=True)
    assert cos_rows(clip.encode_text(TEXTS, normalize=False), text_raw).min() >= 0.9999
    np.testing.assert_allclose(clip.encode_text(TEXTS, normalize=False), text_raw, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(clip.encode_text(TEXTS), text_embeds, rtol=1e-4, atol=1e-5)
    assert cos_rows(clip.encode_image(imgs, normalize=False), image_raw).min() >= 0.9999
    np.testing.assert_allclose(clip.encode_image(imgs), image_embeds, rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.linalg.norm(clip.encode_text(TEXTS, normalize=False), axis=1), 1.0, rtol=1e-3)


def test_clip_pads_to_the_longest_text(clip):
    prepared = clip.prepare_texts(["a", "a cat sits on the mat"])
    assert prepared["input_ids"].shape[1] < 77
    # padding does not change a text's vector
    alone = clip.encode_text(["a"])
    batch = clip.encode_text(["a", "a cat sits on the mat"])
    np.testing.assert_allclose(batch[:1], alone, rtol=1e-4, atol=1e-5)


def test_clip_long_text_is_truncated(clip):
    long = "a cat sits on the mat " * 60
    prepared = clip.prepare_texts([long])
    assert prepared["input_ids"].shape == (1, 77)
    a, b = clip.encode_text([long, long + " but then a dog appears"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_clip_from_zip_archive(tmp_path, clip_dir, cache, clip):
    archive = zip_folder(clip_dir, tmp_path / "clip.zip")
    enc = load_encoder(ModelSpec(name="zipped", type="clip", localpath=str(archive)), CPU, cache_dir=cache)
    np.testing.assert_allclose(enc.encode_text(TEXTS), clip.encode_text(TEXTS), rtol=1e-6, atol=1e-6)


def test_siglip_matches_transformers_with_max_length_padding(siglip_dir, cache):
    spec = ModelSpec(name="tiny-siglip", type="clip", localpath=str(siglip_dir))
    enc = load_encoder(spec, CPU, cache_dir=cache)
    assert enc.info.max_text_tokens == 16
    prepared = enc.prepare_texts(["a", "a cat"])
    assert prepared["input_ids"].shape == (2, 16)  # SigLIP pads every text to max_length
    imgs = images()
    text_raw, text_embeds, image_raw, image_embeds = library_outputs(siglip_dir, TEXTS, imgs,
                                                                     padding="max_length")
    assert cos_rows(enc.encode_text(TEXTS, normalize=False), text_raw).min() >= 0.9999
    np.testing.assert_allclose(enc.encode_text(TEXTS), text_embeds, rtol=1e-4, atol=1e-5)
    assert cos_rows(enc.encode_image(imgs, normalize=False), image_raw).min() >= 0.9999
    np.testing.assert_allclose(enc.encode_image(imgs), image_embeds, rtol=1e-4, atol=1e-5)
    long = "word " * 100
    a, b = enc.encode_text([long, long + "tail"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_preset_replaces_the_processor_settings(clip_dir, cache, clip):
    spec = ModelSpec(name="tiny-clip", type="clip", localpath=str(clip_dir), image_preprocessor="SigLIP")
    enc = load_encoder(spec, CPU, cache_dir=cache)
    cfg = enc.transform_cfg
    assert cfg.mean == (0.5, 0.5, 0.5) and cfg.std == (0.5, 0.5, 0.5) and cfg.resize_mode == "squash"
    assert cfg.size == 32  # from the model's processor
    solid = Image.new("RGB", (50, 20), (255, 0, 0))
    pixel = enc.prepare_images([solid])["pixel_values"][0, :, 5, 5]
    assert torch.allclose(pixel, torch.tensor([1.0, -1.0, -1.0]), atol=1e-5)
    imgs = images()
    assert cos_rows(enc.encode_image(imgs), clip.encode_image(imgs)).min() < 0.9999


def test_processor_settings_reproduce_the_processor(clip_dir, cache, clip):
    """Overriding only mean/std with the processor's own values rebuilds an equivalent transform."""
    from transformers import CLIPImageProcessor

    proc = CLIPImageProcessor.from_pretrained(clip_dir)
    spec = ModelSpec(name="tiny-clip", type="clip", localpath=str(clip_dir), mean=tuple(proc.image_mean),
                     std=tuple(proc.image_std))
    enc = load_encoder(spec, CPU, cache_dir=cache)
    assert enc.transform_cfg.resize_mode == "shortest" and enc.transform_cfg.interpolation == "bicubic"
    # (the processor and torchvision round an odd centre-crop offset differently, so use even ones)
    imgs = [images()[0], images()[2]]
    assert cos_rows(enc.encode_image(imgs), clip.encode_image(imgs)).min() >= 0.999


def test_bf16_on_cpu(clip_dir, cache, clip):
    enc = load_encoder(ModelSpec(name="tiny-clip", type="clip", localpath=str(clip_dir), precision="bf16"),
                       choose_device(False, precision="bf16"), cache_dir=cache)
    assert enc.info.precision == "bf16" and next(enc.model.parameters()).dtype == torch.bfloat16
    out = enc.encode_text(TEXTS)
    assert out.dtype == np.float32
    assert cos_rows(out, clip.encode_text(TEXTS)).min() >= 0.99
    imgs = images()
    assert cos_rows(enc.encode_image(imgs), clip.encode_image(imgs)).min() >= 0.99


def test_text_only_model_is_refused_naming_type(tmp_path, cache):
    bert = build_bert_folder(tmp_path / "bert")
    with pytest.raises(ModelSpecError, match="type 'clip'.*sentence_transformers"):
        load_encoder(ModelSpec(name="bert", type="clip", localpath=str(bert)), CPU, cache_dir=cache)


def test_dimensions_mismatch(clip_dir, cache):
    with pytest.raises(ModelSpecError, match="dimensions"):
        load_encoder(ModelSpec(name="tiny-clip", type="clip", localpath=str(clip_dir), dimensions=768), CPU,
                     cache_dir=cache)


def test_hub_name_from_the_offline_hub_cache(clip_dir, tmp_path, clip):
    from tests.model_factories import install_in_hub_cache

    cache_dir = tmp_path / "models"
    install_in_hub_cache(clip_dir, cache_dir / "hf", "polyvec-test/tiny-clip")
    enc = load_encoder(parse_model_properties({"type": "clip", "name": "polyvec-test/tiny-clip"}), CPU,
                       cache_dir=cache_dir)
    np.testing.assert_allclose(enc.encode_text(TEXTS), clip.encode_text(TEXTS), rtol=1e-6, atol=1e-6)
    imgs = images()
    np.testing.assert_allclose(enc.encode_image(imgs), clip.encode_image(imgs), rtol=1e-6, atol=1e-6)


def test_tokenizer_override(clip_dir, siglip_dir, cache, clip):
    """``tokenizer`` names another tokenizer (a folder or hub name); the model's own one is replaced."""
    spec = ModelSpec(name="tiny-clip", type="clip", localpath=str(clip_dir), tokenizer=str(clip_dir))
    same = load_encoder(spec, CPU, cache_dir=cache)
    np.testing.assert_allclose(same.encode_text(TEXTS), clip.encode_text(TEXTS), rtol=1e-6, atol=1e-6)
    other = load_encoder(ModelSpec(name="tiny-clip", type="clip", localpath=str(clip_dir),
                                   tokenizer=str(siglip_dir)), CPU, cache_dir=cache)
    assert type(other.tokenizer).__name__ != type(clip.tokenizer).__name__
    assert not np.allclose(other.encode_text(TEXTS), clip.encode_text(TEXTS), atol=1e-3)


def test_clip_images_prepared_one_by_one_merge_into_the_batch(clip):
    """What the batcher does with images prepared as they arrive: the merged parts are the batch."""
    imgs = images()[:3]
    merged = clip.merge_prepared_images([clip.prepare_images([im]) for im in imgs])
    whole = clip.prepare_images(imgs)
    assert clip.merges_prepared_images and merged.keys() == whole.keys()
    for key in whole:
        np.testing.assert_array_equal(merged[key].numpy(), whole[key].numpy())
