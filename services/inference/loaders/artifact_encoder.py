"""What the TorchScript, ONNX and sparse encoders share: a ``tokenizer.json``, a runner, an output head.

* ``prepare_texts`` tokenises with :class:`TextTokenizer` (thread-safe, no lock: it overlaps the
  forward pass of the previous batch);
* ``forward_texts`` hands the arrays to a *runner* (``torch.jit`` module, onnxruntime session,
  transformers masked LM) and the runner's output to a *head*:
  - :class:`DenseHead`: one vector per text as is, or token embeddings pooled by ``pooling_mode``;
  - :class:`SparseHead`: masked-LM logits -> ``log(1 + relu(logit))`` max-pooled over the real tokens
    (or the model's own vocabulary-sized weights), then special tokens dropped, ``prune_ratio`` and
    ``max_terms`` applied, zeros dropped: one :class:`SparseVector` per text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Encoder, EncoderInfo, SparseVector
from .length_groups import length_groups, right_padded_lengths, sub_batch
from .pooling import pool
from .text_tokenizer import TextTokenizer

#: a runner: tokenised arrays -> the model's output (numpy array or torch tensor)
Runner = Callable[[dict[str, np.ndarray]], Any]


@dataclass(frozen=True)
class SparseSettings:
    """How model weights become a sparse vector (``SPARSE_PRUNE_RATIO``, ``SPARSE_MAX_TERMS``).

    ``prune_ratio``: drop weights not above ``prune_ratio * the text's largest weight`` (0: keep all);
    ``max_terms``: keep the largest this many weights per text (0: no limit).
    """

    prune_ratio: float = 0.0
    max_terms: int = 0


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array or a torch tensor (any device, any dtype) as float32 numpy."""
    if isinstance(value, np.ndarray):
        return value.astype(np.float32, copy=False)
    return value.detach().float().cpu().numpy()


class DenseHead:
    """Model output -> (batch, dims): 2-D outputs as they are, 3-D token embeddings pooled."""

    def __init__(self, pooling_mode: str) -> None:
        self.pooling_mode = pooling_mode

    def __call__(self, output: Any, prepared: dict[str, np.ndarray]) -> np.ndarray:
        array = to_numpy(output)
        if array.ndim == 2:
            return array
        return pool(array, prepared["attention_mask"], self.pooling_mode)


class SparseHead:
    """Model output -> one :class:`SparseVector` per text (see the module docstring)."""

    def __init__(self, special_ids: Sequence[int], settings: SparseSettings) -> None:
        self.special_ids = np.asarray(sorted(set(special_ids)), dtype=np.int64)
        self.settings = settings

    def __call__(self, output: Any, prepared: dict[str, np.ndarray]) -> list[SparseVector]:
        return self.sparsify(self.weights(output, prepared["attention_mask"]))

    @staticmethod
    def weights(output: Any, mask: np.ndarray) -> np.ndarray:
        """(batch, vocab) weights: 3-D logits through log(1 + relu(.)) max-pooled over real tokens."""
        if output.ndim == 2:
            return to_numpy(output)
        padding = mask[:, : output.shape[1]] == 0
        if isinstance(output, np.ndarray):
            # each text's maximum over its real tokens, read in place (no copy of the whole logits);
            # padded positions count as 0, as OpenSearch's (logits * mask): the relu below does that
            pooled = np.zeros((output.shape[0], output.shape[2]), dtype=np.float32)
            for row, pad in enumerate(padding):
                if not pad.any():
                    pooled[row] = output[row].max(axis=0)
                elif not pad.all():
                    pooled[row] = output[row, ~pad].max(axis=0)
            return np.log1p(np.maximum(pooled, 0.0)).astype(np.float32)
        import torch

        with torch.inference_mode():  # the runner's output is an inference tensor: changed in place here
            if padding.any():
                output[torch.as_tensor(padding, device=output.device)] = 0.0
            return to_numpy(torch.log1p(torch.relu(output.amax(dim=1))))

    def sparsify(self, weights: np.ndarray) -> list[SparseVector]:
        """(batch, vocab) weights -> sparse vectors: special tokens, pruned weights and zeros dropped."""
        w = np.array(weights, dtype=np.float32, copy=True)
        if self.special_ids.size:
            w[:, self.special_ids[self.special_ids < w.shape[1]]] = 0.0
        rows, cols = np.nonzero(w)
        counts = np.bincount(rows, minlength=w.shape[0])
        out: list[SparseVector] = []
        start = 0
        for r, n in enumerate(counts):
            idx = cols[start:start + n]
            start += n
            out.append(self.limit(idx, w[r, idx]))
        return out

    def limit(self, idx: np.ndarray, vals: np.ndarray) -> SparseVector:
        """One text's non-zero weights (ascending ids) after ``prune_ratio`` and ``max_terms``."""
        ratio, most = self.settings.prune_ratio, self.settings.max_terms
        if ratio > 0 and vals.size:
            keep = vals > vals.max() * ratio
            idx, vals = idx[keep], vals[keep]
        if most and vals.size > most:
            top = np.sort(np.argpartition(-vals, most - 1)[:most])
            idx, vals = idx[top], vals[top]
        return SparseVector(idx.astype(np.uint32), vals.astype(np.float32))


