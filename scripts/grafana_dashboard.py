"""Write the polyvec Grafana dashboard, helm/polyvec/dashboards/polyvec.json, from the panels below.

    python scripts/grafana_dashboard.py          # rewrite the JSON
    python scripts/grafana_dashboard.py --check  # exit 1 when the committed JSON is stale

Every query uses metrics the services export: the gateway's and the inference services' /metrics
(tests/test_deploy_dashboard.py scrapes real ones and compares) and Qdrant's (names from its
src/common/metrics.rs, listed in tests/data/qdrant_metrics.txt). Prometheus adds ``namespace``,
``service`` and ``pod`` to every series a ServiceMonitor scrapes; the model panels group by
``service``, one per model.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "helm" / "polyvec" / "dashboards" / "polyvec.json"
RATE = "[$__rate_interval]"
NS = 'namespace=~"$namespace"'


@dataclass
class Panel:
    title: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"
    width: int = 8


@dataclass
class Row:
    title: str
    panels: list[Panel] = field(default_factory=list)


def quantile(q: float, metric: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{NS}}}{RATE})))"


def rate(metric: str, by: str, extra: str = "") -> str:
    selector = NS + (f", {extra}" if extra else "")
    return f"sum by ({by}) (rate({metric}{{{selector}}}{RATE}))"


ROWS = [
    Row("Gateway: HTTP API", [
        Panel("Requests / s by route", [(rate("polyvec_gateway_requests_total", "method, route"),
                                         "{{method}} {{route}}")], "reqps"),
        Panel("Errors / s by status", [(rate("polyvec_gateway_requests_total", "status", 'status=~"4..|5.."'),
                                        "{{status}}")], "reqps",
              "4xx: bad requests (the body names the field); 503: a model or Qdrant did not answer."),
        Panel("Latency p50 / p99 by route", [
            (quantile(0.5, "polyvec_gateway_request_seconds", "route"), "p50 {{route}}"),
            (quantile(0.99, "polyvec_gateway_request_seconds", "route"), "p99 {{route}}"),
        ], "s"),
    ]),
    Row("Gateway: gRPC API", [
        Panel("Calls / s by method and code", [(rate("polyvec_gateway_grpc_requests_total", "method, code"),
                                                "{{method}} {{code}}")], "reqps"),
        Panel("Latency p50 / p99 by method", [
            (quantile(0.5, "polyvec_gateway_grpc_request_seconds", "method"), "p50 {{method}}"),
            (quantile(0.99, "polyvec_gateway_grpc_request_seconds", "method"), "p99 {{method}}"),
        ], "s"),
        Panel("Objects imported / s",
              [(rate("polyvec_gateway_import_objects_total", "result"), "{{result}}")], "short",
              "Per object: failed ones (bad input, a model that rejected them) are not written."),
    ]),
    Row("Gateway: calls to the models and to Qdrant", [
        Panel("Inference call latency p99 by model", [
            (quantile(0.99, "polyvec_gateway_inference_call_seconds", "model, method"),
             "{{model}} {{method}}")], "s", "One logical call from the gateway, retries included."),
        Panel("Inference retries and failures / s", [
            (rate("polyvec_gateway_inference_retries_total", "model, code"), "retry {{model}} {{code}}"),
            (rate("polyvec_gateway_inference_failures_total", "model, reason"),
             "failed {{model}} {{reason}}"),
        ], "short", "Retries: RESOURCE_EXHAUSTED (the model's queue is full) and UNAVAILABLE (down, "
                    "restarting), within INFERENCE_RETRY_BUDGET_S. Failures: unavailable (no answer), "
                    "overloaded (queue full for the whole budget: 429), rejected (bad input)."),
        Panel("Inference calls in flight by model", [
            (f"sum by (model) (polyvec_gateway_inference_in_flight{{{NS}}})", "{{model}}")], "short",
            "At most INFERENCE_CONCURRENCY per model and gateway."),
        Panel("Requests waiting for a model, and shed", [
            (f"sum by (model) (polyvec_gateway_inference_requests{{{NS}}})", "using {{model}}"),
            (f"sum by (model) (polyvec_gateway_inference_waiting_calls{{{NS}}})", "calls waiting {{model}}"),
            (rate("polyvec_gateway_inference_shed_total", "model"), "shed/s {{model}}"),
        ], "short", "Requests using a model (at most INFERENCE_CONCURRENCY + INFERENCE_MAX_WAITING per "
                    "gateway); past that they are shed with 429 + Retry-After."),
        Panel("Qdrant call latency p99 by operation", [
            (quantile(0.99, "polyvec_gateway_store_seconds", "operation"), "{{operation}}")], "s",
            "As the gateway sees it: the network included."),
        Panel("Qdrant call errors / s by operation", [
            (rate("polyvec_gateway_store_seconds_count", "operation", 'outcome="error"'), "{{operation}}")],
            "short"),
    ]),
    Row("Models: inference services", [
        Panel("Items / s by model and modality", [
            (rate("polyvec_inference_items_total", "service, modality"), "{{service}} {{modality}}")],
            "short", "Texts and images vectorized (each model's Service is one series)."),
        Panel("Requests / s by status", [
            (rate("polyvec_inference_requests_total", "service, endpoint, status"),
             "{{service}} {{endpoint}} {{status}}")], "reqps",
            "resource_exhausted: the queue was full (MAX_QUEUE), the caller was told to retry."),
        Panel("Request latency p99", [
            (quantile(0.99, "polyvec_inference_request_seconds", "service, endpoint"),
             "{{service}} {{endpoint}}")], "s"),
        Panel("Forward pass p50 / p99", [
            (quantile(0.5, "polyvec_inference_forward_seconds", "service"), "p50 {{service}}"),
            (quantile(0.99, "polyvec_inference_forward_seconds", "service"), "p99 {{service}}"),
        ], "s"),
        Panel("Mean batch size", [
            (f"sum by (service) (rate(polyvec_inference_batch_size_sum{{{NS}}}{RATE})) / "
             f"sum by (service) (rate(polyvec_inference_batch_size_count{{{NS}}}{RATE}))", "{{service}}")],
            "short", "Items per forward pass: cross-request batching at work (MAX_BATCH_SIZE at most)."),
        Panel("Queue depth", [(f"max by (service) (polyvec_inference_queue_depth{{{NS}}})", "{{service}}")],
              "short", "Items waiting for the model; MAX_QUEUE is the limit."),
        Panel("Failed batches / s", [(rate("polyvec_inference_batch_failures_total", "service, modality"),
                                      "{{service}} {{modality}}")], "short",
              "A failed shared batch is re-run per request, so only the bad request fails."),
    ]),
    Row("Qdrant", [
        Panel("REST responses / s by endpoint", [(rate("rest_responses_total", "endpoint, status"),
                                                  "{{endpoint}} {{status}}")], "reqps"),
        Panel("gRPC responses / s by endpoint", [(rate("grpc_responses_total", "endpoint"), "{{endpoint}}")],
              "reqps"),
        Panel("REST latency p99", [(quantile(0.99, "rest_responses_duration_seconds", "endpoint"),
                                    "{{endpoint}}")], "s"),
        Panel("Points per collection", [(f"max by (id) (collection_points{{{NS}}})", "{{id}}")], "short"),
        Panel("Resident memory by node", [(f"max by (pod) (memory_resident_bytes{{{NS}}})", "{{pod}}")],
              "bytes"),
        Panel("Cluster peers", [(f"max by (pod) (cluster_peers_total{{{NS}}})", "{{pod}}")], "short",
              "Peers each node knows of; all nodes should agree on qdrant.replicas."),
    ]),
]


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }


def dashboard() -> dict:
    panels: list[dict] = []
    panel_id, y = 1, 0
    for row in ROWS:
        panels.append({"id": panel_id, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        panel_id, y, x = panel_id + 1, y + 1, 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y = 0, y + 8
            panels.append(_panel_json(panel, panel_id, x, y))
            panel_id, x = panel_id + 1, x + panel.width
        y += 8
    return {
        "uid": "polyvec-overview",
        "title": "polyvec",
        "description": "polyvec gateway, inference services and Qdrant "
                       "(written by scripts/grafana_dashboard.py)",
        "tags": ["polyvec", "qdrant", "vector-search"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source",
             "current": {}, "hide": 0},
            {"name": "namespace", "type": "query", "label": "Namespace",
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": {"query": "label_values(polyvec_gateway_requests_total, namespace)", "refId": "ns"},
             "definition": "label_values(polyvec_gateway_requests_total, namespace)",
             "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "current": {}, "hide": 0},
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--check"]:
        if not OUTPUT.is_file() or OUTPUT.read_text() != render():
            print(f"stale: {OUTPUT} (run python scripts/grafana_dashboard.py)", file=sys.stderr)
            return 1
        return 0
    if args:
        print(__doc__, file=sys.stderr)
        return 2
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
