"""OpenCLIP loader: fidelity against open_clip itself, presets, overrides, precision, truncation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.inference.device import DeviceError, choose_device
from services.inference.loaders import load_encoder
from services.inference.loaders.open_clip_loader import OpenClipEncoder
from services.inference.loaders.preprocessors import PreprocessError, resolve_preprocess
from services.inference.loaders.torchvision_compat import ensure_torchvision_importable
from services.inference.model_spec import ModelSpec, ModelSpecError, parse_model_properties
from tests.model_factories import (
    TINY_OPEN_CLIP_CONFIG,
    TINY_OPEN_CLIP_DIMS,
    TINY_OPEN_CLIP_NAME,
    build_open_clip_checkpoint,
    build_open_clip_folder,
    zip_folder,
)

ensure_torchvision_importable()
import open_clip  # noqa: E402
import torch  # noqa: E402

TEXTS = ["a cat sits on the mat", "a dog runs in the park", "the stock market crash!", ""]
CPU = choose_device(False)


def cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def images() -> list[Image.Image]:
    rng = np.random.RandomState(7)
    wide = Image.fromarray((rng.rand(40, 70, 3) * 255).astype("uint8"))
    tall = Image.fromarray((rng.rand(90, 33, 3) * 255).astype("uint8"))
    rgba = Image.fromarray((rng.rand(50, 50, 4) * 255).astype("uint8"), "RGBA")
    gray = Image.fromarray((rng.rand(64, 48) * 255).astype("uint8"), "L")
    return [wide, tall, rgba, gray, wide.convert("P")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_open_clip_checkpoint(tmp_path_factory.mktemp("open_clip"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def encoder(tiny, cache) -> OpenClipEncoder:
    spec = ModelSpec(name=str(tiny.config_path), type="open_clip", localpath=str(tiny.checkpoint_path))
    return load_encoder(spec, CPU, cache_dir=cache)


@pytest.fixture(scope="module")
def reference(tiny):
    """What open_clip itself gives for the same architecture and checkpoint."""
    open_clip.add_model_config(tiny.config_path)
    model, _, preprocess = open_clip.create_model_and_transforms(
        TINY_OPEN_CLIP_NAME, pretrained=str(tiny.checkpoint_path))
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(TINY_OPEN_CLIP_NAME)


def ref_text(reference, texts, normalize):
    model, _, tokenizer = reference
    with torch.no_grad():
        return model.encode_text(tokenizer(texts), normalize=normalize).numpy()


def ref_image(reference, imgs, normalize, preprocess=None):
    model, default_pp, _ = reference
    pp = preprocess or default_pp
    with torch.no_grad():
        return model.encode_image(torch.stack([pp(im) for im in imgs]), normalize=normalize).numpy()


def test_info(encoder, tiny):
    info = encoder.info
    assert info.dimensions == TINY_OPEN_CLIP_DIMS == tiny.dims
    assert info.modalities == ("text", "image") and info.type == "open_clip"
    assert info.device == "cpu" and info.precision == "fp32" and info.normalize is True
    assert info.max_text_tokens == 77


@pytest.mark.parametrize("normalize", [False, True])
def test_text_matches_open_clip(encoder, reference, normalize):
    ours = encoder.encode_text(TEXTS, normalize=normalize)
    ref = ref_text(reference, TEXTS, normalize)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), TINY_OPEN_CLIP_DIMS)
    assert cos_rows(ours, ref).min() >= 0.9999
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    norms = np.linalg.norm(ours, axis=1)
    if normalize:
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    else:
        assert not np.allclose(norms, 1.0, rtol=1e-3)
    assert cos_rows(ours[:1], ours[1:2])[0] < 0.999  # different texts, different vectors


@pytest.mark.parametrize("normalize", [False, True])
def test_images_match_open_clip(encoder, reference, normalize):
    imgs = images()
    ours = encoder.encode_image(imgs, normalize=normalize)
    ref = ref_image(reference, [im.convert("RGB") for im in imgs], normalize)
    assert ours.shape == (len(imgs), TINY_OPEN_CLIP_DIMS)
    assert cos_rows(ours, ref).min() >= 0.9999


def test_default_normalisation_follows_spec(tiny, cache, encoder):
    spec = ModelSpec(name=str(tiny.config_path), type="open_clip", localpath=str(tiny.checkpoint_path),
                     normalize=False)
    raw = load_encoder(spec, CPU, cache_dir=cache)
    assert raw.info.normalize is False
    vectors = raw.encode_text(TEXTS[:2])
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-3)
    np.testing.assert_allclose(raw.encode_text(TEXTS[:2], normalize=True), encoder.encode_text(TEXTS[:2]),
                               rtol=1e-5, atol=1e-6)


def test_two_step_equals_one_step(encoder):
    prepared = encoder.prepare_texts(TEXTS)
    np.testing.assert_allclose(encoder.forward_texts(prepared), encoder.encode_text(TEXTS, normalize=False),
                               rtol=1e-6, atol=1e-6)
    imgs = images()[:2]
    np.testing.assert_allclose(encoder.forward_images(encoder.prepare_images(imgs)),
                               encoder.encode_image(imgs, normalize=False), rtol=1e-6, atol=1e-6)


def test_weights_come_from_the_checkpoint(tmp_path, cache, encoder):
    other = build_open_clip_checkpoint(tmp_path, seed=1)
    spec = ModelSpec(name=str(other.config_path), type="open_clip", localpath=str(other.checkpoint_path))
    vectors = load_encoder(spec, CPU, cache_dir=cache).encode_text(TEXTS[:2])
    assert cos_rows(vectors, encoder.encode_text(TEXTS[:2])).max() < 0.99


def test_long_text_is_truncated_like_open_clip(encoder, reference):
    long = " ".join(["word"] * 300)
    a, b = encoder.encode_text([long, long + " and a completely different ending"])
    assert np.allclose(a, b, atol=1e-6)  # the tail past 77 tokens is cut
    assert cos_rows(a[None], ref_text(reference, [long], True))[0] >= 0.9999
    assert encoder.text_length(long) == 77
    assert encoder.text_length("a cat") < encoder.text_length("a cat " * 5)


def test_local_dir_folder_uses_its_preprocess_cfg(tmp_path, cache):
    folder = build_open_clip_folder(tmp_path / "folder")
    enc = load_encoder(ModelSpec(name="tiny", type="open_clip", localpath=str(folder)), CPU, cache_dir=cache)
    assert enc.preprocess.mean == (0.5, 0.5, 0.5) and enc.preprocess.resize_mode == "squash"
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    imgs = images()
    with torch.no_grad():
        ref_t = model.eval().encode_text(tokenizer(TEXTS)).numpy()
        ref_i = model.encode_image(torch.stack([preprocess(im.convert("RGB")) for im in imgs])).numpy()
    assert cos_rows(enc.encode_text(TEXTS, normalize=False), ref_t).min() >= 0.9999
    assert cos_rows(enc.encode_image(imgs, normalize=False), ref_i).min() >= 0.9999


def test_zipped_folder_through_resolve_artifact(tmp_path, cache):
    folder = build_open_clip_folder(tmp_path / "folder", seed=3)
    archive = zip_folder(folder, tmp_path / "model.zip")
    from_zip = load_encoder(ModelSpec(name="tiny", type="open_clip", localpath=str(archive)), CPU,
                            cache_dir=cache)
    from_dir = load_encoder(ModelSpec(name="tiny", type="open_clip", localpath=str(folder)), CPU,
                            cache_dir=cache)
    np.testing.assert_allclose(from_zip.encode_text(TEXTS), from_dir.encode_text(TEXTS), rtol=1e-6, atol=1e-6)


def test_folder_with_architecture_config_and_checkpoint(tmp_path, cache, encoder):
    arts = build_open_clip_checkpoint(tmp_path / "bundle", name="polyvec-bundled-arch")
    spec = parse_model_properties({"type": "open_clip", "name": "polyvec-bundled-arch",
                                   "localpath": str(arts.config_path.parent)})
    enc = load_encoder(spec, CPU, cache_dir=cache)
    np.testing.assert_allclose(enc.encode_text(TEXTS), encoder.encode_text(TEXTS), rtol=1e-5, atol=1e-6)
    # one config in the folder is used whatever the name; with several, the name must pick one
    (arts.config_path.parent / "other-arch.json").write_text(json.dumps(TINY_OPEN_CLIP_CONFIG))
    wrong = dataclasses.replace(spec, name="no-such-arch")
    with pytest.raises(ModelSpecError, match="name 'no-such-arch' matches none"):
        load_encoder(wrong, CPU, cache_dir=cache)


def test_config_in_open_clip_config_format(tmp_path, cache, encoder, tiny):
    config = tmp_path / "my-arch.json"
    config.write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP_CONFIG,
                                  "preprocess_cfg": {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}}))
    enc = load_encoder(ModelSpec(name=str(config), type="open_clip", localpath=str(tiny.checkpoint_path)),
                       CPU, cache_dir=cache)
    assert enc.preprocess.mean == (0.1, 0.2, 0.3) and enc.preprocess.std == (0.4, 0.5, 0.6)
    np.testing.assert_allclose(enc.encode_text(TEXTS), encoder.encode_text(TEXTS), rtol=1e-5, atol=1e-6)


def test_unknown_architecture_and_missing_weights_are_refused(cache, tiny):
    with pytest.raises(ModelSpecError, match="name 'ViT-Nope-99'"):
        load_encoder(ModelSpec(name="ViT-Nope-99", type="open_clip", localpath=str(tiny.checkpoint_path)),
                     CPU, cache_dir=cache)
    with pytest.raises(ModelSpecError, match="no weights"):
        load_encoder(ModelSpec(name=str(tiny.config_path), type="open_clip"), CPU, cache_dir=cache)


def test_dimensions_mismatch_is_refused(tiny, cache):
    spec = ModelSpec(name=str(tiny.config_path), type="open_clip", localpath=str(tiny.checkpoint_path),
                     dimensions=512)
    with pytest.raises(ModelSpecError, match="dimensions is 512 .* produces 16"):
        load_encoder(spec, CPU, cache_dir=cache)


# --- presets, checked against open_clip's own pretrained configurations -----------------------------

PRESET_SOURCES = {  # preset -> a pretrained tag open_clip ships with that preprocessing
    "OpenCLIP": ("ViT-B-32", "laion2b_s34b_b79k"),
    "OpenAI": ("ViT-B-32", "openai"),
    "SigLIP": ("ViT-B-16-SigLIP", "webli"),
    "MobileCLIP": ("MobileCLIP-S1", "datacompdr"),
    "CLIPA": ("ViT-L-14-CLIPA", "datacomp1b"),
}


@pytest.mark.parametrize("preset", sorted(PRESET_SOURCES))
def test_preset_matches_open_clip_pretrained_config(preset):
    expected = open_clip.get_pretrained_cfg(*PRESET_SOURCES[preset])
    cfg = resolve_preprocess({"size": 224}, image_preprocessor=preset)
    assert cfg.mean == pytest.approx(tuple(expected["mean"]))
    assert cfg.std == pytest.approx(tuple(expected["std"]))
    assert cfg.interpolation == expected["interpolation"]
    assert cfg.resize_mode == expected["resize_mode"]


def test_siglip_preset_mean_is_half():
    cfg = resolve_preprocess(None, image_preprocessor="siglip")
    assert cfg.mean == (0.5, 0.5, 0.5) and cfg.std == (0.5, 0.5, 0.5) and cfg.resize_mode == "squash"


@pytest.mark.parametrize("preset", sorted(PRESET_SOURCES))
def test_preset_images_match_open_clip_with_same_settings(preset, tiny, cache, reference):
    spec = ModelSpec(name=str(tiny.config_path), type="open_clip", localpath=str(tiny.checkpoint_path),
                     image_preprocessor=preset)
    enc = load_encoder(spec, CPU, cache_dir=cache)
    expected = open_clip.get_pretrained_cfg(*PRESET_SOURCES[preset])
    _, _, lib_pp = open_clip.create_model_and_transforms(
        TINY_OPEN_CLIP_NAME, pretrained=str(tiny.checkpoint_path), image_mean=expected["mean"],
        image_std=expected["std"], image_interpolation=expected["interpolation"],
        image_resize_mode=expected["resize_mode"])
    imgs = [im.convert("RGB") for im in images()]
    ours = enc.prepare_images(imgs)
    theirs = torch.stack([lib_pp(im) for im in imgs])
    assert ours.shape == theirs.shape == (len(imgs), 3, 32, 32)
    assert torch.allclose(ours, theirs, atol=1e-5)
    ref = ref_image(reference, imgs, True, preprocess=lib_pp)
    assert cos_rows(enc.encode_image(imgs), ref).min() >= 0.9999


def test_preset_changes_the_vectors(encoder, tiny, cache):
    spec = ModelSpec(name=str(tiny.config_path), type="open_clip", localpath=str(tiny.checkpoint_path),
                     image_preprocessor="MobileCLIP")
    other = load_encoder(spec, CPU, cache_dir=cache)
    imgs = images()[:2]
    assert cos_rows(other.encode_image(imgs), encoder.encode_image(imgs)).min() < 0.9999


def test_explicit_mean_std_size_win_over_the_preset(tiny, cache):
    spec = ModelSpec(name=str(tiny.config_path), type="open_clip", localpath=str(tiny.checkpoint_path),
                     image_preprocessor="SigLIP", mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1), size=48)
    enc = load_encoder(spec, CPU, cache_dir=cache)
    pp = enc.preprocess
    assert (pp.mean, pp.std, pp.size) == ((0.1, 0.2, 0.3), (0.3, 0.2, 0.1), 48)
    assert pp.interpolation == "bicubic" and pp.resize_mode == "squash"  # the rest still from the preset
    batch = enc.prepare_images(images()[:1])
    assert tuple(batch.shape) == (1, 3, 48, 48)
    solid = Image.new("RGB", (10, 10), (255, 0, 128))
    pixel = enc.prepare_images([solid])[0, :, 0, 0]
    rgb = torch.tensor([1.0, 0.0, 128 / 255])
    expected = (rgb - torch.tensor([0.1, 0.2, 0.3])) / torch.tensor([0.3, 0.2, 0.1])
    assert torch.allclose(pixel, expected, atol=1e-5)


def test_unknown_preset_names_the_key():
    with pytest.raises(PreprocessError, match="imagePreprocessor 'Fancy'"):
        resolve_preprocess(None, image_preprocessor="Fancy")
    with pytest.raises(PreprocessError, match="mean"):
        resolve_preprocess(None, mean=(0.1, 0.2))


# --- tokenizer override, jit, precision ------------------------------------------------------------

def test_tokenizer_override(tmp_path, tiny, cache, encoder):
    config = dict(TINY_OPEN_CLIP_CONFIG)
    config["text_cfg"] = {**config["text_cfg"], "tokenizer_kwargs": {"clean": "canonicalize"}}
    path = tmp_path / "polyvec-canonical-tok.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    spec = ModelSpec(name=str(tiny.config_path), type="open_clip", localpath=str(tiny.checkpoint_path),
                     tokenizer="polyvec-canonical-tok")
    enc = load_encoder(spec, CPU, cache_dir=cache)
    # the canonicalizing tokenizer drops punctuation; the default one keeps it
    a, b = enc.encode_text(["a cat!!!", "a cat"])
    assert np.allclose(a, b, atol=1e-6)
    a0, b0 = encoder.encode_text(["a cat!!!", "a cat"])
    assert not np.allclose(a0, b0, atol=1e-4)
    # the tokenizer may also be named by the config file's path
    by_path = load_encoder(dataclasses.replace(spec, tokenizer=str(path)), CPU, cache_dir=cache)
    np.testing.assert_allclose(by_path.encode_text(["a cat!!!"]), a[None], atol=1e-6)


def test_bad_config_files_name_the_key(tmp_path, tiny, cache):
    ckpt = str(tiny.checkpoint_path)
    missing = ModelSpec(name=str(tmp_path / "nope.json"), type="open_clip", localpath=ckpt)
    with pytest.raises(ModelSpecError, match="name .*nope.json.* no such file"):
        load_encoder(missing, CPU, cache_dir=cache)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"embed_dim": 16}))
    with pytest.raises(ModelSpecError, match="tokenizer .*bad.json.* needs the keys embed_dim"):
        spec = ModelSpec(name=str(tiny.config_path), type="open_clip", localpath=ckpt, tokenizer=str(bad))
        load_encoder(spec, CPU, cache_dir=cache)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_jit(tiny, cache, encoder):
    spec = ModelSpec(name=str(tiny.config_path), type="open_clip", localpath=str(tiny.checkpoint_path),
                     jit=True)
    enc = load_encoder(spec, CPU, cache_dir=cache)
    assert isinstance(enc.model, torch.jit.ScriptModule)
    assert cos_rows(enc.encode_text(TEXTS), encoder.encode_text(TEXTS)).min() >= 0.9999
    imgs = images()[:2]
    assert cos_rows(enc.encode_image(imgs), encoder.encode_image(imgs)).min() >= 0.9999


def test_fp16_on_cpu_is_refused():
    with pytest.raises(DeviceError, match="fp16"):
        choose_device(False, precision="fp16")


def test_bf16_on_cpu(tiny, cache, encoder):
    spec = ModelSpec(name=str(tiny.config_path), type="open_clip", localpath=str(tiny.checkpoint_path),
                     precision="bf16")
    enc = load_encoder(spec, choose_device(False, precision="bf16"), cache_dir=cache)
    assert enc.info.precision == "bf16"
    assert enc.model.visual.conv1.weight.dtype == torch.bfloat16
    text = enc.encode_text(TEXTS)
    assert text.dtype == np.float32
    assert cos_rows(text, encoder.encode_text(TEXTS)).min() >= 0.99
    imgs = images()
    assert cos_rows(enc.encode_image(imgs), encoder.encode_image(imgs)).min() >= 0.99


@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [32, (24, 40)])
def test_transform_equals_open_clip_image_transform(resize_mode, interpolation, size):
    from services.inference.loaders.preprocessors import build_transform

    base = {"size": size, "resize_mode": resize_mode, "interpolation": interpolation}
    cfg = resolve_preprocess(base, image_preprocessor=None)
    ours = build_transform(cfg)
    theirs = open_clip.image_transform(size, is_train=False, mean=cfg.mean, std=cfg.std,
                                       interpolation=interpolation, resize_mode=resize_mode)
    for im in images():
        rgb = im.convert("RGB")
        a, b = ours(rgb), theirs(rgb)
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5)


def test_hf_hub_name_from_the_offline_hub_cache(tmp_path):
    """``hf-hub:ORG/NAME`` is resolved by open_clip from <cache_dir>/hf (offline), config and weights."""
    from tests.model_factories import install_in_hub_cache

    folder = build_open_clip_folder(tmp_path / "folder", seed=5)
    cache_dir = tmp_path / "models"
    install_in_hub_cache(folder, cache_dir / "hf", "polyvec-test/tiny-open-clip")
    spec = parse_model_properties({"type": "open_clip", "name": "hf-hub:polyvec-test/tiny-open-clip"})
    enc = load_encoder(spec, CPU, cache_dir=cache_dir)
    local = load_encoder(ModelSpec(name="tiny", type="open_clip", localpath=str(folder)), CPU,
                         cache_dir=tmp_path / "other")
    assert enc.preprocess == local.preprocess and enc.preprocess.mean == (0.5, 0.5, 0.5)
    np.testing.assert_allclose(enc.encode_text(TEXTS), local.encode_text(TEXTS), rtol=1e-6, atol=1e-6)
    imgs = images()
    np.testing.assert_allclose(enc.encode_image(imgs), local.encode_image(imgs), rtol=1e-6, atol=1e-6)


def test_images_prepared_one_by_one_merge_into_the_batch(encoder):
    """What the batcher does with images prepared as they arrive: the merged parts are the batch."""
    imgs = images()[:3]
    merged = encoder.merge_prepared_images([encoder.prepare_images([im]) for im in imgs])
    assert encoder.merges_prepared_images
    np.testing.assert_array_equal(merged.numpy(), encoder.prepare_images(imgs).numpy())
