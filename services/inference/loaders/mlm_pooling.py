"""SPLADE weights from a transformers masked LM, with the vocabulary head run on real tokens only.

On a small masked LM the vocabulary head costs far more than the encoder (SPLADE-tiny: a 128 x 30,522
projection per token against two 128-wide layers), and its logits are the largest tensor of the pass
(batch x longest x vocabulary floats: 176 MB for 32 texts of 45 tokens). Running the whole model on a
padded batch computes that projection for every padded position and writes the whole tensor out, so a
batch of texts of mixed lengths cost more per text than the texts one at a time.

So :class:`PooledMaskedLM` runs the encoder on the padded batch (cheap), takes the hidden states of the
real tokens only (``attention_mask``), and runs the head on them in chunks of whole texts of at most
``chunk_tokens`` rows, max-pooling each text's rows as soon as its logits exist. No padded position's
logits are computed and no (batch, longest, vocabulary) tensor is made. The result is
``log(1 + relu(max over the text's real tokens of the logits))``: the value the full logits give with
padded positions counted as 0 (:meth:`SparseHead.weights <.artifact_encoder.SparseHead.weights>`).

:func:`split_masked_lm` knows where the encoder ends and the head starts for the usual masked-LM
classes (BERT's ``cls``, RoBERTa-style ``lm_head``, DistilBERT's vocabulary layers); for any other
class it returns None and the caller runs the whole model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: rows (real tokens, whole texts) the vocabulary head runs on at once: big enough that the head's
#: weights are read once for many tokens, small enough that one chunk's logits (rows x vocabulary
#: floats: 16 MB for SPLADE-tiny) stay far below a padded batch's
CHUNK_TOKENS = 128

_DISTILBERT_HEAD = ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")


def split_masked_lm(model: Any) -> tuple[Any, Callable[[Any], Any]] | None:
    """(the encoder, hidden states -> logits) of a transformers masked LM, or None when its class is
    not one whose head is known."""
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        return None
    head = getattr(model, "cls", None)  # BERT and its relatives (BertOnlyMLMHead)
    if head is None:
        head = getattr(model, "lm_head", None)  # RoBERTa, XLM-R, CamemBERT, MPNet, ...
    if head is None and all(hasattr(model, name) for name in _DISTILBERT_HEAD):
        def head(hidden: Any) -> Any:
            hidden = model.activation(model.vocab_transform(hidden))
            return model.vocab_projector(model.vocab_layer_norm(hidden))
    if head is None or not callable(head):
        return None
    return base, head


class PooledMaskedLM:
    """Tokenised tensors in, (texts, vocabulary) SPLADE weights out (see the module docstring)."""

    def __init__(self, encoder: Any, head: Callable[[Any], Any], *, chunk_tokens: int = CHUNK_TOKENS) -> None:
        if chunk_tokens < 1:
            raise ValueError("chunk_tokens must be >= 1")
        self.encoder = encoder
        self.head = head
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
            start, row = end, row + rows
        width = next((p.shape[0] for p in pooled if p is not None), None)
        if width is None:  # no text has a real token: run the head once for the width
            width = self.head(hidden[:1, :1]).shape[-1]
        zeros = hidden.new_zeros(width)
        weights = torch.stack([zeros if p is None else p for p in pooled])
        return torch.log1p(torch.relu(weights))


__all__ = ["CHUNK_TOKENS", "PooledMaskedLM", "split_masked_lm"]
