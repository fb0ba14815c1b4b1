"""Token embeddings (batch, tokens, hidden) -> one vector per text, as OpenSearch's ``pooling_mode`` says.

The modes and their formulas follow sentence-transformers' Pooling module (which OpenSearch's
translators reproduce), computed over the real tokens only (``attention_mask``):

* ``mean``: sum / n;  ``mean_sqrt_len``: sum / sqrt(n);  ``max``: element-wise maximum;
* ``weightedmean``: weights 1, 2, ... by position;  ``cls``: the first token;
* ``lasttoken``: the last real token;  ``none``: the model already returns one vector per text.
"""

from __future__ import annotations

import numpy as np

from ..model_spec import POOLING_MODES, ModelSpecError


def pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """``hidden`` (b, s, h) float, ``mask`` (b, s) 0/1 -> (b, h) float32."""
    if mode not in POOLING_MODES:
        raise ModelSpecError(f"pooling_mode must be one of {', '.join(POOLING_MODES)}, not {mode!r}")
    hidden = np.asarray(hidden, dtype=np.float32)
    if hidden.ndim != 3:
        raise ValueError(f"pooling needs (batch, tokens, hidden) token embeddings, got shape {hidden.shape}")
    if mode == "none":
        raise ModelSpecError("pooling_mode none needs a model that returns one vector per text, "
                             "but this one returns token embeddings: set a pooling_mode such as mean")
    m = np.asarray(mask, dtype=np.float32)[:, : hidden.shape[1], None]
    if mode == "cls":
        return hidden[:, 0].copy()
    if mode == "lasttoken":
        last = np.maximum(m[:, :, 0].sum(1).astype(np.int64) - 1, 0)
        return hidden[np.arange(hidden.shape[0]), last].copy()
    if mode == "max":
        return np.where(m > 0, hidden, np.float32(-1e9)).max(axis=1)
    if mode == "weightedmean":
        m = m * np.arange(1, hidden.shape[1] + 1, dtype=np.float32)[None, :, None]
    total = (hidden * m).sum(axis=1)
    count = np.clip(m.sum(axis=1), 1e-9, None)
    if mode == "mean_sqrt_len":
        return (total / np.sqrt(count)).astype(np.float32, copy=False)
    return (total / count).astype(np.float32, copy=False)
