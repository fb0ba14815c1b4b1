"""SPLADE weights from a transformers masked LM, with the vocabulary head run on real tokens only.

On a small masked LM the vocabulary head costs far more than the encoder (SPLADE-tiny: a 128 x 30,522
projection per token against two 128-wide layers), and its logits are the largest tensor of the pass
(batch x longest x vocabulary floats: 176 MB for 32 texts of 45 tokens). Running the whole model on a
padded batch computes that projection for every padded position and writes the whole tensor out, so a
batch of texts of mixed lengths cost more per text than the texts one at a time.

So :class:`PooledMaskedLM` runs the encoder on the padded batch (cheap), takes the hidden states of the
real tokens only (``attention_mask``), and runs the head on them in chunks of whole texts of at most
``chunk_tokens`` rows, max-pooling each text's rows as soon as its logits exist. No padded position's
logits are computed and no (batch, longest, vocabulary) tensor is made. Where the head is taken apart
down to its vocabulary layer (BERT, DistilBERT), that layer's bias is added once per text after pooling
instead of to every token's logits. The result is
``log(1 + relu(max over the text's real tokens of the logits))``: the value the full logits give with
padded positions counted as 0 (:meth:`SparseHead.weights <.artifact_encoder.SparseHead.weights>`).

:func:`split_masked_lm` knows where the encoder ends and the head starts for the usual masked-LM
classes (BERT's ``cls``, RoBERTa-style ``lm_head``, DistilBERT's vocabulary layers); for any other
class it returns None and the caller runs the whole model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

#: rows (real tokens, whole texts) the vocabulary head runs on at once: big enough that the head's
#: weights are read once for many tokens, small enough that one chunk's logits (rows x vocabulary
#: floats: 16 MB for SPLADE-tiny) stay far below a padded batch's
CHUNK_TOKENS = 128

_DISTILBERT_HEAD = ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")


class MaskedLMParts(NamedTuple):
    """A masked LM taken apart for :class:`PooledMaskedLM`."""

    encoder: Any
    #: hidden states -> logits; without ``vocab_bias`` when that is given
    head: Callable[[Any], Any]
    #: the vocabulary layer's bias, added to each text's pooled maximum instead of to every token's
    #: logits (the maximum of x + b is the maximum of x, plus b; rounding is monotonic, so this is exact
    #: up to the matrix product's own rounding). Adding it in the product writes it into the whole
    #: (tokens, vocabulary) output first: ~18% of SPLADE-tiny's CPU time
    vocab_bias: Any = None


def split_masked_lm(model: Any) -> MaskedLMParts | None:
    """The encoder and vocabulary head of a transformers masked LM, or None when its class is not one
    whose head is known. BERT's and DistilBERT's heads are taken apart down to their vocabulary layer,
    whose bias is then added after pooling; other known heads run whole on the real tokens."""
    import torch.nn.functional as F  # noqa: N812 - the usual name

    base = getattr(model, "base_model", None)
    if base is None or base is model:
        return None
    head = getattr(model, "cls", None)  # BERT and its relatives (BertOnlyMLMHead)
    predictions: Any = getattr(head, "predictions", None)  # BertLMPredictionHead: transform, then decoder
    decoder: Any = getattr(predictions, "decoder", None)
    if callable(getattr(predictions, "transform", None)) and _biased_linear(decoder):
        def bert_head(hidden: Any) -> Any:
            return F.linear(predictions.transform(hidden), decoder.weight)
        return MaskedLMParts(base, bert_head, decoder.bias)
    if head is None:
        head = getattr(model, "lm_head", None)  # RoBERTa, XLM-R, CamemBERT, MPNet, ...
    if head is None and all(hasattr(model, name) for name in _DISTILBERT_HEAD):
        projector = model.vocab_projector
        biased = _biased_linear(projector)

        def distilbert_head(hidden: Any) -> Any:
            hidden = model.vocab_layer_norm(model.activation(model.vocab_transform(hidden)))
            return F.linear(hidden, projector.weight) if biased else projector(hidden)
        return MaskedLMParts(base, distilbert_head, projector.bias if biased else None)
    if head is None or not callable(head):
        return None
    return MaskedLMParts(base, head)


def _biased_linear(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) and module.bias is not None


def padded_token_cost(model: Any) -> float:
    """What a padded position costs a masked LM run by :class:`PooledMaskedLM`, as a share of a real
    token: padded positions go through the encoder's layers only, real tokens through those and the
    vocabulary head, and a layer's multiply-adds per position are its weights. So the share is the
    encoder's weights (its embedding tables excluded: a lookup) over those plus the head's (SPLADE-tiny:
    0.39M / (0.39M + 3.92M) = 0.09). Attention's cost, which grows with the batch's longest text, is left
    out: small next to the layers for the short texts this matters for. 1.0 when the parts are unknown."""
    prefix = getattr(model, "base_model_prefix", "")
    if not prefix or getattr(model, prefix, None) is None:
        return 1.0
    encoder = head = 0
    # tied weights (the head's vocabulary matrix is often the embedding table) count where each is used
    for name, param in model.named_parameters(remove_duplicate=False):
        if not name.startswith(prefix + "."):
            head += param.numel()
        elif not name.startswith(f"{prefix}.embeddings."):
            encoder += param.numel()
    if not encoder or not head:
        return 1.0
    return encoder / (encoder + head)


class PooledMaskedLM:
    """Tokenised tensors in, (texts, vocabulary) SPLADE weights out (see the module docstring)."""

    def __init__(self, encoder: Any, head: Callable[[Any], Any], vocab_bias: Any = None, *,
                 chunk_tokens: int = CHUNK_TOKENS) -> None:
        """``vocab_bias``: what ``head`` leaves out of the logits, added to each text's maximum."""
        if chunk_tokens < 1:
            raise ValueError("chunk_tokens must be >= 1")
        self.encoder = encoder
        self.head = head
        self.vocab_bias = vocab_bias
        self.chunk_tokens = chunk_tokens

    def __call__(self, feeds: dict[str, Any]) -> Any:
        """``feeds``: the encoder's inputs (torch tensors, ``attention_mask`` among them)."""
        import torch

        mask = feeds["attention_mask"].bool()
        hidden = self.encoder(**feeds)[0]  # (texts, longest, hidden)
        real = hidden[mask]  # (real tokens, hidden), text 0's rows first, then text 1's, ...
        lengths = mask.sum(dim=1).tolist()
        pooled: list[Any] = [None] * len(lengths)
        start = 0  # first text of the chunk
        row = 0  # its first row in ``real``
        while start < len(lengths):
            end, rows = start + 1, lengths[start]
            while end < len(lengths) and rows + lengths[end] <= self.chunk_tokens:
                rows += lengths[end]
                end += 1
            if rows:
                logits = self.head(real[row:row + rows])
                for text, part in zip(range(start, end), logits.split(lengths[start:end]), strict=True):
                    if part.shape[0]:
                        pooled[text] = part.amax(dim=0)
                        if self.vocab_bias is not None:
                            pooled[text] += self.vocab_bias
            start, row = end, row + rows
        width = next((p.shape[0] for p in pooled if p is not None), None)
        if width is None:  # no text has a real token: run the head once for the width
            width = self.head(hidden[:1, :1]).shape[-1]
        zeros = hidden.new_zeros(width)
        weights = torch.stack([zeros if p is None else p for p in pooled])
        return torch.log1p(torch.relu(weights))


__all__ = ["CHUNK_TOKENS", "MaskedLMParts", "PooledMaskedLM", "padded_token_cost", "split_masked_lm"]
