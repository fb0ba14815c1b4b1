"""ONNX models in OpenSearch's layout (``model_format: ONNX``), run by onnxruntime.

The session runs on ``CPUExecutionProvider``, or on ``CUDAExecutionProvider`` when the service was
asked for a GPU (``ENABLE_CUDA=1``) and onnxruntime has it (the ``onnxruntime-gpu`` build); otherwise
it falls back to the CPU and says so in the log. The session's threads are the cores this process
may use. Inputs are fed by the names the graph declares (``input_ids``, ``attention_mask``,
``token_type_ids``, each in the integer type it asks for). The output is ``sentence_embedding`` when
the graph has it (opensearch-py-ml's export), else its first output: one vector per text is used as
is, token embeddings are pooled by ``pooling_mode`` (OpenSearch's older exports).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..model_spec import TEXT_EMBEDDING, ModelSpec, ModelSpecError
from .artifact_encoder import ArtifactEncoder, DenseHead
from .base import TEXT, EncoderInfo
from .opensearch_layout import find_files
from .text_tokenizer import TextTokenizer, max_positions
from .torchscript_loader import DENSE_OUTPUTS, INPUT_NAMES, probe_dense

log = logging.getLogger(__name__)

_NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class OnnxRunner:
    """An onnxruntime session: tokenised arrays in, the chosen output (numpy) out."""

    def __init__(self, path: Path, device: str, prefer: tuple[str, ...]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = usable_cores()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle worker threads sleep instead of spinning: the gRPC loop and the tokenising threads
        # share these cores (see services/inference/cpu_threads.py for the same choice with OpenMP)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list[Any] = ["CPUExecutionProvider"]
        self.device = "cpu"
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                index = device.split(":", 1)[1] if ":" in device else "0"
                providers = [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"]
                self.device = device
            else:
                log.warning("ENABLE_CUDA=1 but this onnxruntime has no CUDAExecutionProvider "
                            "(available: %s); running %s on the CPU",
                            ", ".join(ort.get_available_providers()), path.name)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelSpecError(f"{path.name} is not a loadable ONNX model: {first}") from None
        if self.device.startswith("cuda") and "CUDAExecutionProvider" not in self.session.get_providers():
            log.warning("onnxruntime could not start CUDA for %s; running on the CPU", path.name)
            self.device = "cpu"
        self.inputs: list[tuple[str, Any]] = []
        for arg in self.session.get_inputs():
            if arg.name not in INPUT_NAMES:
                raise ModelSpecError(
                    f"{path.name}: the graph takes an input {arg.name!r}; the tokenizer gives "
                    f"{', '.join(INPUT_NAMES)}")
            if arg.type not in _NUMPY_TYPES:
                raise ModelSpecError(
                    f"{path.name}: input {arg.name!r} is {arg.type}; expected int64 or int32")
            self.inputs.append((arg.name, _NUMPY_TYPES[arg.type]))
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = next((name for name in prefer if name in outputs), outputs[0])
        log.info("onnxruntime session for %s on %s: %d threads, output %r", path.name,
                 self.session.get_providers()[0], usable_cores(), self.output)

    def __call__(self, prepared: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: prepared[name].astype(dtype, copy=False) for name, dtype in self.inputs}
        return self.session.run([self.output], feeds)[0]

    def release(self) -> None:
        self.session = None


def load_onnx(spec: ModelSpec, choice: Any, artifact: Path | None) -> ArtifactEncoder:
    """A dense ONNX model (``TEXT_EMBEDDING``) from an extracted OpenSearch artifact."""
    if artifact is None:
        raise ModelSpecError(f"{spec.name}: type onnx needs url, localpath or modelLocation")
    files = find_files(artifact, spec)
    tokenizer = TextTokenizer(files.tokenizer, max_length=spec.max_text_tokens,
                              model_max_positions=max_positions(files.config or spec.extra.get("all_config")))
    runner = OnnxRunner(files.model, str(choice.device), DENSE_OUTPUTS)
    if (choice.precision or "fp32") != "fp32":
        log.info("PRECISION=%s applies to torch models; the ONNX graph runs in the precision it was "
                 "exported in", choice.precision)
    info = EncoderInfo(name=spec.name, type="onnx", dimensions=0, modalities=(TEXT,), device=runner.device,
                       precision="fp32", normalize=spec.normalize, max_text_tokens=tokenizer.max_length,
                       function_name=TEXT_EMBEDDING, runtime="onnx")
    encoder = ArtifactEncoder(tokenizer, runner, DenseHead(spec.pooling_mode or "mean"), info,
                              release=runner.release)
    return probe_dense(encoder, files.model_file)
