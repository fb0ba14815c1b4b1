"""Deployment files cannot drift from the code.

* each image's ENTRYPOINT runs a console script polyvec installs, with a subcommand that exists;
* the per-model Dockerfiles are the shared template plus their model.env (no hand edits);
* every environment variable a Dockerfile, docker-compose.yml or the Helm chart sets is one the
  code reads (services.inference.config.ENV_VARS / gateway.config.ENV_VARS), or an allow-listed
  third-party variable; Qdrant containers only get QDRANT__* settings.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.config import ENV_VARS as GATEWAY_ENV_VARS
from services.inference.config import ENV_VARS as INFERENCE_ENV_VARS
from tests.deploy_support import (
    CHART,
    COMPOSE_PROFILES,
    GATEWAY_DOCKERFILE,
    IMAGES,
    ROOT,
    all_dockerfiles,
    all_objects,
    compose_config,
    dockerfile_env_names,
    dockerfile_instructions,
    example_values,
    exec_form,
    model_dockerfiles,
    pod_spec,
    render_chart,
)

#: Variables deployment files may set although polyvec does not read them, and why.
THIRD_PARTY_ENV = {
    "PATH": "puts the image's virtualenv first",
    "VIRTUAL_ENV": "marks the image's virtualenv as active",
    "PYTHONUNBUFFERED": "log lines reach `docker logs` at once",
    "PYTHONDONTWRITEBYTECODE": "no .pyc files written into the image at run time",
    "PIP_NO_CACHE_DIR": "build-time pip: no wheel cache left in the image",
    "PIP_DISABLE_PIP_VERSION_CHECK": "build-time pip: no network version check",
}
ALLOWED = {
    "inference": set(INFERENCE_ENV_VARS) | set(THIRD_PARTY_ENV),
    "gateway": set(GATEWAY_ENV_VARS) | set(THIRD_PARTY_ENV),
}
QDRANT_ENV = re.compile(r"^QDRANT__[A-Z0-9_]+$")
#: Qdrant variables outside its QDRANT__SECTION__KEY config scheme (read in Qdrant's src/startup.rs)
QDRANT_OTHER_ENV = {"QDRANT_INIT_FILE_PATH"}
REQUIRED_IMAGES = {"clip-vit-b-32", "marqo-fashionclip", "marqo-fashionsiglip", "all-minilm-l6-v2", "custom"}
SUBCOMMAND = {"inference": "inference", "gateway": "gateway"}


def _load_render_module():
    spec = importlib.util.spec_from_file_location("render_dockerfiles", IMAGES / "render_dockerfiles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_dockerfiles = _load_render_module()


def _kind_of_dockerfile(path: Path) -> str:
    return "gateway" if path == GATEWAY_DOCKERFILE else "inference"


def _bad_names(kind: str, names) -> list[str]:
    if kind == "qdrant":
        return sorted(n for n in names if not QDRANT_ENV.match(n) and n not in QDRANT_OTHER_ENV)
    return sorted(set(names) - ALLOWED[kind])


# ---- entrypoints ------------------------------------------------------------------------------

def _console_scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


@pytest.mark.parametrize("dockerfile", all_dockerfiles(), ids=lambda p: str(p.relative_to(ROOT)))
def test_entrypoint_is_an_installed_polyvec_command(dockerfile):
    entrypoint = exec_form(dockerfile, "ENTRYPOINT")
    assert entrypoint is not None, f"{dockerfile}: no exec-form ENTRYPOINT"
    assert exec_form(dockerfile, "CMD") is None, "arguments belong in env vars, not CMD"
    script, subcommand = entrypoint[0], entrypoint[1]
    assert script in _console_scripts()
    assert subcommand == SUBCOMMAND[_kind_of_dockerfile(dockerfile)]
    assert len(entrypoint) == 2


@pytest.mark.parametrize("subcommand", sorted(set(SUBCOMMAND.values())))
def test_subcommand_exists_in_the_installed_console_script(subcommand):
    """Run the console script the venv installed, as the image does: `polyvec SUB --help` exits 0."""
    script = Path(sys.executable).parent / "polyvec"
    assert script.is_file(), "the polyvec console script is not installed (pip install -e .)"
    listing = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and re.search(rf"^\s+{subcommand}\s", listing.stdout, re.M)
    result = subprocess.run([str(script), subcommand, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()


# ---- the model images -------------------------------------------------------------------------

def test_required_model_images_exist():
    folders = {p.parent.name for p in model_dockerfiles()}
    assert REQUIRED_IMAGES <= folders
    assert folders == {p.parent.name for p in IMAGES.glob("*/model.env")}


def test_generated_dockerfiles_are_current():
    assert render_dockerfiles.stale() == [], "run: python inference-images/render_dockerfiles.py"


def test_render_detects_drift(tmp_path):
    """The staleness check is real: a hand-edited copy is reported."""
    for path in [IMAGES / "Dockerfile.inference", *IMAGES.glob("*/model.env"), *model_dockerfiles()]:
        target = tmp_path / path.relative_to(IMAGES)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    edited = tmp_path / "clip-vit-b-32" / "Dockerfile"
    edited.write_text(edited.read_text().replace("EXPOSE 50051 8080", "EXPOSE 50051"))
    assert render_dockerfiles.stale(tmp_path) == [edited]


def test_model_env_rejects_unknown_keys(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "model.env").write_text("MODLE=foo\n")
    with pytest.raises(render_dockerfiles.SpecError, match="MODLE"):
        render_dockerfiles.render((IMAGES / "Dockerfile.inference").read_text(), "x",
                                  render_dockerfiles.read_spec(tmp_path / "x" / "model.env"))


@pytest.mark.parametrize("folder", sorted(REQUIRED_IMAGES - {"custom"}))
def test_baked_model_is_a_builtin_model(folder):
    from services.inference.registry import builtin_spec

    spec = render_dockerfiles.read_spec(IMAGES / folder / "model.env")
    builtin_spec(spec["MODEL"])  # raises ModelSpecError for a name `polyvec inference` does not know
    assert spec.get("HF_HUB_OFFLINE", "1") == "1"
    text = (IMAGES / folder / "Dockerfile").read_text()
    assert f'ARG MODEL="{spec["MODEL"]}"' in text


def test_custom_image_bakes_nothing_and_its_example_spec_parses():
    from services.inference.model_spec import parse_model_properties

    spec = render_dockerfiles.read_spec(IMAGES / "custom" / "model.env")
    assert spec["MODEL"] == "" and spec["HF_HUB_OFFLINE"] == "0"
    parsed = parse_model_properties((IMAGES / "custom" / "model-properties.example.json").read_text())
    assert parsed.localpath and parsed.localpath.startswith("/models/")


@pytest.mark.parametrize("dockerfile", all_dockerfiles(), ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_shape(dockerfile):
    instructions = dockerfile_instructions(dockerfile)
    keywords = [k for k, _ in instructions]
    args_before_from = [rest for k, rest in instructions[: keywords.index("FROM")] if k == "ARG"]
    assert any(a.startswith("BASE_IMAGE=") for a in args_before_from)
    assert dict(instructions)["FROM"] == "${BASE_IMAGE}"
    kind = _kind_of_dockerfile(dockerfile)
    # each image installs its own dependency set (pyproject extras); only model images carry torch
    installs = [rest for k, rest in instructions if k == "RUN" and "pip install" in rest and "/src" in rest]
    assert len(installs) == 1 and f'pip install "/src[{kind}]"' in installs[0], installs
    torch_arg = any(rest.startswith("TORCH_INDEX_URL=") for k, rest in instructions if k == "ARG")
    assert torch_arg is (kind == "inference")
    if kind == "gateway":
        runs = " ".join(rest for k, rest in instructions if k == "RUN")
        assert not re.search(r"pip install[^;&|]*\btorch", runs), "the gateway image must not install torch"
    users = [rest for k, rest in instructions if k == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    healthcheck = [rest for k, rest in instructions if k == "HEALTHCHECK"]
    assert len(healthcheck) == 1
    command = json.loads(healthcheck[0].split(" CMD ", 1)[1])
    mode = "http" if dockerfile == GATEWAY_DOCKERFILE else "grpc"
    assert command == ["python", "/opt/polyvec/healthcheck.py", mode]
    # every COPY source exists and is not excluded by .dockerignore (an allow-list)
    included = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.startswith("!")]
    for k, rest in instructions:
        if k == "COPY":
            for source in rest.split()[:-1]:
                if source.startswith("--"):
                    continue
                assert (ROOT / source).exists(), f"{dockerfile}: COPY {source} does not exist"
                assert any(source == inc or source.startswith(inc + "/") for inc in included), source
    if mode == "grpc":
        exposed = " ".join(rest for k, rest in instructions if k == "EXPOSE").split()
        assert exposed == ["50051", "8080"]
        runs = [rest for k, rest in instructions if k == "RUN"]
        download = next(i for i, (k, rest) in enumerate(instructions)
                        if k == "RUN" and "polyvec inference --download-only" in rest)
        offline = next(i for i, (k, rest) in enumerate(instructions)
                       if k == "ENV" and rest.startswith("HF_HUB_OFFLINE="))
        assert download < offline, "HF_HUB_OFFLINE must be set after the weights are baked"
        assert any("ENABLE_CUDA=0 polyvec inference --download-only" in r for r in runs)


# ---- environment variables --------------------------------------------------------------------

@pytest.mark.parametrize("dockerfile", all_dockerfiles(), ids=lambda p: str(p.relative_to(ROOT)))
def test_dockerfile_env_is_read_by_the_code(dockerfile):
    names = dockerfile_env_names(dockerfile)
    assert names
    assert _bad_names(_kind_of_dockerfile(dockerfile), names) == []


def _compose_env_by_kind() -> list[tuple[str, str, list[str]]]:
    services = compose_config(*COMPOSE_PROFILES)["services"]
    found = []
    for name, service in services.items():
        env = list(service.get("environment") or {})
        if service.get("image", "").startswith("qdrant/qdrant"):
            kind = "qdrant"
        else:
            dockerfile = ROOT / service["build"]["dockerfile"]
            kind = _kind_of_dockerfile(dockerfile)
        found.append((name, kind, env))
    return found


def test_compose_env_is_read_by_the_code():
    found = _compose_env_by_kind()
    gateway_names = {n for _, kind, env in found if kind == "gateway" for n in env}
    assert {"QDRANT_URL", "MODELS", "API_KEYS"} <= gateway_names
    assert "ENABLE_CUDA" in {n for _, kind, env in found if kind == "inference" for n in env}
    for name, kind, env in found:
        assert _bad_names(kind, env) == [], f"compose service {name}"


def _chart_env(values) -> list[tuple[str, str, list[str]]]:
    rendered = render_chart(values)
    objects = all_objects(rendered)
    by_ref = {(o["kind"], o["metadata"]["name"]): o for o in objects if o["kind"] in ("ConfigMap", "Secret")}
    found = []
    for obj in objects:
        if obj["kind"] not in ("Deployment", "StatefulSet", "Pod"):
            continue
        for container in pod_spec(obj)["containers"]:
            names = [e["name"] for e in container.get("env", [])]
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    names += list(by_ref[("ConfigMap", source["configMapRef"]["name"])]["data"])
                elif ("Secret", source["secretRef"]["name"]) in by_ref:
                    secret = by_ref[("Secret", source["secretRef"]["name"])]
                    names += list(secret.get("stringData", {})) + list(secret.get("data", {}))
            kind = {"inference": "inference", "gateway": "gateway", "qdrant": "qdrant"}.get(container["name"])
            if kind is None:  # the helm test pod sets no environment
                assert names == [], container["name"]
                continue
            found.append((f"{obj['kind']}/{obj['metadata']['name']}", kind, names))
    return found


CHART_VALUES = {
    "defaults": None,
    "gpu": example_values("values-gpu.yaml"),
    "distributed": example_values("values-distributed.yaml"),
    "production": example_values("values-production.yaml"),
    "everything-set": {
        "gateway": {"apiKeys": ["k"], "settings": {"INFERENCE_TIMEOUT_S": 10, "IMPORT_BATCH_SIZE": 500}},
        "modelDefaults": {"env": {"MAX_BATCH_SIZE": 16, "PRECISION": "fp32"}, "envFromSecret": "model-auth"},
        "qdrant": {"apiKey": "q", "env": {"QDRANT__LOG_LEVEL": "INFO"}},
    },
}


@pytest.mark.parametrize("values", list(CHART_VALUES.values()), ids=list(CHART_VALUES))
def test_chart_env_is_read_by_the_code(values):
    found = _chart_env(values)
    kinds = {kind for _, kind, _ in found}
    assert kinds == {"inference", "gateway", "qdrant"}
    gateway_names = {n for _, kind, names in found if kind == "gateway" for n in names}
    assert {"QDRANT_URL", "MODELS", "API_KEYS", "HTTP_PORT", "GRPC_PORT", "DRAIN_TIMEOUT_S"} <= gateway_names
    for where, kind, names in found:
        assert _bad_names(kind, names) == [], where


def test_schema_only_allows_env_the_code_reads():
    schema = json.loads((CHART / "values.schema.json").read_text())
    props = schema["properties"]
    model_env = props["models"]["items"]["properties"]["env"]["propertyNames"]["enum"]
    defaults_env = props["modelDefaults"]["properties"]["env"]["propertyNames"]["enum"]
    gateway_env = props["gateway"]["properties"]["settings"]["propertyNames"]["enum"]
    assert model_env == defaults_env
    assert set(model_env) <= set(INFERENCE_ENV_VARS)
    assert set(gateway_env) <= set(GATEWAY_ENV_VARS)
    # the chart sets these itself; letting values override them would break probes and wiring
    assert not {"GRPC_PORT", "HTTP_PORT", "ENABLE_CUDA"} & set(model_env)
    chart_set = {"QDRANT_URL", "MODELS", "API_KEYS", "HTTP_PORT", "GRPC_PORT", "DRAIN_TIMEOUT_S"}
    assert not chart_set & set(gateway_env)


#: Gateway variables the chart's ``gateway.settings`` does not offer, and why; every other variable the
#: gateway reads must be offered there (a new setting is then settable in Kubernetes too).
GATEWAY_ENV_NOT_IN_SETTINGS = {
    "QDRANT_URL": "the chart points the gateway at its own Qdrant StatefulSet",
    "QDRANT_API_KEY": "comes from the chart's Secret",
    "MODELS": "built from the chart's models list",
    "API_KEYS": "comes from the chart's Secret (gateway.apiKeys / existingSecret)",
    "HTTP_PORT": "the chart's service ports and probes",
    "GRPC_PORT": "the chart's service ports and probes",
    "HOST": "the container listens on every interface",
    "DATA_DIR": "the embedded store is not used in the chart (Qdrant runs as a StatefulSet)",
    "XDG_DATA_HOME": "only locates the embedded store's default DATA_DIR",
    "DRAIN_TIMEOUT_S": "set from gateway.shutdown.drainSeconds, next to the pod's grace period",
}


def test_schema_offers_every_gateway_setting():
    schema = json.loads((CHART / "values.schema.json").read_text())
    offered = set(schema["properties"]["gateway"]["properties"]["settings"]["propertyNames"]["enum"])
    assert set(GATEWAY_ENV_VARS) - offered == set(GATEWAY_ENV_NOT_IN_SETTINGS)
    assert not offered & set(GATEWAY_ENV_NOT_IN_SETTINGS)


def test_checker_flags_unknown_names():
    """The comparison is real: a name no code reads is reported for each kind."""
    assert _bad_names("inference", ["MODEL", "MODLE"]) == ["MODLE"]
    assert _bad_names("gateway", ["MODELS", "QDRANT_ULR"]) == ["QDRANT_ULR"]
    assert _bad_names("qdrant", ["QDRANT__CLUSTER__ENABLED", "RUST_LOG"]) == ["RUST_LOG"]


def test_image_names_match_the_image_folders():
    """Compose and the chart name model images polyvec/inference-<folder> of folders that exist."""
    folders = {p.parent.name for p in model_dockerfiles()}
    services = compose_config(*COMPOSE_PROFILES)["services"]
    for name, service in services.items():
        dockerfile = service.get("build", {}).get("dockerfile", "")
        if dockerfile.startswith("inference-images/"):
            folder = Path(dockerfile).parent.name
            assert service["image"].split(":")[0] == f"polyvec/inference-{folder}", name
    chart_values = [json.loads(json.dumps(v)) for v in CHART_VALUES.values() if v and "models" in v]
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        chart_values.append(chart.values)
    for values in chart_values:
        for model in values["models"]:
            repository = model["image"]["repository"]
            assert repository.startswith("polyvec/inference-"), repository
            assert repository.removeprefix("polyvec/inference-") in folders, repository
