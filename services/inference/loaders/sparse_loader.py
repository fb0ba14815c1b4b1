"""Sparse (neural sparse / SPLADE) encoders: one weight per vocabulary token, most of them zero.

Three kinds of artifact:

* **OpenSearch SPARSE_ENCODING**: a zip with a ``.pt`` (TorchScript) or ``.onnx`` model and
  ``tokenizer.json``. The model returns either vocabulary-sized weights per text (OpenSearch's traced
  models: ``{"output": ...}``) or masked-LM logits per token, turned into weights here;
* **Hugging Face masked-LM folder** (``type: sparse``, e.g. SPLADE): ``config.json``, the weights and
  ``tokenizer.json``, run by transformers' ``AutoModelForMaskedLM``;
* **OpenSearch SPARSE_TOKENIZE** (doc-only mode's query side): ``tokenizer.json`` and optionally
  ``idf.json``; each distinct token of the text weighs its IDF, or 1. No model runs.

Weights from logits are ``log(1 + relu(logit))``, max-pooled over the text's real tokens. Special
tokens and zeros are dropped, then ``SPARSE_PRUNE_RATIO`` and ``SPARSE_MAX_TERMS`` apply (see
:class:`~.artifact_encoder.SparseHead`). A masked LM's vocabulary head runs on the real tokens only,
not on padding (:mod:`.mlm_pooling`).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..model_spec import (
    ONNX,
    SPARSE_ENCODING,
    SPARSE_TOKENIZE,
    TORCH_SCRIPT,
    HfLocation,
    ModelSpec,
    ModelSpecError,
)
from .artifact_encoder import ArtifactEncoder, IdfHead, SparseHead, SparseSettings, to_numpy
from .base import SPARSE, TEXT, EncoderInfo
from .mlm_pooling import PooledMaskedLM, padded_token_cost, split_masked_lm
from .opensearch_layout import SUFFIXES, find_files
from .text_tokenizer import TextTokenizer, max_positions, read_json

log = logging.getLogger(__name__)

SPARSE_OUTPUTS = ("output", "logits", "sparse_embedding")
_HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
#: a padded batch on which a masked LM's real-tokens-only head is checked against the whole model
PROBE_TEXTS = ("running shoes", "a much longer text, so that the first one is padded in the batch", "")


class MaskedLMRunner:
    """A transformers masked LM on a device: tokenised arrays in, (batch, vocab) SPLADE weights out.

    The vocabulary head runs on the real tokens only (:mod:`.mlm_pooling`) when the model's class is one
    whose head is known and the two ways agree on a padded test batch at load; otherwise the whole model
    runs and the (batch, tokens, vocab) logits go out, pooled by :class:`~.artifact_encoder.SparseHead`.
    """

    def __init__(self, folder: Path, device: str, dtype: Any) -> None:
        import torch
        from transformers import AutoModelForMaskedLM

        from .torchvision_compat import ensure_torchvision_importable

        ensure_torchvision_importable()
        self._torch = torch
        self.device = device
        try:
            model = AutoModelForMaskedLM.from_pretrained(str(folder), dtype=dtype or torch.float32)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelSpecError(f"{folder} is not a masked-LM model folder: {first}") from None
        self.model = model.to(device).eval()
        params = inspect.signature(self.model.forward).parameters
        self.inputs = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in params]
        split = split_masked_lm(self.model)
        self.pooled: PooledMaskedLM | None = PooledMaskedLM(*split) if split is not None else None
        self._pooled_padding_cost = padded_token_cost(self.model)

    @property
    def padded_token_cost(self) -> float:
        """What a padded position costs as a share of a real token (:func:`.mlm_pooling.padded_token_cost`
        with the head on real tokens only; 1 when the whole model runs on the padded batch)."""
        return self._pooled_padding_cost if self.pooled is not None else 1.0

    def _feeds(self, prepared: dict[str, np.ndarray]) -> dict[str, Any]:
        return {n: self._torch.from_numpy(prepared[n]).to(self.device) for n in self.inputs}

    def logits(self, prepared: dict[str, np.ndarray]) -> Any:
        """The whole model's (batch, tokens, vocab) logits, padded positions included."""
        with self._torch.inference_mode():
            return self.model(**self._feeds(prepared)).logits

    def __call__(self, prepared: dict[str, np.ndarray]) -> Any:
        if self.pooled is None:
            return self.logits(prepared)
        with self._torch.inference_mode():
            return self.pooled(self._feeds(prepared))

    def check_pooled(self, prepared: dict[str, np.ndarray], name: str) -> None:
        """Keep the real-tokens-only head only if it gives the whole model's weights on ``prepared``."""
        if self.pooled is None:
            log.info("%s: %s's vocabulary head is not a known one; the whole model runs on padded batches",
                     name, type(self.model).__name__)
            return
        try:
            fast = to_numpy(self(prepared))
            full = SparseHead.weights(self.logits(prepared), prepared["attention_mask"])
            diff = float(np.abs(fast - full).max()) if fast.shape == full.shape else float("inf")
        except Exception as exc:  # noqa: BLE001 - any failure of the split means: run the whole model
            diff, why = float("inf"), f"{type(exc).__name__}: {exc}"
        else:
            why = f"max difference {diff:.3g}"
        scale = max(1.0, float(np.abs(full).max())) if np.isfinite(diff) else 1.0
        # float32 agrees to rounding; fp16/bf16 matrix products round differently with the rows they get
        tolerance = 1e-4 if self.model.dtype == self._torch.float32 else 2e-2
        if not diff <= tolerance * scale:
            log.warning("%s: the vocabulary head on real tokens only disagrees with the whole model (%s); "
                        "running the whole model on padded batches", name, why)
            self.pooled = None

    def release(self) -> None:
        self.model = None
        self.pooled = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()


