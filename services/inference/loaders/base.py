"""The one interface every model loader implements.

A loader turns a :class:`~services.inference.model_spec.ModelSpec` into an
:class:`Encoder`. Encoding is split in two steps so the batcher can overlap
CPU work with the forward pass:

* ``prepare_texts`` / ``prepare_images`` run on CPU threads (tokenising,
  resizing, normalising) and return an opaque "prepared" batch;
* ``forward_texts`` / ``forward_images`` run the model on a prepared batch in
  the model thread and return float32 vectors, one row per input.

``encode_text`` / ``encode_image`` chain the two for callers that do not care.

Texts are cut to :attr:`Encoder.max_text_chars` before ``prepare_texts`` sees them (by the service
and by ``encode_text``), so no loader tokenizes more than a bounded prefix of a huge text.

Sparse encoders (``info.kind == "sparse"``) follow the same split; their ``forward_texts``
returns one :class:`SparseVector` per text instead of a row of a dense array.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

TEXT = "text"
IMAGE = "image"
DENSE = "dense"
SPARSE = "sparse"

#: A text is cut to this many characters per model token before it is tokenized
#: (:attr:`Encoder.max_text_chars`). The model reads at most ``max_text_tokens`` tokens; a token of
#: prose is 3-6 characters, so the cut drops only text the tokenizer would drop too, while a
#: 15 MB text costs the tokenizer no more than a page.
TEXT_CHARS_PER_TOKEN = 16


@dataclass(frozen=True)
class EncoderInfo:
    """What a loaded model is, as reported by ``Meta``."""

    name: str
    type: str  # open_clip | clip | sentence_transformers
    dimensions: int
    modalities: tuple[str, ...]  # subset of ("text", "image")
    device: str  # what was actually chosen, e.g. "cpu", "cuda:0"
    precision: str  # fp32 | fp16 | bf16, what was actually used
    normalize: bool  # whether vectors are L2-normalised by default
    max_text_tokens: int  # longer texts are truncated by the model's own tokenizer (0: no limit)
    kind: str = DENSE  # dense | sparse
    function_name: str = "TEXT_EMBEDDING"  # OpenSearch's: TEXT_EMBEDDING | SPARSE_ENCODING | SPARSE_TOKENIZE
    vocab_size: int = 0  # sparse models: the width of their vectors (token ids are < vocab_size)
    prune_ratio: float = 0.0  # sparse models: weights not above this share of a text's largest are dropped
    max_terms: int = 0  # sparse models: most weights kept per text (0: all)
    runtime: str = "torch"  # what runs the model: torch | onnx (onnxruntime)


@dataclass(frozen=True, slots=True)
class SparseVector:
    """One text's sparse vector: token ids (uint32, ascending) and their weights (float32), no zeros."""

    indices: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return int(self.indices.size)


class UnsupportedModality(ValueError):
    """The model cannot embed this kind of input (e.g. images on a text model)."""


class Encoder(ABC):  # noqa: B024 - every method has a default; loaders override some
    """A loaded embedding model."""

    info: EncoderInfo

    # --- properties the rest of the service reads -------------------------
    @property
    def dimensions(self) -> int:
        return self.info.dimensions

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.info.modalities

    # --- two-step encoding -------------------------------------------------
    def prepare_texts(self, texts: list[str]) -> Any:
        """CPU-side preparation of a text batch (tokenising). Thread-safe."""
        raise UnsupportedModality(f"model {self.info.name!r} does not embed text")

    def forward_texts(self, prepared: Any) -> np.ndarray:
        """Run the model on a prepared text batch: float32 array (n, dimensions), not normalised."""
        raise UnsupportedModality(f"model {self.info.name!r} does not embed text")

    def prepare_images(self, images: list[Image.Image]) -> Any:
        """CPU-side preparation of an image batch (resize, crop, normalise). Thread-safe."""
        raise UnsupportedModality(f"model {self.info.name!r} does not embed images")

    def forward_images(self, prepared: Any) -> np.ndarray:
        """Run the model on a prepared image batch: float32 array (n, dimensions), not normalised."""
        raise UnsupportedModality(f"model {self.info.name!r} does not embed images")

    #: whether :meth:`merge_prepared_images` joins images prepared one by one into one batch (the
    #: batcher then prepares each image as it arrives, while the model runs the batch before)
    merges_prepared_images: bool = False

    def merge_prepared_images(self, parts: list[Any]) -> Any:
        """``prepare_images`` results of one image each -> the prepared batch of them all, in order
        (what ``prepare_images`` of the whole list gives)."""
        raise NotImplementedError

    @property
    def padded_token_cost(self) -> float:
        """What a padded position costs in a text batch's forward pass, as a share of a real token's
        work: 1 for a model that runs every position alike (the batcher then counts a batch's tokens
        with padding), less for one that does part of its work on real tokens only."""
        return 1.0

    def text_length(self, text: str) -> int:
        """A cheap length estimate used to group texts of similar length into one batch."""
        return len(text)

    # --- the text bound, the same for every loader ------------------------
    @property
    def max_text_chars(self) -> int:
        """Texts are cut to this many characters before tokenizing (0: never cut).

        ``TEXT_CHARS_PER_TOKEN`` x ``max_text_tokens``: far more than the tokens the model reads, so
        the vector is the one of the whole text truncated by the tokenizer, unless the text's first
        tokens average more than TEXT_CHARS_PER_TOKEN characters (long runs of white space, or
        unbroken strings the tokenizer maps to one unknown token).
        """
        tokens = int(self.info.max_text_tokens or 0)
        return TEXT_CHARS_PER_TOKEN * tokens if tokens > 0 else 0

    def cut_text(self, text: str) -> str:
        """``text`` cut to :attr:`max_text_chars` (the service applies this to every text it embeds)."""
        limit = self.max_text_chars
        return text[:limit] if limit and len(text) > limit else text

    def token_strings(self, ids: np.ndarray) -> list[str]:
        """The vocabulary entries of token ids (sparse models)."""
        raise UnsupportedModality(f"model {self.info.name!r} has no token vocabulary")

    # --- one-step helpers --------------------------------------------------
    def encode_text(self, texts: list[str], normalize: bool | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        prepared = self.prepare_texts([self.cut_text(t) for t in texts])
        return self._finish(self.forward_texts(prepared), normalize)

    def encode_image(self, images: list[Image.Image], normalize: bool | None = None) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return self._finish(self.forward_images(self.prepare_images(images)), normalize)

    def _finish(self, vectors: np.ndarray, normalize: bool | None) -> np.ndarray:
        do_norm = self.info.normalize if normalize is None else normalize
        vectors = np.asarray(vectors, dtype=np.float32)
        return l2_normalize(vectors) if do_norm else vectors

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release model memory (GPU caches); the default does nothing."""


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation; zero rows stay zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
