"""What the torch-backed encoders (OpenCLIP, HF CLIP/SigLIP, sentence-transformers) share."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .base import Encoder, EncoderInfo


class TorchEncoder(Encoder):
    """A torch model on ``device``, a lock for its tokenizer, a token-count estimate and release."""

    def __init__(self, model: Any, info: EncoderInfo, device: str) -> None:
        import torch

        self._torch = torch
        self.model = model
        self._device = device
        # fast (HF) tokenizers are not safe to call from two threads: changing padding races
        self._token_lock = threading.Lock()
        self.info = info

    def text_length(self, text: str) -> int:
        """About four characters a token, plus the start/end tokens, capped at the model's length."""
        return min(self.info.max_text_tokens, 2 + (len(text) + 3) // 4)

    def close(self) -> None:
        self.model = None
        if self._device.startswith("cuda"):
            self._torch.cuda.empty_cache()


def to_numpy(tensor: Any) -> np.ndarray:
    """A torch tensor (any dtype, any device) as a float32 numpy array."""
    return tensor.detach().float().cpu().numpy().astype(np.float32, copy=False)
