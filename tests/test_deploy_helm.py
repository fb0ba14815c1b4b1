"""The Helm chart rendered, linted and validated offline (helm-python-sdk + kubernetes-validate)."""

from __future__ import annotations

import copy

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from gateway.config import parse_models
from tests.deploy_support import (
    CHART,
    all_objects,
    example_values,
    find,
    pod_spec,
    render_chart,
    validate_manifest,
)

K8S_VERSION = kubernetes_validate.latest_version()  # newest schema set shipped with the package
VALUE_SETS = [None, "values-gpu.yaml", "values-distributed.yaml", "values-production.yaml"]


def _ids(name: str | None) -> str:
    return name or "defaults"


@pytest.fixture(scope="module", params=VALUE_SETS, ids=_ids)
def rendered(request):
    return request.param, render_chart(example_values(request.param))


def test_every_manifest_passes_strict_kubernetes_validation(rendered):
    _, manifests = rendered
    objects = all_objects(manifests)
    assert objects
    for obj in objects:
        validate_manifest(obj, K8S_VERSION)  # raises with the path on error (CRDs: the vendored schema)


def test_strict_validation_is_real():
    """A misspelt field in a rendered Deployment or ServiceMonitor is rejected by the same check."""
    objects = all_objects(render_chart({"metrics": {"serviceMonitor": {"enabled": True}}}))
    deployment = copy.deepcopy(find(objects, "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 50051}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(deployment, K8S_VERSION)
    monitor = copy.deepcopy(find(objects, "ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["intervall"] = "5s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        validate_manifest(monitor, K8S_VERSION)
    monitor = copy.deepcopy(find(objects, "ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["port"] = 8000  # must be a port name
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(monitor, K8S_VERSION)


@pytest.mark.parametrize("values_file", VALUE_SETS, ids=_ids)
def test_lint_is_clean(values_file):
    report = helm.lint(CHART, example_values(values_file), strict=True, kube_version=f"v{K8S_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_lint_reports_bad_values():
    report = helm.lint(CHART, {"gateway": {"replicas": "many"}}, strict=True, kube_version=f"v{K8S_VERSION}")
    problems = report["errors"] + [m["error"] for m in report["messages"] if m["severity"] >= 3]
    assert any("/gateway/replicas" in p for p in problems), report


# ---- what the chart deploys -----------------------------------------------------------------

def test_gateway_deployment_service_hpa_pdb_configmap_secret(rendered):
    _, manifests = rendered
    objects = all_objects(manifests)
    deployment = find(objects, "Deployment", "rel-polyvec-gateway")[0]
    service = find(objects, "Service", "rel-polyvec-gateway")[0]
    assert {p["port"] for p in service["spec"]["ports"]} == {8000, 50050}
    hpa = find(objects, "HorizontalPodAutoscaler", "rel-polyvec-gateway")[0]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    pdb = find(objects, "PodDisruptionBudget", "rel-polyvec-gateway")[0]
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    container = pod_spec(deployment)["containers"][0]
    sources = {next(iter(s)): s[next(iter(s))]["name"] for s in container["envFrom"]}
    configmap = find(objects, "ConfigMap", sources["configMapRef"])[0]
    secret = find(objects, "Secret", sources["secretRef"])[0]
    assert "API_KEYS" in secret["stringData"]
    # MODELS names exactly the model Services, on the gRPC port
    models = parse_models(configmap["data"]["MODELS"])
    model_services = {s["metadata"]["name"]: s for s in find(objects, "Service")
                      if s["metadata"]["labels"]["app.kubernetes.io/component"] == "inference"}
    assert {addr.rpartition(":")[0] for addr in models.values()} == set(model_services)
    for addr in models.values():
        host, _, port = addr.rpartition(":")
        assert int(port) in {p["port"] for p in model_services[host]["spec"]["ports"]}
    # QDRANT_URL is the Qdrant client Service
    qdrant_service = find(objects, "Service", "rel-polyvec-qdrant")[0]
    assert configmap["data"]["QDRANT_URL"] == "http://rel-polyvec-qdrant:6333"
    assert 6333 in {p["port"] for p in qdrant_service["spec"]["ports"]}


def test_one_deployment_and_service_per_model_with_grpc_probes(rendered):
    name, manifests = rendered
    defaults = helm.Chart.load(CHART).values
    values = {**defaults, **(example_values(name) or {})}
    registry = f"{values['imageRegistry']}/" if values["imageRegistry"] else ""
    objects = all_objects(manifests)
    for model in values["models"]:
        full = f"rel-polyvec-model-{model['name']}"
        deployment = find(objects, "Deployment", full)[0]
        assert find(objects, "Service", full)
        container = pod_spec(deployment)["containers"][0]
        assert container["image"].startswith(registry + model["image"]["repository"] + ":")
        grpc_port = {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == grpc_port == 50051


def test_gpu_models_get_a_gpu_and_enable_cuda():
    values = example_values("values-gpu.yaml")
    objects = all_objects(render_chart(values))
    expected = {"clip": True, "fashion": True, "minilm": False}
    assert {m["name"] for m in values["models"]} == set(expected)
    for model, gpu in expected.items():
        container = pod_spec(find(objects, "Deployment", f"rel-polyvec-model-{model}")[0])["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        limits = container["resources"].get("limits", {})
        assert env["ENABLE_CUDA"] == ("1" if gpu else "0"), model
        assert (limits.get("nvidia.com/gpu") == 1) is gpu, model
        assert env["PRECISION"] == ("fp16" if gpu else "fp32"), model


def test_default_models_run_on_cpu():
    objects = all_objects(render_chart())
    for deployment in find(objects, "Deployment"):
        container = pod_spec(deployment)["containers"][0]
        assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
        assert {e["name"]: e.get("value") for e in container.get("env", [])}.get("ENABLE_CUDA", "0") == "0"


def test_model_autoscaling_replaces_fixed_replicas():
    objects = all_objects(render_chart(example_values("values-distributed.yaml")))
    for deployment in find(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        hpa = find(objects, "HorizontalPodAutoscaler", name)[0]
        assert "replicas" not in deployment["spec"]
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}


def test_distributed_qdrant_statefulset_bootstraps_from_pod_zero():
    objects = all_objects(render_chart(example_values("values-distributed.yaml")))
    sts = find(objects, "StatefulSet", "rel-polyvec-qdrant")[0]
    assert sts["spec"]["replicas"] == 3
    headless = find(objects, "Service", sts["spec"]["serviceName"])[0]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert 6335 in {p["port"] for p in headless["spec"]["ports"]}
    container = pod_spec(sts)["containers"][0]
    assert container["image"].startswith("qdrant/qdrant:v1.")
    env = {e["name"]: e for e in container["env"]}
    assert env["QDRANT__CLUSTER__ENABLED"]["value"] == "true"
    assert env["QDRANT__SERVICE__API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "rel-polyvec-qdrant-apikey"
    script = container["args"][0]
    peer0 = f"http://rel-polyvec-qdrant-0.{headless['metadata']['name']}:6335"
    assert f'peer0="{peer0}"' in script
    assert '--uri "$peer0"' in script and '--bootstrap "$peer0"' in script
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] in {
        m["name"] for m in container["volumeMounts"]}
    assert find(objects, "PodDisruptionBudget", "rel-polyvec-qdrant")
    # the gateway sends the same key
    gateway = pod_spec(find(objects, "Deployment", "rel-polyvec-gateway")[0])["containers"][0]
    key = {e["name"]: e for e in gateway["env"]}["QDRANT_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert key == {"name": "rel-polyvec-qdrant-apikey", "key": "api-key"}


def test_single_node_qdrant_runs_the_image_entrypoint():
    sts = find(all_objects(render_chart()), "StatefulSet")[0]
    container = pod_spec(sts)["containers"][0]
    assert sts["spec"]["replicas"] == 1
    assert "command" not in container and "args" not in container


def test_external_qdrant_replaces_the_statefulset():
    objects = all_objects(render_chart({"qdrant": {"enabled": False},
                                        "externalQdrant": {"url": "https://q.example:6333", "apiKey": "k"}}))
    assert not find(objects, "StatefulSet")
    assert find(objects, "ConfigMap", "rel-polyvec-gateway")[0]["data"]["QDRANT_URL"] == "https://q.example:6333"


def test_helm_test_pod_checks_gateway_healthz():
    manifests = render_chart()
    pod = manifests["polyvec/templates/tests/test-gateway.yaml"][0]
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    command = pod["spec"]["containers"][0]["command"]
    assert command[-1] == "http://rel-polyvec-gateway:8000/healthz"
    assert "/opt/polyvec/healthcheck.py" in command


def test_api_keys_go_to_the_secret():
    objects = all_objects(render_chart({"gateway": {"apiKeys": ["k1", "k2"]}}))
    assert find(objects, "Secret", "rel-polyvec-gateway")[0]["stringData"]["API_KEYS"] == "k1,k2"
    objects = all_objects(render_chart({"gateway": {"existingSecret": "mine"}}))
    assert not find(objects, "Secret", "rel-polyvec-gateway")
    container = pod_spec(find(objects, "Deployment", "rel-polyvec-gateway")[0])["containers"][0]
    assert {"secretRef": {"name": "mine"}} in container["envFrom"]


# ---- values the schema (or the templates) refuse ---------------------------------------------

BAD_VALUES = {
    "model name not a DNS label": ({"models": [{"name": "Big_Model", "image": {"repository": "x"}}]},
                                   "/models/0/name"),
    "model env the service does not read": (
        {"models": [{"name": "clip", "image": {"repository": "x"}, "env": {"MODLE": "x"}}]}, "MODLE"),
    "model without image": ({"models": [{"name": "clip"}]}, "image"),
    "enableCuda not a boolean": ({"modelDefaults": {"enableCuda": "yes"}}, "/modelDefaults/enableCuda"),
    "gateway setting unknown": ({"gateway": {"settings": {"QDRANT_ULR": "http://x"}}}, "QDRANT_ULR"),
    "unknown top-level key": ({"gatway": {}}, "gatway"),
    "several qdrant nodes without cluster mode": ({"qdrant": {"replicas": 3}}, "/qdrant/cluster/enabled"),
    "qdrant env outside QDRANT__": ({"qdrant": {"env": {"RUST_LOG": "debug"}}}, "RUST_LOG"),
    "bad persistence size": ({"qdrant": {"persistence": {"size": "lots"}}}, "/qdrant/persistence/size"),
    "no models": ({"models": []}, "/models"),
    "pod label that would change a selector": ({"podLabels": {"app.kubernetes.io/component": "x"}},
                                               "app.kubernetes.io/component"),
    "ingress path not absolute": ({"gateway": {"ingress": {"hosts": [{"paths": [{"path": "api"}]}]}}},
                                  "/gateway/ingress/hosts/0/paths/0/path"),
    "grpc ingress key misspelt": ({"gateway": {"ingress": {"grpc": {"enable": True}}}}, "enable"),
    "qdrant apiKey false": ({"qdrant": {"apiKey": False}}, "/qdrant/apiKey"),
    "spread policy unknown": ({"qdrant": {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "Maybe"}]}},
        "/qdrant/topologySpreadConstraints/0/whenUnsatisfiable"),
    "scrape interval not a duration": ({"metrics": {"serviceMonitor": {"interval": "30 seconds"}}},
                                       "/metrics/serviceMonitor/interval"),
    "empty network peer": ({"networkPolicy": {"metricsFrom": [{}]}}, "/networkPolicy/metricsFrom/0"),
    "registry given as a URL": ({"imageRegistry": "https://registry.example.com"}, "/imageRegistry"),
    "negative drain": ({"gateway": {"shutdown": {"drainSeconds": -1}}}, "/gateway/shutdown/drainSeconds"),
    "DRAIN_TIMEOUT_S is the chart's": ({"gateway": {"settings": {"DRAIN_TIMEOUT_S": 5}}}, "DRAIN_TIMEOUT_S"),
}


@pytest.mark.parametrize("values, field", list(BAD_VALUES.values()), ids=list(BAD_VALUES))
def test_schema_rejects_bad_values(values, field):
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as error:
        chart.validate_schema(values)
    assert field in str(error.value)
    with pytest.raises(helm.HelmError):
        render_chart(values)


def test_bad_values_file_is_rejected(tmp_path):
    bad = tmp_path / "bad-values.yaml"
    bad.write_text("models:\n  - name: clip\n    image: {repository: polyvec/x}\n    replicas: -1\n")
    values = helm.values_from_yaml(bad.read_text())
    with pytest.raises(helm.HelmValuesError, match="/models/0/replicas"):
        render_chart(values)


@pytest.mark.parametrize("values, message", [
    ({"models": [{"name": "clip", "image": {"repository": "a"}},
                 {"name": "clip", "image": {"repository": "b"}}]}, "used twice"),
    ({"qdrant": {"enabled": False}}, "externalQdrant.url"),
], ids=["duplicate model names", "no qdrant at all"])
def test_templates_refuse_inconsistent_values(values, message):
    with pytest.raises(helm.HelmRenderError, match=message):
        render_chart(values)


def test_example_files_are_valid_values():
    with helm.Chart.load(CHART) as chart:
        for name in VALUE_SETS[1:]:
            chart.validate_schema(yaml.safe_load((CHART / "examples" / name).read_text()))


# ---- pod identity, placement and security ----------------------------------------------------

WORKLOADS = ("Deployment", "StatefulSet")


def _workloads(objects):
    return [o for o in objects if o["kind"] in WORKLOADS]


def _component(obj) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def test_service_account_is_created_and_used_without_a_token():
    objects = all_objects(render_chart())
    account = find(objects, "ServiceAccount", "rel-polyvec")[0]
    assert account["automountServiceAccountToken"] is False
    pods = [pod_spec(o) for o in _workloads(objects)] + [pod_spec(o) for o in find(objects, "Pod")]
    assert len(pods) == 5  # gateway, two models, Qdrant, the helm test pod
    for spec in pods:
        assert spec["serviceAccountName"] == "rel-polyvec"
        assert spec["automountServiceAccountToken"] is False
    objects = all_objects(render_chart({"serviceAccount": {"create": False, "name": "existing"}}))
    assert not find(objects, "ServiceAccount")
    assert {pod_spec(o)["serviceAccountName"] for o in _workloads(objects)} == {"existing"}


def test_pod_annotations_labels_and_priority_reach_every_workload():
    values = {"podAnnotations": {"team": "search", "both": "global"}, "podLabels": {"cost": "a"},
              "priorityClassName": "low",
              "gateway": {"podAnnotations": {"both": "gateway"}, "priorityClassName": "high"},
              "modelDefaults": {"podLabels": {"gpu": "no"}},
              "qdrant": {"podLabels": {"cost": "b"}}}
    objects = all_objects(render_chart(values))
    seen = set()
    for obj in _workloads(objects):
        component = _component(obj)
        seen.add(component)
        meta = obj["spec"]["template"]["metadata"]
        spec = pod_spec(obj)
        assert meta["annotations"]["team"] == "search"
        assert meta["annotations"]["both"] == ("gateway" if component == "gateway" else "global")
        assert meta["labels"]["cost"] == ("b" if component == "qdrant" else "a")
        assert ("gpu" in meta["labels"]) is (component == "inference")
        assert spec["priorityClassName"] == ("high" if component == "gateway" else "low")
        # the chart's own labels and the selector are kept
        assert obj["spec"]["selector"]["matchLabels"].items() <= meta["labels"].items()
    assert seen == {"gateway", "inference", "qdrant"}
    # the gateway keeps its roll-on-change checksums next to the user's annotations
    gateway = find(objects, "Deployment", "rel-polyvec-gateway")[0]
    assert "checksum/config" in gateway["spec"]["template"]["metadata"]["annotations"]


def _mounts(container) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}


def test_polyvec_containers_run_read_only_with_writable_temp_and_cache():
    objects = all_objects(render_chart())
    for obj in _workloads(objects):
        if _component(obj) == "qdrant":
            continue
        spec = pod_spec(obj)
        container = spec["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = _mounts(container)
        assert "emptyDir" in volumes[mounts["/tmp"]]
        if _component(obj) == "inference":
            assert "emptyDir" in volumes[mounts["/home/polyvec/.cache"]]


def test_qdrant_runs_as_uid_1000_read_only_with_its_writable_volumes():
    sts = find(all_objects(render_chart()), "StatefulSet", "rel-polyvec-qdrant")[0]
    spec = pod_spec(sts)
    container = spec["containers"][0]
    assert spec["securityContext"]["runAsUser"] == 1000
    assert spec["securityContext"]["fsGroup"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = _mounts(container)
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    assert mounts["/qdrant/storage"] in claims
    assert mounts["/qdrant/snapshots"] in claims  # a PVC, no longer an emptyDir
    init = {e["name"]: e["value"] for e in container["env"] if "value" in e}["QDRANT_INIT_FILE_PATH"]
    assert any(init.startswith(path + "/") for path in mounts)  # Qdrant's marker file is writable
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/qdrant/init"]]
    # snapshots on an emptyDir when their persistence is off
    no_snapshot_pvc = {"qdrant": {"snapshotPersistence": {"enabled": False}}}
    sts = find(all_objects(render_chart(no_snapshot_pvc)), "StatefulSet")[0]
    volumes = {v["name"]: v for v in pod_spec(sts)["volumes"]}
    assert "emptyDir" in volumes[_mounts(pod_spec(sts)["containers"][0])["/qdrant/snapshots"]]
    assert [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]] == ["storage"]


def test_qdrant_startup_probe_covers_startup_seconds():
    sts = find(all_objects(render_chart({"qdrant": {"startupSeconds": 900}})), "StatefulSet")[0]
    container = pod_spec(sts)["containers"][0]
    probe = container["startupProbe"]
    assert probe["httpGet"]["port"] == "http"
    assert probe["periodSeconds"] * probe["failureThreshold"] == 900
    assert "initialDelaySeconds" not in container["livenessProbe"]


def test_generated_qdrant_api_key_reaches_qdrant_the_gateway_and_the_monitor():
    objects = all_objects(render_chart({"qdrant": {"apiKey": True},
                                        "metrics": {"serviceMonitor": {"enabled": True}}}))
    secret = find(objects, "Secret", "rel-polyvec-qdrant-apikey")[0]
    key = secret["stringData"]["api-key"]
    assert len(key) == 32 and key.isalnum()
    ref = {"name": "rel-polyvec-qdrant-apikey", "key": "api-key"}
    qdrant = pod_spec(find(objects, "StatefulSet")[0])["containers"][0]
    qdrant_env = {e["name"]: e for e in qdrant["env"]}
    assert qdrant_env["QDRANT__SERVICE__API_KEY"]["valueFrom"]["secretKeyRef"] == ref
    gateway = pod_spec(find(objects, "Deployment", "rel-polyvec-gateway")[0])["containers"][0]
    gateway_env = {e["name"]: e for e in gateway["env"]}
    assert gateway_env["QDRANT_API_KEY"]["valueFrom"]["secretKeyRef"] == ref
    monitor = find(objects, "ServiceMonitor", "rel-polyvec-qdrant")[0]
    assert monitor["spec"]["endpoints"][0]["authorization"]["credentials"] == ref
    # each render without a cluster generates anew; on a cluster `lookup` reads the existing Secret back
    again = find(all_objects(render_chart({"qdrant": {"apiKey": True}})), "Secret",
                 "rel-polyvec-qdrant-apikey")
    assert again[0]["stringData"]["api-key"] != key
    # no key: no Secret, nothing sent
    objects = all_objects(render_chart())
    assert not find(objects, "Secret", "rel-polyvec-qdrant-apikey")
    gateway = pod_spec(find(objects, "Deployment", "rel-polyvec-gateway")[0])["containers"][0]
    assert "env" not in gateway


def _spread_selects_own_pods(obj) -> list[str]:
    spec = pod_spec(obj)
    labels = obj["spec"]["template"]["metadata"]["labels"]
    for constraint in spec["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()
    return [c["topologyKey"] for c in spec["topologySpreadConstraints"]
            if c["whenUnsatisfiable"] == "ScheduleAnyway"]


def test_qdrant_and_gateway_spread_softly_by_default():
    objects = all_objects(render_chart())
    for obj in (find(objects, "Deployment", "rel-polyvec-gateway")[0], find(objects, "StatefulSet")[0]):
        assert _spread_selects_own_pods(obj) == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    model = find(objects, "Deployment", "rel-polyvec-model-clip")[0]
    assert "topologySpreadConstraints" not in pod_spec(model)
    objects = all_objects(render_chart({"gateway": {"topologySpreadConstraints": []}}))
    assert "topologySpreadConstraints" not in pod_spec(find(objects, "Deployment", "rel-polyvec-gateway")[0])


def test_gateway_drains_within_the_termination_grace_period():
    shutdown = {"preStopSleepSeconds": 7, "drainSeconds": 20}
    values = {"gateway": {"shutdown": shutdown, "terminationGracePeriodSeconds": 40}}
    objects = all_objects(render_chart(values))
    deployment = find(objects, "Deployment", "rel-polyvec-gateway")[0]
    spec = pod_spec(deployment)
    container = spec["containers"][0]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "7"]
    assert spec["terminationGracePeriodSeconds"] == 40
    assert find(objects, "ConfigMap", "rel-polyvec-gateway")[0]["data"]["DRAIN_TIMEOUT_S"] == "20"
    with pytest.raises(helm.HelmRenderError, match="terminationGracePeriodSeconds"):
        render_chart({"gateway": {"shutdown": {"preStopSleepSeconds": 10, "drainSeconds": 30},
                                  "terminationGracePeriodSeconds": 40}})


# ---- Ingress, monitoring, NetworkPolicy ---------------------------------------------------------

def test_ingress_routes_http_and_grpc_to_their_ports():
    objects = all_objects(render_chart(example_values("values-production.yaml")))
    service = find(objects, "Service", "rel-polyvec-gateway")[0]
    ports = {p["name"] for p in service["spec"]["ports"]}
    http = find(objects, "Ingress", "rel-polyvec-gateway")[0]
    grpc = find(objects, "Ingress", "rel-polyvec-gateway-grpc")[0]
    for ingress, port in ((http, "http"), (grpc, "grpc")):
        backends = [p["backend"]["service"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
        assert backends == [{"name": "rel-polyvec-gateway", "port": {"name": port}}]
        assert port in ports
        assert ingress["spec"]["tls"][0]["hosts"] == [ingress["spec"]["rules"][0]["host"]]
        assert ingress["spec"]["ingressClassName"] == "nginx"
    assert grpc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    assert not find(all_objects(render_chart()), "Ingress")


def _selected(selector: dict, objects) -> list[str]:
    return [o["metadata"]["name"] for o in objects
            if selector["matchLabels"].items() <= o["metadata"].get("labels", {}).items()]


def test_service_monitors_scrape_the_gateway_every_model_and_qdrant():
    objects = all_objects(render_chart({"metrics": {"serviceMonitor": {"enabled": True,
                                                                       "labels": {"release": "prom"}}}}))
    services = find(objects, "Service")
    monitors = {m["metadata"]["name"]: m for m in find(objects, "ServiceMonitor")}
    assert set(monitors) == {"rel-polyvec-gateway", "rel-polyvec-models", "rel-polyvec-qdrant"}
    expected = {"rel-polyvec-gateway": ["rel-polyvec-gateway"],
                "rel-polyvec-models": ["rel-polyvec-model-clip", "rel-polyvec-model-minilm"],
                "rel-polyvec-qdrant": ["rel-polyvec-qdrant"]}  # not the headless Service too
    for name, monitor in monitors.items():
        assert monitor["metadata"]["labels"]["release"] == "prom"
        selected = _selected(monitor["spec"]["selector"], services)
        assert selected == expected[name]
        endpoint = monitor["spec"]["endpoints"][0]
        assert endpoint["path"] == "/metrics"
        for service in selected:
            port_names = {p["name"] for p in find(services, "Service", service)[0]["spec"]["ports"]}
            assert endpoint["port"] in port_names
    assert "authorization" not in monitors["rel-polyvec-qdrant"]["spec"]["endpoints"][0]
    objects = all_objects(render_chart({"metrics": {"serviceMonitor": {"enabled": True}},
                                        "qdrant": {"enabled": False}, "externalQdrant": {"url": "http://q:6333"}}))
    assert {m["metadata"]["name"] for m in find(objects, "ServiceMonitor")} == {
        "rel-polyvec-gateway", "rel-polyvec-models"}


def test_grafana_dashboard_configmap_carries_the_dashboard():
    import json

    objects = all_objects(render_chart({"metrics": {"grafanaDashboard": {"enabled": True,
                                                                         "namespace": "monitoring"}}}))
    configmap = find(objects, "ConfigMap", "rel-polyvec-dashboard")[0]
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["polyvec.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "polyvec.json").read_text())
    assert not find(all_objects(render_chart()), "ConfigMap", "rel-polyvec-dashboard")


def test_network_policies_let_only_the_gateway_reach_qdrant_and_the_models():
    values = {"networkPolicy": {"enabled": True, "metricsFrom": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}}
    objects = all_objects(render_chart(values))
    gateway = find(objects, "Deployment", "rel-polyvec-gateway")[0]
    gateway_labels = gateway["spec"]["template"]["metadata"]["labels"]
    policies = {p["metadata"]["name"]: p for p in find(objects, "NetworkPolicy")}
    assert set(policies) == {"rel-polyvec-models", "rel-polyvec-qdrant"}
    for policy in policies.values():
        selected = [o for o in _workloads(objects) if policy["spec"]["podSelector"]["matchLabels"].items()
                    <= o["spec"]["template"]["metadata"]["labels"].items()]
        assert selected and gateway not in selected
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        rules = policy["spec"]["ingress"]
        from_gateway = [r for r in rules if any(
            peer.get("podSelector", {}).get("matchLabels", {}).items() <= gateway_labels.items()
            and "namespaceSelector" not in peer for peer in r["from"])]
        assert len(from_gateway) == 1
        for workload in selected:
            container_ports = {p["name"] for p in pod_spec(workload)["containers"][0]["ports"]}
            for rule in rules:
                assert {p["port"] for p in rule.get("ports", [])} <= container_ports
        assert any(r["from"] == values["networkPolicy"]["metricsFrom"] for r in rules)
    # the models accept only gRPC from the gateway; Qdrant nodes reach each other on every port
    models_rule = [r for r in policies["rel-polyvec-models"]["spec"]["ingress"]
                   if "podSelector" in r["from"][0]]
    assert [p["port"] for p in models_rule[0]["ports"]] == ["grpc"]
    peer_rules = [r for r in policies["rel-polyvec-qdrant"]["spec"]["ingress"] if "ports" not in r]
    assert peer_rules and peer_rules[0]["from"][0]["podSelector"] == policies["rel-polyvec-qdrant"]["spec"][
        "podSelector"]
    assert not find(all_objects(render_chart()), "NetworkPolicy")


def test_image_registry_prefixes_only_the_polyvec_images():
    objects = all_objects(render_chart({"imageRegistry": "registry.example.com/team/"}))
    images = {pod_spec(o)["containers"][0]["image"] for o in _workloads(objects) + find(objects, "Pod")}
    qdrant = {i for i in images if "qdrant" in i}
    assert qdrant == {"qdrant/qdrant:v1.19.0"}
    for image in images - qdrant:
        assert image.startswith("registry.example.com/team/polyvec/"), image
