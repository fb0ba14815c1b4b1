"""One precedence rule for `polyvec inference`, `polyvec gateway` and `polyvec up`:
a flag wins over the environment, which wins over the config file, which wins over the default."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import main as gateway_main
from services.env_settings import SettingsError
from services.inference import main as inference_main
from services.up import UpError, apply_precedence, check_ports, load_config, port_is_free

ROOT = Path(__file__).resolve().parent.parent


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return str(path)


# ---- polyvec gateway ------------------------------------------------------------------------------

def _gateway(argv: list[str], environ: dict[str, str]):
    return gateway_main.settings_from_args(gateway_main.build_parser().parse_args(argv), environ)


@pytest.mark.parametrize("flag, env, expected", [
    (True, True, 3003), (False, True, 2002), (False, False, 1001)], ids=["flag", "env", "file"])
def test_gateway_flag_over_env_over_file(tmp_path, flag, env, expected):
    config = _file(tmp_path, "http_port: 1001\nGRPC_PORT: 1002\ninference_timeout_s: 7\n")
    argv = ["--config", config] + (["--http-port", "3003"] if flag else [])
    settings = _gateway(argv, {"HTTP_PORT": "2002"} if env else {})
    assert settings.http_port == expected
    assert settings.grpc_port == 1002  # the file may name a setting by its variable too
    assert settings.inference_timeout_s == 7.0


def test_gateway_without_a_file_keeps_defaults():
    settings = _gateway([], {})
    assert (settings.http_port, settings.grpc_port, settings.drain_timeout_s) == (8000, 50050, 30.0)


def test_gateway_config_values_are_parsed_and_checked_like_variables(tmp_path):
    config = _file(tmp_path, "models: {clip: '127.0.0.1:50051'}\napi_keys: [k1, k2]\nimage_urls: false\n")
    settings = _gateway(["--config", config], {})
    assert settings.models == {"clip": "127.0.0.1:50051"}
    assert settings.api_keys == ("k1", "k2") and settings.image_urls is False
    with pytest.raises(SettingsError, match="HTTP_PORT"):
        _gateway(["--config", _file(tmp_path, "http_port: lots\n")], {})


@pytest.mark.parametrize("text, message", [
    ("http_prot: 1\n", "unknown setting 'http_prot' (did you mean http_port?)"),
    ("- a list\n", "must be a mapping"),
    ("http_port: [\n", "not valid YAML"),
])
def test_gateway_bad_config_files_are_named(tmp_path, text, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        _gateway(["--config", _file(tmp_path, text)], {})


def test_gateway_command_reports_a_bad_config_file(tmp_path):
    result = subprocess.run([sys.executable, "-m", "services.cli", "gateway", "--config",
                             str(tmp_path / "missing.yaml")], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "cannot read the config file" in result.stderr and "missing.yaml" in result.stderr


# ---- polyvec inference ----------------------------------------------------------------------------

def _inference(argv: list[str], environ: dict[str, str]):
    return inference_main.settings_from_args(inference_main.build_parser().parse_args(argv), environ)


@pytest.mark.parametrize("flag, env, expected", [
    (True, True, 30), (False, True, 20), (False, False, 10)], ids=["flag", "env", "file"])
def test_inference_flag_over_env_over_file(tmp_path, flag, env, expected):
    config = _file(tmp_path, "model: sentence-transformers/all-MiniLM-L6-v2\nmax_batch_size: 10\n"
                             "HTTP_PORT: 'off'\n")
    argv = ["--config", config] + (["--max-batch-size", "30"] if flag else [])
    settings = _inference(argv, {"MAX_BATCH_SIZE": "20"} if env else {})
    assert settings.max_batch_size == expected
    assert settings.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert settings.http_port is None


def test_inference_bad_config_file_is_named(tmp_path):
    with pytest.raises(SettingsError, match="unknown setting 'max_batch'"):
        _inference(["--config", _file(tmp_path, "model: x\nmax_batch: 4\n")], {})


# ---- polyvec up -----------------------------------------------------------------------------------

UP_FILE = "data_dir: /from/file\nhost: 127.0.0.2\nhttp_port: 1001\ngrpc_port: 1002\nmodels: {m: some/model}\n"


@pytest.mark.parametrize("flag, env, expected", [
    (True, True, "3003"), (False, True, "2002"), (False, False, 1001)], ids=["flag", "env", "file"])
def test_up_flag_over_env_over_file(tmp_path, flag, env, expected):
    cfg = load_config(_file(tmp_path, UP_FILE))
    flags = {"http_port": "3003" if flag else None, "grpc_port": None, "data_dir": None, "host": None}
    environ = {"HTTP_PORT": "2002", "GRPC_PORT": "2003", "DATA_DIR": "/from/env"} if env else {}
    apply_precedence(cfg, flags, environ)
    assert cfg.http_port == expected
    assert cfg.grpc_port == ("2003" if env else 1002)
    assert cfg.data_dir == ("/from/env" if env else "/from/file")
    assert cfg.host == "127.0.0.2"


def test_up_model_ports_come_from_the_config(tmp_path):
    cfg = load_config(_file(tmp_path, "models:\n  a: {model: x, grpc_port: 50061, http_port: 8091}\n"
                                      "  b: {model: y}\n"))
    assert [(m.name, m.grpc_port, m.http_port) for m in cfg.models] == [("a", 50061, 8091), ("b", None, None)]


@pytest.mark.parametrize("text, message", [
    ("models: {a: {model: x, grpc_port: 0}}", "models.a.grpc_port must be a port number"),
    ("models: {a: {model: x, http_port: web}}", "models.a.http_port must be a port number"),
    ("models: {a: {model: x, env: {GRPC_PORT: '1'}}}", "models.a.env sets GRPC_PORT"),
    ("models: {a: {model: x, port: 1}}", "unknown key(s) port"),
])
def test_up_bad_model_ports(tmp_path, text, message):
    with pytest.raises(UpError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(_file(tmp_path, text))


def test_up_refuses_ports_used_twice_or_taken(tmp_path):
    import socket

    cfg = load_config(_file(tmp_path, "models:\n  a: {model: x, grpc_port: 50071, http_port: 50071}\n"))
    with pytest.raises(UpError, match="models.a.http_port and models.a.grpc_port are both port 50071"):
        check_ports(cfg, None, None)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        cfg = load_config(_file(tmp_path, f"models:\n  a: {{model: x, http_port: {port}}}\n"))
        with pytest.raises(UpError, match=f"models.a.http_port: port {port} on 127.0.0.1 is already in use"):
            check_ports(cfg, None, None)
        cfg = load_config(_file(tmp_path, "models: {a: x}\nhost: 127.0.0.1\n"))
        with pytest.raises(UpError, match=f"http_port: port {port}"):
            check_ports(cfg, port, None)
