"""`polyvec inference` as a real process: serves a tiny model, answers probes, stops on SIGTERM;
configuration errors exit 2 with one clear line."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos import inference_pb2, inference_pb2_grpc
from services.inference.wire import unpack_vectors
from tests.model_factories import build_sentence_transformers_folder

REPO = Path(__file__).resolve().parent.parent


def polyvec_command() -> list[str]:
    script = Path(sys.executable).parent / "polyvec"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "services.cli"]


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL", "MODEL_PROPERTIES")}
    env.update({"MODEL_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        polyvec_command() + ["inference", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def st_folder(tmp_path_factory) -> Path:
    return build_sentence_transformers_folder(tmp_path_factory.mktemp("cli") / "tiny-st")


class Server:
    """A `polyvec inference` child process whose stderr is collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            polyvec_command() + ["inference", *args],
            env=env,
            cwd=REPO,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, pattern: str, timeout: float = 90) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            if self.proc.poll() is not None:
                time.sleep(0.2)
                raise AssertionError(f"server exited ({self.proc.returncode}): " + "\n".join(self.lines))
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def test_serves_tiny_model_and_stops_on_sigterm(st_folder, tmp_path):
    from sentence_transformers import SentenceTransformer

    spec = {"type": "sentence_transformers", "name": "tiny-st", "localpath": str(st_folder)}
    env = base_env(tmp_path, MODEL_PROPERTIES=json.dumps(spec), MAX_BATCH_SIZE="8")
    server = Server(
        ["--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0", "--batch-wait-ms", "1"], env
    )
    try:
        m = server.wait_for_line(r"gRPC listening on 127\.0\.0\.1:(\d+), HTTP on port (\d+)")
        grpc_port, http_port = int(m.group(1)), int(m.group(2))
        # probes answer while (or after) the model loads; wait for SERVING
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 90
            status = None
            while time.monotonic() < deadline:
                status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.1)
            assert status == health_pb2.HealthCheckResponse.SERVING, server.lines
            stub = inference_pb2_grpc.InferenceStub(channel)
            texts = ["a cat sits on the mat", "the stock market crash"]
            resp = stub.Vectorize(inference_pb2.VectorizeRequest(texts=texts), timeout=30)
            meta = stub.Meta(inference_pb2.MetaRequest(), timeout=10)
        assert meta.type == "sentence_transformers" and meta.limits.max_batch_size == 8
        served = unpack_vectors(resp.text_vectors, resp.dimensions)
        ref = SentenceTransformer(str(st_folder), device="cpu").encode(texts, convert_to_numpy=True)
        cos = (served * ref).sum(1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(ref, axis=1))
        assert cos.min() >= 0.9999, cos
        assert httpx.get(f"http://127.0.0.1:{http_port}/.well-known/ready", timeout=10).status_code == 204

        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0, server.lines
        server._reader.join(5)
        assert any("stopped" in line for line in server.lines), server.lines
        assert not any("Traceback" in line for line in server.lines), server.lines
    finally:
        server.kill()


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("polyvec inference: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_bad_model_properties_exit_2_naming_the_key(tmp_path, st_folder):
    spec = {"type": "sentence_transformers", "name": "x", "localpath": str(st_folder), "bogusKey": 1}
    line = _one_line_error(run_cli([], base_env(tmp_path, MODEL_PROPERTIES=json.dumps(spec))))
    assert "bogusKey" in line


def test_bad_settings_and_unknown_model_exit_2(tmp_path):
    line = _one_line_error(run_cli(["--max-batch-size", "0"], base_env(tmp_path, MODEL="x")))
    assert "MAX_BATCH_SIZE" in line
    line = _one_line_error(run_cli(["--model", "no-such-model"], base_env(tmp_path)))
    assert "no-such-model" in line and "MODEL" in line
    line = _one_line_error(run_cli([], base_env(tmp_path)))
    assert "MODEL_PROPERTIES" in line


def test_fp16_on_cpu_and_checksum_mismatch_exit_2(tmp_path, st_folder):
    spec = {"type": "sentence_transformers", "name": "tiny", "localpath": str(st_folder)}
    line = _one_line_error(
        run_cli(["--precision", "fp16"], base_env(tmp_path, MODEL_PROPERTIES=json.dumps(spec)))
    )
    assert "fp16" in line

    weights = next(p for p in st_folder.rglob("*.safetensors"))
    single = {"type": "open_clip", "name": "tiny", "localpath": str(weights), "sha256": "0" * 64}
    line = _one_line_error(
        run_cli(["--download-only"], base_env(tmp_path, MODEL_PROPERTIES=json.dumps(single)))
    )
    actual = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert f"sha256 mismatch for localpath {weights}: expected {'0' * 64}, got {actual}" in line, line


def test_download_only_loads_and_exits_0(tmp_path, st_folder):
    spec = {"type": "sentence_transformers", "name": "tiny", "localpath": str(st_folder)}
    result = run_cli(["--download-only"], base_env(tmp_path, MODEL_PROPERTIES=json.dumps(spec)))
    assert result.returncode == 0, result.stderr
    assert "is ready" in result.stderr


def test_cuda_asked_but_unavailable_exits_2(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal only happens without it")
    spec = {"type": "sentence_transformers", "name": "tiny", "localpath": str(tmp_path)}
    line = _one_line_error(run_cli(["--enable-cuda"], base_env(tmp_path, MODEL_PROPERTIES=json.dumps(spec))))
    assert "ENABLE_CUDA" in line
