"""One tag scheme everywhere, the version from one place, and scripts/build-images.sh.

The version is pyproject.toml's; the chart's appVersion, docker-compose.yml's default tag and the
README's image names follow it. build-images.sh runs against a fake ``docker`` on PATH that records
its calls, so the test needs no Docker engine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.deploy_support import CHART, COMPOSE_PROFILES, ROOT, compose_config, model_dockerfiles

SCRIPT = ROOT / "scripts" / "build-images.sh"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
FOLDERS = sorted(p.parent.name for p in model_dockerfiles())
#: a polyvec image reference in prose or YAML: polyvec/gateway:TAG, polyvec/inference-NAME:TAG
IMAGE_REF = re.compile(r"polyvec/(gateway|inference-[a-z0-9-]+)(?::([A-Za-z0-9_.${}:-]+))?")


# ---- the version and the tags -----------------------------------------------------------------


def test_chart_app_version_is_the_package_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == VERSION


def _tag_is_in_scheme(tag: str) -> bool:
    # the README may also write the scheme itself: polyvec/gateway:VERSION
    return tag in (VERSION, f"{VERSION}-cuda", "VERSION", "VERSION-cuda")


def test_compose_tags_follow_the_scheme():
    services = compose_config(*COMPOSE_PROFILES)["services"]
    for name, service in services.items():
        image = service["image"]
        if image.startswith("qdrant/"):
            continue
        repository, _, tag = image.rpartition(":")
        assert repository.startswith("polyvec/"), name
        cuda = "args" in service.get("build", {}) and service["build"]["args"].get("ENABLE_CUDA") == "1"
        assert tag == (f"{VERSION}-cuda" if cuda else VERSION), (name, image)


def test_compose_tag_default_is_the_version_and_can_be_overridden():
    raw = (ROOT / "docker-compose.yml").read_text()
    defaults = set(re.findall(r"\$\{POLYVEC_TAG:-([^}]*)\}", raw))
    assert defaults == {VERSION}


DOCUMENTS = [ROOT / "README.md", *sorted(ROOT.glob("inference-images/**/Dockerfile*")),
             ROOT / "gateway" / "Dockerfile", *sorted(CHART.rglob("*.yaml")),
             CHART / "templates" / "NOTES.txt"]


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_image_names_in_docs_and_files_follow_the_scheme(path):
    for name, tag in IMAGE_REF.findall(path.read_text()):
        if tag:
            assert _tag_is_in_scheme(tag), f"{path.name}: polyvec/{name}:{tag}"
        if name.startswith("inference-"):
            assert name.removeprefix("inference-") in FOLDERS, name


def test_the_readme_names_the_tags():
    refs = IMAGE_REF.findall((ROOT / "README.md").read_text())
    assert ("gateway", VERSION) in refs and any(tag == f"{VERSION}-cuda" for _, tag in refs)


def test_chart_image_tags_default_to_the_app_version():
    from tests.deploy_support import all_objects, example_values, find, pod_spec, render_chart

    for values in (None, example_values("values-gpu.yaml")):
        objects = all_objects(render_chart(values))
        for deployment in find(objects, "Deployment"):
            container = pod_spec(deployment)["containers"][0]
            repository, _, tag = container["image"].rpartition(":")
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            expected = f"{VERSION}-cuda" if env.get("ENABLE_CUDA") == "1" else VERSION
            assert tag == expected, container["image"]
            assert repository.startswith("polyvec/")


# ---- build-images.sh with a fake docker -------------------------------------------------------


@pytest.fixture
def fake_docker(tmp_path):
    """A ``docker`` on PATH that appends its argv (JSON) to calls.jsonl; FAIL_ON=substring fails that call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    docker = bin_dir / "docker"
    docker.write_text(
        "#!/usr/bin/env python3\n"
        "import json, os, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "fail = os.environ.get('FAIL_ON')\n"
        "sys.exit(1 if fail and fail in ' '.join(sys.argv[1:]) else 0)\n")
    docker.chmod(0o755)

    def run(*args: str, **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
        full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env}
        result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full_env,
                                timeout=60, check=False)
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return result, calls

    return run


