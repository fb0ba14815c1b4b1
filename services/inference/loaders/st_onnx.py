"""A sentence-transformers text model run by onnxruntime (``RUNTIME=onnx``).

The model is loaded by sentence-transformers as always, then its transformer is exported to ONNX
(``torch.onnx.export``, token embeddings out) and served the way an OpenSearch ONNX artifact is:
the model's own ``tokenizer.json`` (truncating at ``max_seq_length``), an onnxruntime session on the
cores this process may use, and the model's pooling (and ``Normalize``) applied to the token
embeddings, with length-grouped sub-batches on a CPU (:class:`ArtifactEncoder`). On this 2-core CPU
onnxruntime runs all-MiniLM-L6-v2 about twice as fast as torch (README, Performance).

The export is cached under ``MODEL_CACHE_DIR/onnx/<key>``, the key a SHA-256 of the weights, the
config, the tokenizer, the truncation length and the torch version, so a restart loads it in a
second and a changed model is exported again. Before serving, the exported model must give the same
token ids and the same vectors as the torch model on probe texts (min cosine ``MIN_COSINE``).

Only a plain chain runs on onnxruntime: a Hugging Face transformer, a pooling this service knows,
optionally ``Normalize``, with no prompt and no tokenizer options of its own. Anything else (a Dense
layer, a prompt, an image model, bf16), a failed export or a failed check keeps the model on torch and
says why in the log; ``Meta`` reports the runtime that serves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .artifact_encoder import ArtifactEncoder, DenseHead
from .base import TEXT, Encoder, l2_normalize
from .onnx_loader import OnnxRunner
from .text_tokenizer import TextTokenizer

log = logging.getLogger(__name__)

#: pooling modes of a sentence-transformers Pooling module that the ONNX path applies the same way
POOLINGS = ("mean", "cls", "max", "mean_sqrt_len", "lasttoken")
#: vectors of the exported model against the torch model's, on the probe texts
MIN_COSINE = 0.9999
OPSET = 17
_FORMAT = "polyvec-st-onnx-1"
#: texts the export is checked on: short, long (truncated), empty, spaced, accented, non-Latin, numeric
PROBE_TEXTS = (
    "a red running shoe",
    "",
    "   leading and trailing spaces   ",
    "Crème brûlée, naïve café — déjà vu!",
    "東京タワーの夜景 and the Eiffel Tower at night",
    "SKU 12345-XL / 2 pcs @ $19.99 (50% off)",
    " ".join(["a very long product description that goes on"] * 80),
)


class NotOnOnnx(Exception):
    """Why this model stays on torch (said in the log)."""


class NormalizedHead(DenseHead):
    """Pooled vectors, L2-normalised: the model ends in sentence-transformers' ``Normalize``."""

    def __call__(self, output: Any, prepared: dict[str, np.ndarray]) -> np.ndarray:
        return l2_normalize(super().__call__(output, prepared))


class StrippedTokenizer(TextTokenizer):
    """sentence-transformers strips each text before tokenising (and lower-cases it for
    ``do_lower_case`` modules); the served texts get the same."""

    def __init__(self, path: Path, *, max_length: int, lower: bool) -> None:
        super().__init__(path, max_length=max_length)
        self.lower = lower

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        return super().encode([t.strip().lower() if self.lower else t.strip() for t in texts])


def onnx_runtime_encoder(torch_encoder: Any, choice: Any, cache_dir: str | Path) -> Encoder:
    """The model of ``torch_encoder`` (a loaded sentence-transformers encoder) on onnxruntime, checked
    against it; ``torch_encoder`` itself (closed or not) when it cannot run there, saying why."""
    name = torch_encoder.info.name
    try:
        encoder = _onnx_encoder(torch_encoder, choice, cache_dir)
    except NotOnOnnx as why:
        log.warning("RUNTIME=onnx: %s stays on torch: %s", name, why)
        return torch_encoder
    torch_encoder.close()
    log.info("RUNTIME=onnx: %s runs on onnxruntime (%s, %d dims, max %d tokens)", name, encoder.info.device,
             encoder.info.dimensions, encoder.info.max_text_tokens)
    return encoder


