"""The Grafana dashboard the chart ships queries only metrics the services really export.

Gateway and inference metric names come from scraping the real /metrics endpoints (the gateway's HTTP
front over a real service, the inference service's own registry after real traffic through its
gRPC front); Qdrant's from tests/data/qdrant_metrics.txt (its src/common/metrics.rs at the pinned
version).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys

import grpc
import httpx
import pytest

from gateway.http_api import create_app
from protos import inference_pb2, inference_pb2_grpc
from tests.deploy_support import ROOT
from tests.gateway_support import InferenceUnderTest, gateway_with_inference, make_store

QDRANT_METRICS = ROOT / "tests" / "data" / "qdrant_metrics.txt"
METRIC_IN_EXPR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


def _load_generator():
    path = ROOT / "scripts" / "grafana_dashboard.py"
    spec = importlib.util.spec_from_file_location("grafana_dashboard", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


grafana_dashboard = _load_generator()


def sample_names(exposition: str) -> set[str]:
    """Every series name a Prometheus text exposition can hold, from its # TYPE lines."""
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            names |= {f"{name}_sum", f"{name}_count"}
    return names


def qdrant_names() -> set[str]:
    names: set[str] = set()
    for line in QDRANT_METRICS.read_text().splitlines():
        if line and not line.startswith("#"):
            names |= {line, f"{line}_bucket", f"{line}_sum", f"{line}_count"}
    return names


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, set[str]]:
    async def scrape() -> tuple[str, str]:
        store = make_store("qdrant", tmp_path_factory.mktemp("store"))
        async with gateway_with_inference(store) as (svc, _):
            transport = httpx.ASGITransport(app=create_app(svc))
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                await client.get("/healthz")
                gateway = (await client.get("/metrics")).text
        async with InferenceUnderTest() as inference:
            async with grpc.aio.insecure_channel(inference.address) as channel:
                await inference_pb2_grpc.InferenceStub(channel).Vectorize(
                    inference_pb2.VectorizeRequest(texts=["a red shoe"]))
            assert inference.service is not None
            model = inference.service.metrics.render().decode()
        return gateway, model

    gateway, model = asyncio.run(scrape())
    return {"gateway": sample_names(gateway), "inference": sample_names(model), "qdrant": qdrant_names()}


def _exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_file_is_current():
    assert grafana_dashboard.main(["--check"]) == 0, "run: python scripts/grafana_dashboard.py"
    assert json.loads(grafana_dashboard.OUTPUT.read_text()) == grafana_dashboard.dashboard()


def test_every_queried_metric_is_exported(exported):
    everything = set().union(*exported.values())
    queried = {m for expr in _exprs(grafana_dashboard.dashboard()) for m in METRIC_IN_EXPR.findall(expr)}
    assert queried - everything == set()
    # each part of the system has panels
    for part, names in exported.items():
        assert queried & names, f"no panel queries the {part} metrics"


def test_the_check_is_real(exported):
    """A misspelt metric is not among the exported names; the scrape did find the real ones."""
    assert "polyvec_gateway_requests_total" in exported["gateway"]
    assert "polyvec_inference_forward_seconds_bucket" in exported["inference"]
    assert "rest_responses_total" in exported["qdrant"]
    assert "polyvec_gateway_request_total" not in set().union(*exported.values())


def test_panels_are_well_formed():
    dashboard = grafana_dashboard.dashboard()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
            for target in panel["targets"]:
                assert 'namespace=~"$namespace"' in target["expr"]
                assert target["expr"].count("(") == target["expr"].count(")")