def _builds(calls: list[list[str]]) -> dict[str, list[str]]:
    """tag -> the docker build argv that made it."""
    found = {}
    for call in calls:
        if call[0] == "build":
            found[call[call.index("-t") + 1]] = call
    return found


def _build_args(call: list[str]) -> dict[str, str]:
    return dict(call[i + 1].split("=", 1) for i, arg in enumerate(call) if arg == "--build-arg")


def test_builds_every_image_in_both_variants(fake_docker):
    result, calls = fake_docker()
    assert result.returncode == 0, result.stderr
    builds = _builds(calls)
    expected = {f"polyvec/gateway:{VERSION}"}
    for folder in FOLDERS:
        expected |= {f"polyvec/inference-{folder}:{VERSION}", f"polyvec/inference-{folder}:{VERSION}-cuda"}
    assert set(builds) == expected
    assert not [c for c in calls if c[0] == "push"]
    cuda_args = compose_config("gpu")["services"]["clip-gpu"]["build"]["args"]
    for tag, call in builds.items():
        assert call[-1] == str(ROOT)  # the build context is the repository root
        dockerfile = Path(call[call.index("-f") + 1])
        assert dockerfile.is_file()
        if tag.startswith("polyvec/gateway:"):
            assert dockerfile == ROOT / "gateway" / "Dockerfile"
            assert _build_args(call) == {}
        else:
            folder = tag.split(":")[0].removeprefix("polyvec/inference-")
            assert dockerfile == ROOT / "inference-images" / folder / "Dockerfile"
            assert _build_args(call) == (cuda_args if tag.endswith("-cuda") else {})


def test_push_tags_under_the_registry_and_pushes_what_it_built(fake_docker):
    result, calls = fake_docker("--push", "registry.example.com/team/", "--variants", "cpu",
                                "--images", "gateway,all-minilm-l6-v2")
    assert result.returncode == 0, result.stderr
    built = list(_builds(calls))
    assert built == [f"registry.example.com/team/polyvec/gateway:{VERSION}",
                     f"registry.example.com/team/polyvec/inference-all-minilm-l6-v2:{VERSION}"]
    pushes = [c[1] for c in calls if c[0] == "push"]
    assert pushes == built
    # every push comes after every build
    kinds = [c[0] for c in calls]
    assert kinds == ["build", "build", "push", "push"]


def test_cuda_only_skips_the_gateway(fake_docker):
    result, calls = fake_docker("--variants", "cuda", "--images", "clip-vit-b-32,gateway")
    assert result.returncode == 0, result.stderr
    assert list(_builds(calls)) == [f"polyvec/inference-clip-vit-b-32:{VERSION}-cuda"]


def test_dry_run_prints_and_runs_nothing(fake_docker):
    result, calls = fake_docker("--dry-run", "--push", "reg.example", "--images", "gateway")
    assert result.returncode == 0, result.stderr
    assert calls == []
    build = f"docker build -f {ROOT}/gateway/Dockerfile -t reg.example/polyvec/gateway:{VERSION}"
    assert build in result.stdout
    assert f"docker push reg.example/polyvec/gateway:{VERSION}" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--images", "gatway"], "no image 'gatway'"),
    (["--variants", "rocm"], "unknown variant 'rocm'"),
    (["--push"], "--push needs a registry"),
    (["--push", "https://reg.example"], "not a URL"),
    (["--bogus"], "unknown argument '--bogus'"),
    (["--variants", "cuda", "--images", "gateway"], "nothing to build"),
])
def test_bad_arguments_are_named_and_nothing_runs(fake_docker, args, message):
    result, calls = fake_docker(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert calls == []


def test_a_failed_build_stops_before_any_push(fake_docker):
    result, calls = fake_docker("--push", "reg.example", "--variants", "cpu", FAIL_ON="inference-custom")
    assert result.returncode != 0
    assert calls[-1][0] == "build" and "inference-custom" in " ".join(calls[-1])
    assert not [c for c in calls if c[0] == "push"]
