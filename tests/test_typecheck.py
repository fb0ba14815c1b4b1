"""mypy is clean on services/ and gateway/ (configured in pyproject.toml), and the pre-commit hooks are
valid and run the tools this environment has (the same ones .ci/run uses)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_is_clean():
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert result.returncode == 0 and not errors, "\n".join(errors) or result.stdout + result.stderr


def test_mypy_reports_a_type_error(tmp_path):
    """The check is real: the configured run finds an error planted in a copy of a module."""
    bad = tmp_path / "bad.py"
    bad.write_text("from gateway.config import GatewaySettings\n\n"
                   "def port(s: GatewaySettings) -> str:\n    return s.http_port\n")
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                             str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 1
    assert "Incompatible return value type" in result.stdout


def test_pre_commit_config_is_valid_and_its_tools_exist():
    config = ROOT / ".pre-commit-config.yaml"
    result = subprocess.run([sys.executable, "-m", "pre_commit", "validate-config", str(config)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    hooks = {h["id"]: h for repo in yaml.safe_load(config.read_text())["repos"] for h in repo["hooks"]}
    assert {"ruff", "mypy"} <= set(hooks)
    for hook in hooks.values():
        program = hook["entry"].split()[0]  # each installed by the dev extra (ruff, mypy) or python itself
        assert program == "python" or importlib.util.find_spec(program) is not None, program
    ci = (ROOT / ".ci" / "run").read_text()
    assert "ruff check ." in ci and "mypy" in ci