def load_sparse(spec: ModelSpec, choice: Any, artifact: Path | None, *, settings: SparseSettings,
                auth: Any = None, cache_dir: str | Path | None = None) -> ArtifactEncoder:
    """A sparse encoder from an OpenSearch artifact, a masked-LM folder, or the hub repo ``spec.name``."""
    if artifact is None:  # a sparse spec naming a hub repo only: fetch the repo's snapshot
        from ..artifacts import resolve_artifact

        artifact = resolve_artifact(dataclasses.replace(spec, hf=HfLocation(repo_id=spec.name)), auth,
                                    cache_dir or ".")
    assert artifact is not None
    if not artifact.is_dir():
        raise ModelSpecError(f"{spec.name}: a sparse model is a zip or folder, not the file {artifact}")
    has_model_file = any(p.suffix.lower() in SUFFIXES for p in artifact.rglob("*") if p.is_file())
    has_hf_weights = (artifact / "config.json").is_file() \
        and any((artifact / w).is_file() for w in _HF_WEIGHTS)
    function = spec.function_name
    if spec.model_format is None and function == SPARSE_ENCODING and not (has_model_file or has_hf_weights):
        function = SPARSE_TOKENIZE  # a sparse spec over a tokenizer-only folder
        spec = dataclasses.replace(spec, function_name=function)
    if function == SPARSE_TOKENIZE:
        return _tokenize_encoder(spec, artifact, settings)
    # an OpenSearch body says its format; a plain type: sparse prefers a Hugging Face folder's own weights
    if spec.model_format is None and has_hf_weights:
        return _masked_lm_encoder(spec, choice, artifact, settings)
    if has_model_file or spec.model_format is not None:
        return _artifact_encoder(spec, choice, artifact, settings)
    raise ModelSpecError(
        f"{spec.name}: {artifact} holds no sparse model: expected a .pt or .onnx file with tokenizer.json "
        f"(OpenSearch), config.json with {' or '.join(_HF_WEIGHTS)} (a masked LM), or tokenizer.json alone "
        "(SPARSE_TOKENIZE)")


def _info(spec: ModelSpec, settings: SparseSettings, device: str, precision: str, tokenizer: TextTokenizer,
          function: str, width: int) -> EncoderInfo:
    return EncoderInfo(name=spec.name, type="sparse", dimensions=width, modalities=(TEXT,), device=device,
                       precision=precision, normalize=False, max_text_tokens=tokenizer.max_length,
                       kind=SPARSE, function_name=function, vocab_size=width,
                       prune_ratio=settings.prune_ratio, max_terms=settings.max_terms)


def _artifact_encoder(spec: ModelSpec, choice: Any, root: Path, settings: SparseSettings) -> ArtifactEncoder:
    files = find_files(root, spec)
    tokenizer = TextTokenizer(files.tokenizer, max_length=spec.max_text_tokens,
                              model_max_positions=max_positions(files.config or spec.extra.get("all_config")))
    device, precision = str(choice.device), choice.precision or "fp32"
    if files.model_format == ONNX:
        from .onnx_loader import OnnxRunner

        runner: Any = OnnxRunner(files.model, device, SPARSE_OUTPUTS)
        device, precision = runner.device, "fp32"
    else:
        assert files.model_format == TORCH_SCRIPT
        from .torchscript_loader import TorchScriptRunner

        runner = TorchScriptRunner(files.model, device, getattr(choice, "torch_dtype", None),
                                   SPARSE_OUTPUTS)
    width = _probe_width(runner, tokenizer, files.model.name)
    info = _info(spec, settings, device, precision, tokenizer, SPARSE_ENCODING, width)
    if files.model_format == ONNX:
        info = dataclasses.replace(info, runtime="onnx")
    return _ready(ArtifactEncoder(tokenizer, runner, SparseHead(tokenizer.special_ids, settings), info,
                                  release=runner.release))


