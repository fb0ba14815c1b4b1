"""Small but real :class:`Encoder` implementations for batching and server tests.

* texts: a hashed bag of words (each word a deterministic random vector), so
  equal texts give equal vectors and texts sharing words are close;
* images: a colour histogram (``bins`` per RGB channel), so equal images give
  equal vectors and a red image is far from a blue one.

The encoder records what it saw (batch sizes and contents, threads), can be
slowed down (``forward_delay``), held (``gate``: forward waits until it is
set) and poisoned (a text containing ``poison_word`` or an image of exactly
``poison_size`` makes that batch raise), which is what batching tests need.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from services.inference.loaders.base import IMAGE, TEXT, Encoder, EncoderInfo, l2_normalize


def word_vector(word: str, dims: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dims).astype(np.float32)


def bag_of_words(text: str, dims: int) -> np.ndarray:
    """The reference text vector (un-normalised) the fake model computes."""
    words = re.findall(r"\w+", text.lower()) or ["<empty>"]
    return np.sum([word_vector(w, dims) for w in words], axis=0).astype(np.float32)


def colour_histogram(image: Image.Image, dims: int, bins: int) -> np.ndarray:
    """The reference image vector (un-normalised) the fake model computes."""
    pixels = np.asarray(image.convert("RGB").resize((16, 16)), dtype=np.int64).reshape(-1, 3)
    parts = [np.bincount(pixels[:, c] * bins // 256, minlength=bins) for c in range(3)]
    vec = np.zeros(dims, dtype=np.float32)
    hist = np.concatenate(parts).astype(np.float32) + 0.01
    vec[: hist.size] = hist
    return vec


@dataclass
class Seen:
    """What the fake model was asked to do."""

    batches: list[tuple[str, int]] = field(default_factory=list)  # (modality, size) per forward pass
    text_batches: list[list[str]] = field(default_factory=list)
    prepares: list[tuple[str, int]] = field(default_factory=list)  # (modality, size) per prepare call
    forward_threads: set[str] = field(default_factory=set)
    prepare_threads: set[str] = field(default_factory=set)

    def sizes(self, modality: str | None = None) -> list[int]:
        return [n for m, n in self.batches if modality is None or m == modality]


class FakeEncoder(Encoder):
    def __init__(
        self,
        *,
        dims: int = 24,
        modalities: tuple[str, ...] = (TEXT, IMAGE),
        name: str = "fake-bow-histogram",
        normalize: bool = True,
        forward_delay: float = 0.0,
        poison_word: str | None = "poison",
        poison_size: tuple[int, int] | None = (13, 7),
    ) -> None:
        self.info = EncoderInfo(
            name=name,
            type="fake",
            dimensions=dims,
            modalities=modalities,
            device="cpu",
            precision="fp32",
            normalize=normalize,
            max_text_tokens=77,
        )
        self.bins = max(1, min(8, dims // 3))
        self.forward_delay = forward_delay
        self.poison_word = poison_word
        self.poison_size = poison_size
        self.gate = threading.Event()
        self.gate.set()
        self.seen = Seen()
        self._lock = threading.Lock()
        self.closed = False

    # references for assertions
    def expected_text(self, text: str, normalize: bool | None = None) -> np.ndarray:
        vec = bag_of_words(text, self.dimensions)[None, :]
        return self._finish(vec, normalize)[0]

    def expected_image(self, image: Image.Image, normalize: bool | None = None) -> np.ndarray:
        vec = colour_histogram(image, self.dimensions, self.bins)[None, :]
        return self._finish(vec, normalize)[0]

    # Encoder interface
    def text_length(self, text: str) -> int:
        return len(re.findall(r"\w+", text))

    def prepare_texts(self, texts: list[str]):
        if TEXT not in self.modalities:
            return super().prepare_texts(texts)
        self._prepared(TEXT, len(texts))
        return list(texts)

    def forward_texts(self, prepared) -> np.ndarray:
        self._enter(TEXT, len(prepared), list(prepared))
        if self.poison_word and any(self.poison_word in t for t in prepared):
            raise RuntimeError(f"the fake model chokes on {self.poison_word!r}")
        return np.stack([bag_of_words(t, self.dimensions) for t in prepared])

    def prepare_images(self, images: list[Image.Image]):
        if IMAGE not in self.modalities:
            return super().prepare_images(images)
        self._prepared(IMAGE, len(images))
        if self.poison_size and any(im.size == self.poison_size for im in images):
            raise ValueError(f"the fake preprocessor refuses {self.poison_size} images")
        return [colour_histogram(im, self.dimensions, self.bins) for im in images]

    def forward_images(self, prepared) -> np.ndarray:
        self._enter(IMAGE, len(prepared), None)
        return np.stack(prepared)

    def _prepared(self, modality: str, size: int) -> None:
        with self._lock:
            self.seen.prepare_threads.add(threading.current_thread().name)
            self.seen.prepares.append((modality, size))

    def _enter(self, modality: str, size: int, texts: list[str] | None) -> None:
        self.gate.wait(30)
        with self._lock:
            self.seen.batches.append((modality, size))
            self.seen.forward_threads.add(threading.current_thread().name)
            if texts is not None:
                self.seen.text_batches.append(texts)
        if self.forward_delay:
            time.sleep(self.forward_delay)

    def close(self) -> None:
        self.closed = True


def normalized(vec: np.ndarray) -> np.ndarray:
    return l2_normalize(np.asarray(vec, dtype=np.float32)[None, :])[0]
