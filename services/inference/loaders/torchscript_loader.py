"""TorchScript models in OpenSearch's layout (``model_format: TORCH_SCRIPT``): ``torch.jit.load``.

Both ways OpenSearch's tooling traces a model are understood, by the module's ``forward`` signature:

* one ``Dict[str, Tensor]`` argument (a traced sentence-transformers model, or a neural sparse model):
  it gets ``input_ids``, ``attention_mask`` and ``token_type_ids``;
* tensor arguments by name (a traced Hugging Face model, ``framework_type: huggingface_transformers``).

The output is picked by name from a dict (``sentence_embedding`` for dense models, ``output`` for
sparse ones), or is the first element of a tuple. Dense outputs of one vector per text are used as
they are; token embeddings are pooled by ``pooling_mode`` (see :mod:`.artifact_encoder`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..model_spec import TEXT_EMBEDDING, ModelSpec, ModelSpecError
from .artifact_encoder import ArtifactEncoder, DenseHead
from .base import TEXT, EncoderInfo
from .opensearch_layout import find_files
from .text_tokenizer import TextTokenizer, max_positions

log = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
DENSE_OUTPUTS = ("sentence_embedding", "token_embeddings", "last_hidden_state")


class TorchScriptRunner:
    """A ``torch.jit`` module on a device: tokenised arrays in, the chosen output tensor out."""

    def __init__(self, path: Path, device: str, dtype: Any, prefer: tuple[str, ...]) -> None:
        import torch

        self._torch = torch
        self.device = device
        self.prefer = prefer
        try:
            model = torch.jit.load(str(path), map_location=device)
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelSpecError(
                f"{path.name} is not a TorchScript model (torch.jit.load: {first})") from None
        model.eval()
        if dtype is not None and dtype != torch.float32:
            model.to(dtype)
        self.model = model
        args = list(model.forward.schema.arguments)[1:]  # skip self
        if len(args) == 1 and str(args[0].type).startswith("Dict"):
            self.arg_names: list[str] | None = None
        else:
            self.arg_names = []
            for arg in args:
                name = next((n for n in INPUT_NAMES if n in arg.name), None)
                if name is None:
                    raise ModelSpecError(
                        f"{path.name}: forward() takes an argument {arg.name!r}; the tokenizer gives "
                        f"{', '.join(INPUT_NAMES)}")
                self.arg_names.append(name)

    def __call__(self, prepared: dict[str, np.ndarray]) -> Any:
        torch = self._torch
        tensors = {k: torch.from_numpy(v).to(self.device) for k, v in prepared.items()}
        with torch.inference_mode():
            out = self.model(tensors) if self.arg_names is None \
                else self.model(*[tensors[n] for n in self.arg_names])
        return pick_output(out, self.prefer)

    def release(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()


def pick_output(out: Any, prefer: tuple[str, ...]) -> Any:
    """The tensor to use from a module's output: by name from a dict, else the first of a tuple."""
    if isinstance(out, dict):
        for name in prefer:
            if name in out:
                return out[name]
        return next(iter(out.values()))
    if isinstance(out, list | tuple):
        return out[0]
    return out


def load_torchscript(spec: ModelSpec, choice: Any, artifact: Path | None) -> ArtifactEncoder:
    """A dense TorchScript model (``TEXT_EMBEDDING``) from an extracted OpenSearch artifact."""
    if artifact is None:
        raise ModelSpecError(f"{spec.name}: type torchscript needs url, localpath or modelLocation")
    files = find_files(artifact, spec)
    tokenizer = TextTokenizer(files.tokenizer, max_length=spec.max_text_tokens,
                              model_max_positions=max_positions(files.config or spec.extra.get("all_config")))
    runner = TorchScriptRunner(files.model, str(choice.device), getattr(choice, "torch_dtype", None),
                               DENSE_OUTPUTS)
    info = EncoderInfo(name=spec.name, type="torchscript", dimensions=0, modalities=(TEXT,),
                       device=str(choice.device), precision=choice.precision or "fp32",
                       normalize=spec.normalize, max_text_tokens=tokenizer.max_length,
                       function_name=TEXT_EMBEDDING)
    encoder = ArtifactEncoder(tokenizer, runner, DenseHead(spec.pooling_mode or "mean"), info,
                              release=runner.release)
    return probe_dense(encoder, files.model_file)


def probe_dense(encoder: ArtifactEncoder, model_file: Path | None) -> ArtifactEncoder:
    """Run one text to learn the dimensions (and fail now, naming the file, if the model cannot run)."""
    try:
        out = encoder.forward_texts(encoder.prepare_texts(["a"]))
    except ModelSpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model's own error, reported in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        name = model_file.name if model_file is not None else encoder.info.name
        raise ModelSpecError(f"{name} did not run on a test text: {type(exc).__name__}: {first}") from None
    if out.ndim != 2 or out.shape[0] != 1:
        raise ModelSpecError(f"{encoder.info.name}: the model returned shape {tuple(out.shape)} for one text")
    encoder.info = EncoderInfo(**{**encoder.info.__dict__, "dimensions": int(out.shape[1])})
    log.info("%s model %s ready: %d dims, max %d tokens", encoder.info.type, encoder.info.name,
             encoder.info.dimensions, encoder.info.max_text_tokens)
    return encoder
