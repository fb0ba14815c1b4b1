"""The Helm chart rendered, linted and validated offline (helm-python-sdk + kubernetes-validate)."""

from __future__ import annotations

import copy

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from gateway.config import parse_models
from tests.deploy_support import CHART, all_objects, example_values, find, pod_spec, render_chart

K8S_VERSION = kubernetes_validate.latest_version()  # newest schema set shipped with the package
VALUE_SETS = [None, "values-gpu.yaml", "values-distributed.yaml"]


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
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)  # raises with the path on error


def test_strict_validation_is_real():
    """A misspelt field in a rendered Deployment is rejected by the same check."""
    deployment = copy.deepcopy(find(all_objects(render_chart()), "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 50051}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


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
    values = example_values(name) or helm.Chart.load(CHART).values
    objects = all_objects(manifests)
    for model in values["models"]:
        full = f"rel-polyvec-model-{model['name']}"
        deployment = find(objects, "Deployment", full)[0]
        assert find(objects, "Service", full)
        container = pod_spec(deployment)["containers"][0]
        assert container["image"].startswith(model["image"]["repository"] + ":")
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
