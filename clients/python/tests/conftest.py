"""The client's tests talk to a real gateway: its HTTP and gRPC fronts, served from a thread on loopback
ports over a real store and real in-process inference servers (tests/gateway_thread.py in the repo)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CLIENT_SRC = HERE.parent / "src"
REPO = HERE.parents[2]
for path in (CLIENT_SRC, REPO):  # this checkout's client and gateway, installed or not
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", params=["edge", "qdrant"])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A running gateway (HTTP + gRPC) on the embedded store and on the qdrant-client adapter."""
    from tests.gateway_thread import GatewayThread

    with GatewayThread(tmp_path_factory.mktemp(f"gw-{request.param}"), request.param,
                       inference_retry_budget_s=0, inference_query_retry_budget_s=0) as gw:
        yield gw


@pytest.fixture(params=["http", "grpc"])
def url(request: pytest.FixtureRequest, gateway) -> str:
    """The gateway's URL over each transport: its HTTP API, and its gRPC API (``grpc://``)."""
    return gateway.http_url if request.param == "http" else f"grpc://{gateway.grpc_target}"


def child_env() -> dict[str, str]:
    """Environment for a child process that runs this checkout's client (and gateway) code."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(CLIENT_SRC), str(REPO), env.get("PYTHONPATH", "")])
    for key in ("POLYVEC_URL", "POLYVEC_API_KEY"):
        env.pop(key, None)
    return env
