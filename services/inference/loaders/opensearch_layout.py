"""OpenSearch's model artifact layout: what an extracted zip (or a folder) must hold.

* exactly one model file: ``*.pt`` (TorchScript) or ``*.onnx`` (ONNX) - none for SPARSE_TOKENIZE;
* ``tokenizer.json`` (Hugging Face ``tokenizers``) beside it or at the root;
* optionally ``config.json`` (the Hugging Face model config: vocabulary, positions) and
  ``idf.json`` (token -> weight, for SPARSE_TOKENIZE).

Every refusal names the file (or what is missing) and the folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..model_spec import ONNX, SPARSE_TOKENIZE, TORCH_SCRIPT, ModelSpec, ModelSpecError
from .text_tokenizer import read_json

SUFFIXES: dict[str, str] = {".pt": TORCH_SCRIPT, ".onnx": ONNX}
_JUNK = ("__MACOSX",)


@dataclass(frozen=True)
class ArtifactFiles:
    root: Path
    model_file: Path | None
    model_format: str | None  # TORCH_SCRIPT | ONNX | None (tokenizer only)
    tokenizer: Path
    config: dict | None  # config.json, when present
    idf: Path | None

    @property
    def model(self) -> Path:
        """The model file (an artifact found for a model that runs one always has it)."""
        if self.model_file is None:
            raise ModelSpecError(f"no .pt or .onnx model file in {self.root}")
        return self.model_file


def find_files(root: Path, spec: ModelSpec) -> ArtifactFiles:
    """The files of an OpenSearch artifact under ``root``, checked against ``spec``."""
    if not root.is_dir():
        raise ModelSpecError(
            f"{spec.name}: expected a zip or folder holding a .pt or .onnx file and tokenizer.json, "
            f"got the file {root}")
    files = [p for p in sorted(root.rglob("*"))
             if p.is_file() and not any(part in _JUNK for part in p.relative_to(root).parts)]
    models = [p for p in files if p.suffix.lower() in SUFFIXES]
    need_model = spec.function_name != SPARSE_TOKENIZE
    model_file = model_format = None
    if len(models) > 1:
        names = ", ".join(str(p.relative_to(root)) for p in models)
        raise ModelSpecError(f"{spec.name}: found several model files in {root} ({names}); expected one")
    if models:
        model_file = models[0]
        model_format = SUFFIXES[model_file.suffix.lower()]
        if spec.model_format is not None and spec.model_format != model_format and need_model:
            raise ModelSpecError(
                f"{spec.name}: model_format is {spec.model_format} but the archive holds "
                f"{model_file.relative_to(root)} ({model_format})")
    elif need_model:
        want = {TORCH_SCRIPT: "a .pt (TorchScript)", ONNX: "an .onnx"}.get(spec.model_format or "",
                                                                           "a .pt or .onnx")
        raise ModelSpecError(f"{spec.name}: no model file in {root}: expected {want} file and tokenizer.json")
    if not need_model:
        model_file = model_format = None
    tokenizer = _beside(root, model_file, "tokenizer.json")
    if tokenizer is None:
        raise ModelSpecError(f"{spec.name}: no tokenizer.json in {root} (OpenSearch's layout needs one)")
    config_path = _beside(root, model_file, "config.json")
    config = read_json(config_path, "model config") if config_path is not None else None
    return ArtifactFiles(root=root, model_file=model_file, model_format=model_format, tokenizer=tokenizer,
                         config=config, idf=_beside(root, model_file, "idf.json"))


def _beside(root: Path, model_file: Path | None, name: str) -> Path | None:
    for folder in ([model_file.parent] if model_file is not None else []) + [root]:
        if (folder / name).is_file():
            return folder / name
    return None