def _masked_lm_encoder(spec: ModelSpec, choice: Any, folder: Path,
                       settings: SparseSettings) -> ArtifactEncoder:
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ModelSpecError(f"{spec.name}: no tokenizer.json in {folder} (the tokenizers library reads it)")
    config = read_json(folder / "config.json", "model config")
    tokenizer = TextTokenizer(tokenizer_file, max_length=spec.max_text_tokens,
                              model_max_positions=max_positions(config))
    runner = MaskedLMRunner(folder, str(choice.device), getattr(choice, "torch_dtype", None))
    width = _probe_width(runner, tokenizer, folder.name)
    runner.check_pooled(tokenizer.encode(list(PROBE_TEXTS)), spec.name)
    info = _info(spec, settings, str(choice.device), choice.precision or "fp32", tokenizer, SPARSE_ENCODING,
                 width)
    # with the head on real tokens only, padding costs only the (cheap) encoder: no sub-batches
    return _ready(ArtifactEncoder(tokenizer, runner, SparseHead(tokenizer.special_ids, settings), info,
                                  release=runner.release, group_lengths=runner.pooled is None))


def _tokenize_encoder(spec: ModelSpec, root: Path, settings: SparseSettings) -> ArtifactEncoder:
    files = find_files(root, dataclasses.replace(spec, function_name=SPARSE_TOKENIZE))
    tokenizer = TextTokenizer(files.tokenizer, max_length=spec.max_text_tokens,
                              model_max_positions=max_positions(files.config))
    idf = np.ones(tokenizer.vocab_size, dtype=np.float32)
    if files.idf is not None:
        weights = read_json(files.idf, "token weights")
        unknown = 0
        for token, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise ModelSpecError(
                    f"{files.idf.name}: the weight of {token!r} must be a number, not {weight!r}")
            token_id = tokenizer.token_to_id(token)
            if token_id is None or token_id >= idf.size:
                unknown += 1
                continue
            idf[token_id] = float(weight)
        if unknown:
            log.warning("%s: %d tokens are not in tokenizer.json's vocabulary; ignored",
                        files.idf.name, unknown)
    source = f"IDF weights from {files.idf.name}" if files.idf is not None \
        else "every token weighs 1 (no idf.json)"
    log.info("SPARSE_TOKENIZE %s: %s", spec.name, source)
    info = _info(spec, settings, "cpu", "fp32", tokenizer, SPARSE_TOKENIZE, tokenizer.vocab_size)
    return _ready(ArtifactEncoder(tokenizer, _no_model, IdfHead(idf, tokenizer.special_ids, settings), info,
                                  group_lengths=False))


def _no_model(prepared: dict[str, np.ndarray]) -> None:
    return None


def _probe_width(runner: Any, tokenizer: TextTokenizer, name: str) -> int:
    """Run one text: the width of the model's weights (its vocabulary), checked against the tokenizer."""
    try:
        out = runner(tokenizer.encode(["a"]))
    except ModelSpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model's own error, in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelSpecError(f"{name} did not run on a test text: {type(exc).__name__}: {first}") from None
    if out.ndim not in (2, 3) or out.shape[0] != 1:
        raise ModelSpecError(f"{name}: a sparse model returns (texts, vocabulary) weights or (texts, tokens, "
                             f"vocabulary) logits, not shape {tuple(out.shape)}")
    width = int(out.shape[-1])
    if width < tokenizer.vocab_size:
        log.warning("%s returns %d weights per text but tokenizer.json has %d tokens: tokens past %d get no "
                    "weight", name, width, tokenizer.vocab_size, width)
    return width


def _ready(encoder: ArtifactEncoder) -> ArtifactEncoder:
    info = encoder.info
    log.info("sparse model %s ready (%s, vocabulary %d, max %d tokens)", info.name, info.function_name,
             info.vocab_size, info.max_text_tokens)
    return encoder


__all__ = ["SPARSE_OUTPUTS", "MaskedLMRunner", "load_sparse"]
