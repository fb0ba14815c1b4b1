"""Dependency sets: the gateway runs with its own set, without torch and the other model packages.

* pyproject's extras resolve against the installed distributions (scripts/dependency_sets.py);
* every module the gateway can import (its package and the first-party modules it reaches, lazy imports
  included) imports only the standard library, first-party code, or distributions of the gateway set;
* a real gateway process starts and answers in a virtualenv that holds only the gateway set.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import signal
import subprocess
import sys
from collections import defaultdict
from importlib import metadata
from pathlib import Path

import httpx
import pytest
from packaging.utils import canonicalize_name

from services.up import free_port

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = ("gateway", "services", "protos")
#: what the model images need and the gateway must never carry
INFERENCE_ONLY = {"torch", "torchvision", "transformers", "open-clip-torch", "sentence-transformers",
                  "boto3", "pillow", "safetensors", "huggingface-hub", "sentencepiece", "scipy"}


def _load_sets():
    spec = importlib.util.spec_from_file_location("dependency_sets", ROOT / "scripts" / "dependency_sets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dependency_sets = _load_sets()


@pytest.fixture(scope="module")
def gateway_set() -> dict[str, metadata.Distribution]:
    return dependency_sets.dependency_set("gateway")


def test_sets_resolve_and_the_gateway_set_has_no_model_packages(gateway_set):
    inference = dependency_sets.dependency_set("inference")
    expected = {"fastapi", "grpcio", "qdrant-client", "qdrant-edge-py", "httpx", "prometheus-client"}
    assert expected <= set(gateway_set)
    assert not INFERENCE_ONLY & set(gateway_set)
    assert INFERENCE_ONLY - {"scipy"} <= set(inference)
    # dev installs everything (the README's `pip install -e '.[dev]'`)
    dev = dependency_sets.dependency_set("dev")
    assert set(gateway_set) | set(inference) <= set(dev)


def test_unknown_extra_and_missing_distribution_are_named(tmp_path):
    with pytest.raises(dependency_sets.SetError, match="no extra 'gatway'"):
        dependency_sets.project_requirements(["gatway"])
    fake = tmp_path / "pyproject.toml"
    fake.write_text('[project]\nname = "x"\ndependencies = ["surely-not-installed-pkg>=1"]\n')
    with pytest.raises(dependency_sets.SetError, match="surely-not-installed-pkg"):
        dependency_sets.closure(dependency_sets.project_requirements([], fake))


# ---- the import graph ---------------------------------------------------------------------------


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _optional_import_lines(tree: ast.AST) -> set[int]:
    """Line numbers of imports inside ``try: ... except ImportError`` (optional by design)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            for stmt in node.body:
                for sub in ast.walk(stmt):
                    if isinstance(sub, ast.Import | ast.ImportFrom):
                        lines.add(sub.lineno)
    return lines


def imported_modules(source: str, module: str, is_package: bool) -> list[str]:
    """Absolute names of every module ``source`` imports (function-level imports too, optional ones not)."""
    tree = ast.parse(source)
    optional = _optional_import_lines(tree)
    names: list[str] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in optional:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            names.append(base)
            # `from pkg import sub` may import the submodule pkg.sub
            names += [f"{base}.{alias.name}" for alias in node.names
                      if base.startswith(FIRST_PARTY) and _module_file(f"{base}.{alias.name}")]
    return [n for n in names if n and n != "__future__"]


def third_party_imports(roots: list[str]) -> dict[str, set[str]]:
    """Third-party module name -> the first-party modules importing it, over everything ``roots`` reach."""
    seen: set[str] = set()
    pending = list(roots)
    found: dict[str, set[str]] = defaultdict(set)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        # importing a.b.c runs a/__init__ and a/b/__init__ too
        parts = name.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]
        path = _module_file(name)
        if path is None:
            continue
        for imported in imported_modules(path.read_text(), name, path.name == "__init__.py"):
            top = imported.partition(".")[0]
            if top in FIRST_PARTY:
                if _module_file(imported) is None and _module_file(imported.rpartition(".")[0]):
                    imported = imported.rpartition(".")[0]  # `from a.b import name`: a.b is the module
                pending.append(imported)
            elif top not in sys.stdlib_module_names:
                found[imported].add(name)
    return found


def _module_owners() -> dict[str, set[str]]:
    """Importable module/package name (dotted) -> canonical names of the distributions shipping it."""
    owners: dict[str, set[str]] = defaultdict(set)
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        for file in dist.files or ():
            parts = Path(str(file)).parts
            if not parts or parts[0] in ("..", "") or parts[0].endswith((".dist-info", ".egg-info", ".data")):
                continue
            stem = list(parts[:-1]) + [parts[-1].split(".")[0]]
            if stem[-1] == "__init__":
                stem = stem[:-1]
            for i in range(1, len(stem) + 1):
                owners[".".join(stem[:i])].add(name)
    return owners