class IdfHead(SparseHead):
    """SPARSE_TOKENIZE: each distinct token of the text weighs its IDF (``idf.json``), or 1."""

    def __init__(self, idf: np.ndarray, special_ids: Sequence[int], settings: SparseSettings) -> None:
        super().__init__(special_ids, settings)
        self.idf = idf

    def __call__(self, output: Any, prepared: dict[str, np.ndarray]) -> list[SparseVector]:
        out = []
        for ids, mask in zip(prepared["input_ids"], prepared["attention_mask"], strict=True):
            idx = np.unique(ids[mask > 0])
            idx = idx[(idx < self.idf.size) & ~np.isin(idx, self.special_ids)]
            vals = self.idf[idx]
            nonzero = vals != 0
            out.append(self.limit(idx[nonzero], vals[nonzero]))
        return out


class ArtifactEncoder(Encoder):
    """A text encoder made of a tokenizer, a runner and a head (dense or sparse)."""

    def __init__(self, tokenizer: TextTokenizer, runner: Runner, head: DenseHead | SparseHead,
                 info: EncoderInfo, *, release: Callable[[], None] | None = None,
                 group_lengths: bool = True) -> None:
        """``group_lengths``: the runner pays for padded tokens, so on a CPU a batch of mixed lengths
        runs as sub-batches of similar lengths when that costs less (:mod:`.length_groups`; on a GPU
        padded tokens are nearly free and each call's fixed cost is what counts, as with the batcher's
        MAX_BATCH_TOKENS)."""
        self.tokenizer = tokenizer
        self.runner = runner
        self.head = head
        self.info = info
        self.group_lengths = group_lengths
        self._release = release

    def prepare_texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        return self.tokenizer.encode(texts)

    def forward_texts(self, prepared: dict[str, np.ndarray]) -> Any:
        groups = self._length_groups(prepared)
        if groups is None:
            return self.head(self.runner(prepared), prepared)
        rows_out: list[Any] = [None] * len(prepared["attention_mask"])
        dense: list[tuple[list[int], np.ndarray]] = []
        for rows, width in groups:
            sub = sub_batch(prepared, rows, width)
            out = self.head(self.runner(sub), sub)
            if isinstance(out, list):  # sparse vectors
                for row, vector in zip(rows, out, strict=True):
                    rows_out[row] = vector
            else:
                dense.append((rows, np.asarray(out, dtype=np.float32)))
        if not dense:
            return rows_out
        result = np.empty((len(rows_out), dense[0][1].shape[1]), dtype=np.float32)
        for rows, out in dense:
            result[rows] = out
        return result

    def _length_groups(self, prepared: dict[str, np.ndarray]) -> list[tuple[list[int], int]] | None:
        """(rows, their longest) per sub-batch, or None to run the batch as it is."""
        mask = prepared.get("attention_mask")
        if not self.group_lengths or self.info.device != "cpu" or mask is None or mask.shape[0] < 2:
            return None
        lengths = right_padded_lengths(mask)
        if lengths is None:
            return None
        groups = length_groups(lengths.tolist())
        if len(groups) < 2:
            return None
        return [(rows, max(1, int(lengths[rows].max()))) for rows in groups]

    @property
    def padded_token_cost(self) -> float:
        return float(getattr(self.runner, "padded_token_cost", 1.0))

    def text_length(self, text: str) -> int:
        return self.tokenizer.estimate_length(text)

    def token_strings(self, ids: np.ndarray) -> list[str]:
        return [self.tokenizer.id_to_token(int(i)) for i in ids]

    def encode_text(self, texts: list[str], normalize: bool | None = None) -> Any:
        if isinstance(self.head, SparseHead):
            return self.forward_texts(self.prepare_texts([self.cut_text(t) for t in texts])) if texts else []
        return super().encode_text(texts, normalize)

    def close(self) -> None:
        if self._release is not None:
            self._release()
        self.runner = None  # type: ignore[assignment]