def _onnx_encoder(torch_encoder: Any, choice: Any, cache_dir: str | Path) -> ArtifactEncoder:
    model = torch_encoder.model
    info = torch_encoder.info
    if info.modalities != (TEXT,):
        raise NotOnOnnx("it takes images; onnxruntime serves text models")
    if (choice.precision or "fp32") != "fp32":
        raise NotOnOnnx(f"PRECISION={choice.precision}: the ONNX export runs in fp32")
    transformer, pooling, normalized = plain_chain(model)
    max_len = int(info.max_text_tokens)
    folder = exported(transformer, max_len, Path(cache_dir).expanduser() / "onnx")
    tokenizer = StrippedTokenizer(folder / "tokenizer.json", max_length=max_len,
                                  lower=bool(getattr(transformer, "do_lower_case", False)))
    try:
        runner = OnnxRunner(folder / "model.onnx", str(choice.device), ("last_hidden_state",))
    except Exception as exc:  # noqa: BLE001 - a damaged cache entry: the model stays on torch this time
        shutil.rmtree(folder, ignore_errors=True)
        raise NotOnOnnx(f"the cached export did not load ({exc}); removed, exported again at the next "
                        "start") from None
    head = NormalizedHead(pooling) if normalized else DenseHead(pooling)
    encoder = ArtifactEncoder(tokenizer, runner, head,
                              replace(info, runtime="onnx", device=runner.device, precision="fp32"),
                              release=runner.release)
    try:
        check_same(torch_encoder, encoder)
    except NotOnOnnx:
        encoder.close()
        raise
    return encoder


def plain_chain(model: Any) -> tuple[Any, str, bool]:
    """(transformer module, pooling mode, ends in Normalize) of a model whose modules are a Hugging Face
    transformer, a known pooling and optionally ``Normalize``; :class:`NotOnOnnx` otherwise."""
    modules = list(model)
    kinds = [type(m).__name__ for m in modules]
    if getattr(model, "default_prompt_name", None):
        raise NotOnOnnx(f"it prepends the prompt {model.default_prompt_name!r}")
    normalized = bool(kinds) and kinds[-1] == "Normalize"
    if normalized:
        kinds = kinds[:-1]
    if kinds != ["Transformer", "Pooling"]:
        raise NotOnOnnx(f"its modules are {' -> '.join(type(m).__name__ for m in modules)}; the ONNX path "
                        "runs Transformer -> Pooling (-> Normalize)")
    transformer, pooling = modules[0], modules[1]
    if getattr(transformer, "backend", "torch") != "torch" or not hasattr(transformer, "auto_model"):
        raise NotOnOnnx("its transformer is not a torch Hugging Face model")
    if getattr(transformer, "processing_kwargs", None) or getattr(transformer, "query_expansion", None):
        raise NotOnOnnx("its transformer has tokenizer options of its own (processing_kwargs, "
                        "query_expansion)")
    if getattr(getattr(transformer, "tokenizer", None), "backend_tokenizer", None) is None:
        raise NotOnOnnx("its tokenizer is not a fast (tokenizers) one")
    config = pooling.get_config_dict() if hasattr(pooling, "get_config_dict") else {}
    mode = config.get("pooling_mode")
    if mode is None:  # older sentence-transformers: one flag per mode
        flags = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
                 "max": "pooling_mode_max_tokens", "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
                 "lasttoken": "pooling_mode_lasttoken"}
        on = [m for m, flag in flags.items() if config.get(flag)]
        mode = on[0] if len(on) == 1 else "+".join(on) or "none"
    if mode not in POOLINGS:
        raise NotOnOnnx(f"its pooling is {mode!r}; the ONNX path pools {', '.join(POOLINGS)}")
    return transformer, mode, normalized


