"""Inference service settings, read from the environment (flags mirror them).

Every variable here is listed in :data:`ENV_VARS`; deployment files are tested
against that list so they cannot set a variable the code does not read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.env_settings import (
    SettingsError,
    check_port,
    env_vars,
    parse_bool,
    parse_float,
    parse_int,
    parse_port,
    read_env,
)
from services.env_settings import env_name as _env_name
from services.tracing import ENV_VARS as TRACING_ENV_VARS

__all__ = ["ENV_VARS", "InferenceSettings", "SettingsError", "env_name", "parse_bool"]


#: the default MAX_BATCH_TOKENS on a CPU: a forward pass costs its padded tokens there, and batches of
#: similar lengths this size took ~10% less CPU than length-sorted batches of 32 texts (README, Performance)
CPU_MAX_BATCH_TOKENS = 1024


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "polyvec" / "models")


#: RUNTIME's values
RUNTIMES = ("torch", "onnx")


@dataclass
class InferenceSettings:
    # which model
    model: str | None = field(default=None, metadata={"env": "MODEL"})
    model_properties: str | None = field(default=None, metadata={"env": "MODEL_PROPERTIES"})
    model_auth: str | None = field(default=None, metadata={"env": "MODEL_AUTH"})
    model_cache_dir: str = field(default_factory=_default_cache_dir, metadata={"env": "MODEL_CACHE_DIR"})
    model_format: str | None = field(default=None, metadata={"env": "MODEL_FORMAT"})  # TORCH_SCRIPT | ONNX
    # sparse models: how weights become sparse vectors
    sparse_prune_ratio: float = field(default=0.0, metadata={"env": "SPARSE_PRUNE_RATIO"})
    sparse_max_terms: int = field(default=0, metadata={"env": "SPARSE_MAX_TERMS"})  # 0: no limit
    # where it runs
    enable_cuda: bool = field(default=False, metadata={"env": "ENABLE_CUDA"})
    cuda_device: int = field(default=0, metadata={"env": "CUDA_DEVICE"})
    precision: str | None = field(default=None, metadata={"env": "PRECISION"})
    # what runs a sentence-transformers text model: torch, or onnxruntime on a cached ONNX export of it
    # (checked against torch at load; a model that cannot stays on torch, saying why)
    runtime: str = field(default="torch", metadata={"env": "RUNTIME"})
    # network
    host: str = field(default="0.0.0.0", metadata={"env": "HOST"})
    grpc_port: int = field(default=50051, metadata={"env": "GRPC_PORT"})
    http_port: int | None = field(default=8080, metadata={"env": "HTTP_PORT"})  # None: HTTP off
    # batching and limits
    max_batch_size: int = field(default=32, metadata={"env": "MAX_BATCH_SIZE"})
    # tokens in one text batch, counted with padding; None: CPU_MAX_BATCH_TOKENS on a CPU, no limit on a
    # GPU; 0: no limit
    max_batch_tokens: int | None = field(default=None, metadata={"env": "MAX_BATCH_TOKENS"})
    # a forward pass's fixed cost in padded tokens: with a token budget, the waiting texts are split into
    # the length runs that cost the least with it (see services.inference.batcher)
    batch_pass_tokens: int = field(default=64, metadata={"env": "BATCH_PASS_TOKENS"})
    batch_wait_ms: float = field(default=2.0, metadata={"env": "BATCH_WAIT_MS"})
    # send a partial batch before BATCH_WAIT_MS is over when the arrival rate shows waiting will not pay;
    # off by default: on MiniLM it cost up to 10% more CPU per text and gained no throughput (README, issue 8)
    batch_early_cut: bool = field(default=False, metadata={"env": "BATCH_EARLY_CUT"})
    max_queue: int = field(default=2048, metadata={"env": "MAX_QUEUE"})
    max_items_per_request: int = field(default=1024, metadata={"env": "MAX_ITEMS_PER_REQUEST"})
    max_request_bytes: int = field(default=64 * 1024 * 1024, metadata={"env": "MAX_REQUEST_BYTES"})
    max_image_pixels: int = field(default=40_000_000, metadata={"env": "MAX_IMAGE_PIXELS"})
    prep_threads: int = field(default=2, metadata={"env": "PREP_THREADS"})
    # Python's thread switch interval in the service: how long a thread may hold the GIL while another
    # waits (Python's default is 5 ms). The model thread needs the GIL between its operations, and each
    # batch hand-off (scheduler, preparation, model) needs it while the event loop answers the last
    # batch's callers; 1 ms against 5 in A/B runs: MiniLM 1.03-1.34x in every serving case at 0.8-0.98x
    # the CPU per text, images and SPLADE-tiny within noise (README, Performance)
    switch_interval_ms: float = field(default=1.0, metadata={"env": "SWITCH_INTERVAL_MS"})
    log_level: str = field(default="INFO", metadata={"env": "LOG_LEVEL"})

    def validate(self) -> InferenceSettings:
        if not self.model and not self.model_properties:
            raise SettingsError("set MODEL (a built-in model name) or MODEL_PROPERTIES (JSON model spec)")
        if self.model and self.model_properties:
            raise SettingsError("set only one of MODEL and MODEL_PROPERTIES")
        if self.precision is not None and self.precision not in ("fp32", "fp16", "bf16"):
            raise SettingsError(f"PRECISION must be fp32, fp16 or bf16, not {self.precision!r}")
        if self.runtime not in RUNTIMES:
            raise SettingsError(f"RUNTIME must be {' or '.join(RUNTIMES)}, not {self.runtime!r}")
        for name in ("max_batch_size", "max_queue", "max_items_per_request", "max_request_bytes",
                     "max_image_pixels", "prep_threads"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{env_name(name)} must be at least 1, not {getattr(self, name)}")
        if self.max_batch_tokens is not None and self.max_batch_tokens < 0:
            raise SettingsError(f"MAX_BATCH_TOKENS must be >= 0 (0: no limit), not {self.max_batch_tokens}")
        if self.batch_pass_tokens < 0:
            raise SettingsError(f"BATCH_PASS_TOKENS must be >= 0, not {self.batch_pass_tokens}")
        if not 0 < self.switch_interval_ms <= 1000:
            raise SettingsError(
                f"SWITCH_INTERVAL_MS must be above 0 and at most 1000, not {self.switch_interval_ms}")
        if self.batch_wait_ms < 0:
            raise SettingsError(f"BATCH_WAIT_MS must be >= 0, not {self.batch_wait_ms}")
        if self.model_format is not None and self.model_format not in ("TORCH_SCRIPT", "ONNX"):
            raise SettingsError(f"MODEL_FORMAT must be TORCH_SCRIPT or ONNX, not {self.model_format!r}")
        if self.model_format is not None and self.model_properties:
            raise SettingsError("MODEL_FORMAT chooses the artifact of a built-in MODEL; with "
                                "MODEL_PROPERTIES give model_format in the spec")
        if not 0.0 <= self.sparse_prune_ratio < 1.0:
            raise SettingsError(
                f"SPARSE_PRUNE_RATIO must be at least 0 and below 1, not {self.sparse_prune_ratio}")
        if self.sparse_max_terms < 0:
            raise SettingsError(f"SPARSE_MAX_TERMS must be >= 0 (0: no limit), not {self.sparse_max_terms}")
        for name in ("grpc_port", "http_port"):
            check_port(env_name(name), getattr(self, name))
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 file_values: Mapping[str, str] | None = None, **overrides) -> InferenceSettings:
        """Read every setting: ``overrides`` (flags, not None) > ``environ`` (default: os.environ) >
        ``file_values`` (a config file, see services.env_settings.read_settings_file) > defaults."""
        return cls(**read_env(cls, _parse, environ, overrides, file_values)).validate()


def env_name(attr: str) -> str:
    return _env_name(InferenceSettings, attr)


_INTS = {"cuda_device", "grpc_port", "max_batch_size", "max_batch_tokens", "batch_pass_tokens", "max_queue",
         "max_items_per_request",
         "max_request_bytes", "max_image_pixels", "prep_threads", "sparse_max_terms"}


def _parse(attr: str, env: str, raw: str):
    if attr in ("enable_cuda", "batch_early_cut"):
        return parse_bool(env, raw)
    if attr == "http_port":
        return parse_port(env, raw)
    if attr in _INTS:
        return parse_int(env, raw)
    if attr in ("batch_wait_ms", "switch_interval_ms"):
        return parse_float(env, raw, "milliseconds")
    if attr == "sparse_prune_ratio":
        return parse_float(env, raw, "a share of the largest weight, e.g. 0.1")
    if attr in ("precision", "runtime"):
        return raw.strip().lower()
    if attr == "model_format":
        return raw.strip().upper().replace("-", "_") or None
    return raw


#: Every environment variable the inference service reads.
ENV_VARS: tuple[str, ...] = env_vars(InferenceSettings) + (
    "XDG_CACHE_HOME",
    "OMP_WAIT_POLICY",
    "GOMP_SPINCOUNT",
    "OMP_NUM_THREADS",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "HF_HUB_OFFLINE",
    "OPENSEARCH_ARTIFACTS_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
) + TRACING_ENV_VARS