def owning_distributions(module: str, owners: dict[str, set[str]]) -> set[str]:
    """The distributions shipping the longest known prefix of ``module``."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        found = owners.get(".".join(parts[:i]))
        if found:
            return found
    return set()


def outside_set(roots: list[str], allowed: set[str]) -> dict[str, set[str]]:
    owners = _module_owners()
    return {module: importers for module, importers in third_party_imports(roots).items()
            if not owning_distributions(module, owners) & allowed}


def _gateway_modules() -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for p in (ROOT / "gateway").rglob("*.py"))


def test_gateway_import_graph_stays_in_the_gateway_set(gateway_set):
    reached = third_party_imports(_gateway_modules())
    assert {"fastapi", "qdrant_client", "grpc"} <= {m.partition(".")[0] for m in reached}
    assert outside_set(_gateway_modules(), set(gateway_set)) == {}


def test_import_graph_check_is_real(gateway_set):
    """A lazy torch import reached through a first-party module is reported with its importer."""
    owners = _module_owners()
    assert owning_distributions("torch.nn", owners) == {"torch"}
    assert "protobuf" in owning_distributions("google.protobuf.struct_pb2", owners)
    source = ("def f():\n    import torch\n    from PIL import Image\n"
              "try:\n    import orjson\nexcept ImportError:\n    pass\n")
    assert imported_modules(source, "gateway.x", False) == ["torch", "PIL"]
    # the graph follows first-party imports: the inference service (reached through its main) pulls torch
    found = outside_set(["services.inference.main"], set(gateway_set))
    assert any(m.partition(".")[0] == "torch" for m in found)


# ---- a gateway in a virtualenv holding only the gateway set -------------------------------------


@pytest.fixture(scope="module")
def gateway_venv(tmp_path_factory, gateway_set) -> Path:
    target = tmp_path_factory.mktemp("gateway-venv") / "venv"
    return dependency_sets.make_venv(target, gateway_set.values(), [ROOT])


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env = {k: v for k, v in env.items() if not k.startswith(("QDRANT_", "API_KEYS", "MODELS"))}
    env.update(extra)
    return env


def test_gateway_set_venv_lacks_the_model_packages(gateway_venv):
    code = ("import importlib.util, sys\n"
            "import gateway.main, gateway.http_api, gateway.grpc_api, gateway.service\n"
            "import gateway.storage.edge_store, gateway.storage.qdrant_store\n"
            "missing = [m for m in ('torch', 'transformers', 'open_clip', 'PIL')\n"
            "           if importlib.util.find_spec(m)]\n"
            "assert not missing, missing\n"
            "assert 'torch' not in sys.modules and 'numpy' in sys.modules\n"
            "print('ok')\n")
    result = subprocess.run([str(gateway_venv), "-c", code], capture_output=True, text=True, timeout=120,
                            env=_clean_env(), cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"
    # the inference command says which extra it needs instead of a traceback
    result = subprocess.run([str(gateway_venv), "-m", "services.cli", "inference", "--help"],
                            capture_output=True, text=True, timeout=120, env=_clean_env(), cwd=ROOT)
    assert result.returncode == 1
    assert "pip install 'polyvec[inference]'" in result.stderr, result.stderr[-3000:]


def test_gateway_serves_from_a_venv_with_only_its_set(gateway_venv, tmp_path):
    http_port, grpc_port = free_port(), free_port()
    env = _clean_env(HTTP_PORT=str(http_port), GRPC_PORT=str(grpc_port), HOST="127.0.0.1",
                     DATA_DIR=str(tmp_path / "data"), MODELS="")
    proc = subprocess.Popen([str(gateway_venv), "-m", "services.cli", "gateway"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output = ""
        for line in proc.stdout:  # type: ignore[union-attr]
            output += line
            if "polyvec gateway is serving" in line:
                break
        assert proc.poll() is None, output
        base = f"http://127.0.0.1:{http_port}"
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
        created = httpx.post(f"{base}/v1/collections", timeout=30, json={
            "name": "notes", "vectorizers": {"mine": {"dimensions": 2}}, "bm25": {"fields": ["text"]}})
        assert created.status_code == 201, created.text
        imported = httpx.post(f"{base}/v1/collections/notes/objects", timeout=30, json={"objects": [
            {"id": "a", "properties": {"text": "red shoes"}, "vectors": {"mine": [1.0, 0.0]}}]})
        assert imported.json()["ok"] == 1, imported.text
        hits = httpx.post(f"{base}/v1/collections/notes/search", timeout=30,
                          json={"near_vector": {"vector": [1.0, 0.1]}}).json()["hits"]
        assert [h["id"] for h in hits] == ["a"]
        maps = Path(f"/proc/{proc.pid}/maps")
        if maps.exists():
            assert "libtorch" not in maps.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
