"""A ``tokenizer.json`` (Hugging Face ``tokenizers`` library) turned into model inputs.

Used by the OpenSearch-layout models (TorchScript, ONNX, sparse) and the masked-LM sparse models.
Texts are truncated to the model's length and padded to the longest text of the batch (a
``Fixed`` padding saved in the file is replaced: the attention mask keeps the result the same and
short batches stay short). ``encode`` is thread-safe: the tokenizer is configured once, then only read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..model_spec import ModelSpecError

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 512
_PAD_CANDIDATES = ("[PAD]", "<pad>", "<|endoftext|>")


class TextTokenizer:
    """Batch tokenisation to ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64 arrays)."""

    def __init__(self, path: str | Path, *, max_length: int | None = None,
                 model_max_positions: int | None = None) -> None:
        from tokenizers import Tokenizer

        path = Path(path)
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the library raises bare Exceptions for malformed files
            raise ModelSpecError(f"{path.name} is not a valid tokenizer.json: {exc}") from None
        saved = tokenizer.truncation
        limit = max_length or (saved or {}).get("max_length") or model_max_positions or DEFAULT_MAX_TOKENS
        if model_max_positions:
            limit = min(limit, model_max_positions)
        tokenizer.enable_truncation(max_length=int(limit))
        padding = tokenizer.padding or {}
        pad_id: int | None = padding.get("pad_id")
        pad_token: str | None = padding.get("pad_token")
        if pad_token is None or pad_id is None:
            pad_token = next((t for t in _PAD_CANDIDATES if tokenizer.token_to_id(t) is not None), "[PAD]")
            pad_id = tokenizer.token_to_id(pad_token) or 0
        tokenizer.enable_padding(pad_id=int(pad_id), pad_token=str(pad_token))  # to the batch's longest
        self._tokenizer = tokenizer
        self.max_length = int(limit)
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        self.special_ids: tuple[int, ...] = tuple(sorted(
            i for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special))

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask``, ``token_type_ids``: int64 arrays (batch, longest)."""
        encodings = self._tokenizer.encode_batch(list(texts))
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }

    def id_to_token(self, token_id: int) -> str:
        return self._tokenizer.id_to_token(int(token_id)) or ""

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def estimate_length(self, text: str) -> int:
        """About four characters a token, plus the start/end tokens, capped at the model's length."""
        return min(self.max_length, 2 + (len(text) + 3) // 4)


def max_positions(config: dict | None) -> int | None:
    """The longest input a Hugging Face ``config.json`` allows (RoBERTa-style models reserve 2 positions)."""
    if not config:
        return None
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int) or positions < 1:
        return None
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert", "mpnet", "longformer") \
            and positions > 2:
        positions -= 2
    return positions


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``; ModelSpecError naming the file when it is not one."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelSpecError(f"{path.name} ({what}) cannot be read: {exc}") from None
    if not isinstance(doc, dict):
        raise ModelSpecError(f"{path.name} ({what}) must hold a JSON object")
    return doc