def exported(transformer: Any, max_len: int, root: Path) -> Path:
    """The folder with ``model.onnx`` and ``tokenizer.json`` for ``transformer``, exported once per key."""
    tokenizer_json = _tokenizer_json(transformer.tokenizer.backend_tokenizer.to_str(), max_len)
    folder = root / export_key(transformer.auto_model, tokenizer_json, max_len)
    if (folder / "model.onnx").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{folder.name}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        log.info("RUNTIME=onnx: exporting the transformer to %s (once)", folder)
        export_token_embeddings(transformer, tmp / "model.onnx")
        try:
            os.rename(tmp, folder)
        except OSError:  # another process exported it meanwhile: use theirs
            if not (folder / "model.onnx").is_file():
                raise
    except Exception as exc:  # noqa: BLE001 - the exporter's own error: the model stays on torch
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise NotOnOnnx(f"the export failed: {type(exc).__name__}: {first}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _tokenizer_json(text: str, max_len: int) -> str:
    """The tokenizer as served: truncating at ``max_len``, no padding saved (TextTokenizer pads to the
    batch's longest; the library leaves its last call's padding in the backend tokenizer, which would
    change the export key from one call to the next)."""
    doc = json.loads(text)
    doc["padding"] = None
    doc["truncation"] = {"direction": "Right", "max_length": max_len, "strategy": "LongestFirst", "stride": 0}
    return json.dumps(doc, ensure_ascii=False)


def export_key(auto_model: Any, tokenizer_json: str, max_len: int) -> str:
    """SHA-256 of what the export depends on: weights, config, tokenizer, length, exporter."""
    import torch

    config = json.loads(auto_model.config.to_json_string(use_diff=False))
    config.pop("_name_or_path", None)  # where the model was read from: the same model elsewhere is the same
    digest = hashlib.sha256()
    for part in (_FORMAT, torch.__version__, str(OPSET), type(auto_model).__name__,
                 json.dumps(config, sort_keys=True), tokenizer_json, str(max_len)):
        digest.update(part.encode())
        digest.update(b"\0")
    for name, tensor in auto_model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


#: the tokenizer outputs an exported graph takes, in this order (those the tokenizer gives)
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export_token_embeddings(transformer: Any, path: Path) -> None:
    """``torch.onnx.export`` of a sentence-transformers Transformer module as (its tokenizer's inputs) ->
    ``last_hidden_state``; attention runs as plain ("eager") operations while exporting."""
    auto = transformer.auto_model
    sample = transformer.tokenizer(["a cat sits on the mat", "an export sample"], return_tensors="pt",
                                   padding=True)
    previous = auto.config._attn_implementation
    _set_attention(auto, "eager")
    try:
        export_onnx(auto, sample, path)
    finally:
        _set_attention(auto, previous)


def export_onnx(model: Any, sample: Any, path: Path, output: str = "last_hidden_state") -> None:
    """``torch.onnx.export`` of a Hugging Face model as the inputs of :data:`ONNX_INPUTS` that ``sample``
    (tokenised tensors) holds -> the model output ``output`` (``last_hidden_state``, ``logits``), batch
    and tokens dynamic, opset :data:`OPSET`, the TorchScript-based exporter."""
    import torch

    names = [n for n in ONNX_INPUTS if n in sample]
    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, output]}
    # the exporter's deprecation and tracer warnings are about its own internals: an export served with
    # RUNTIME=onnx is checked against the torch model on varied texts first (check_same)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = _named_inputs(model, names, output).eval()
        torch.onnx.export(module, tuple(sample[n] for n in names), str(path), input_names=names,
                          output_names=[output], dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def _set_attention(auto: Any, implementation: str) -> None:
    if hasattr(auto, "set_attn_implementation"):
        auto.set_attn_implementation(implementation)
    else:  # pragma: no cover - older transformers
        auto.config._attn_implementation = implementation


def _named_inputs(inner: Any, names: list[str], output: str) -> Any:
    """The model as a module taking its inputs positionally in ``names`` order, giving its ``output``."""
    import torch

    class NamedInputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: Any) -> Any:
            return getattr(self.inner(**dict(zip(names, inputs, strict=True))), output)

    return NamedInputs()


def check_same(torch_encoder: Any, onnx_encoder: ArtifactEncoder) -> None:
    """The ONNX model must read the probe texts as the same token ids and give the same vectors."""
    texts = list(PROBE_TEXTS)
    theirs = torch_encoder.prepare_texts(texts)
    ours = onnx_encoder.prepare_texts(texts)
    for row, text in enumerate(texts):
        a = _real_ids(theirs["input_ids"][row], theirs["attention_mask"][row])
        b = _real_ids(ours["input_ids"][row], ours["attention_mask"][row])
        if a != b:
            raise NotOnOnnx(f"its tokenizer.json reads probe text {row} ({text[:40]!r}) as other tokens "
                            f"({len(b)} tokens against {len(a)})")
    want = np.asarray(torch_encoder.forward_texts(theirs), dtype=np.float32)
    got = np.asarray(onnx_encoder.forward_texts(ours), dtype=np.float32)
    if want.shape != got.shape:
        raise NotOnOnnx(f"the export gives shape {got.shape}, the torch model {want.shape}")
    cosine = float(np.min(np.sum(l2_normalize(want) * l2_normalize(got), axis=1)))
    if not cosine >= MIN_COSINE:
        raise NotOnOnnx(f"the export's vectors differ from the torch model's (min cosine {cosine:.6f} over "
                        f"{len(texts)} probe texts, needed {MIN_COSINE})")
    onnx_encoder.info = replace(onnx_encoder.info, dimensions=int(got.shape[1]))


def _real_ids(ids: Any, mask: Any) -> list[int]:
    ids, mask = (np.asarray(x.cpu() if hasattr(x, "cpu") else x) for x in (ids, mask))
    return ids[mask > 0].tolist()
