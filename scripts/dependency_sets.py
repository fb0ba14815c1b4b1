"""polyvec's dependency sets (pyproject extras), resolved against the installed distributions.

    python scripts/dependency_sets.py sizes                 # installed size of each set
    python scripts/dependency_sets.py list gateway          # the distributions of one set
    python scripts/dependency_sets.py venv gateway DIR      # a virtualenv holding only that set

A set is the project's base dependencies plus the requirements of its extras (``gateway``,
``inference``, ``dev`` ...), closed over the requirements of every installed distribution it reaches
(environment markers and extras evaluated). ``venv`` builds a virtualenv without pip and links into it
only the files of the set's distributions: an offline way to check that a part imports with its own
set (tests/test_packaging.py runs the gateway that way).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"


class SetError(RuntimeError):
    """A requirement of the set is not installed, or an extra does not exist; the message names it."""


def _project(pyproject: Path = PYPROJECT) -> dict:
    return tomllib.loads(pyproject.read_text())["project"]


def project_requirements(extras: Iterable[str], pyproject: Path = PYPROJECT) -> list[Requirement]:
    """The base dependencies plus those of ``extras``; ``polyvec[x]`` self-references are expanded."""
    project = _project(pyproject)
    name = canonicalize_name(project["name"])
    optional = project.get("optional-dependencies", {})
    found: list[Requirement] = [Requirement(r) for r in project.get("dependencies", [])]
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            raise SetError(f"pyproject.toml has no extra {extra!r} (extras: {', '.join(sorted(optional))})")
        for line in optional[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == name:
                pending += sorted(req.extras)
            else:
                found.append(req)
    return found


def _applies(req: Requirement, extra: str | None) -> bool:
    if req.marker is None:
        return True
    env = default_environment()
    env["extra"] = extra or ""
    return req.marker.evaluate(env)  # type: ignore[arg-type]


def closure(requirements: Iterable[Requirement]) -> dict[str, metadata.Distribution]:
    """Canonical name -> installed distribution, for every distribution the requirements reach."""
    found: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, str]] = set()  # (name, extra) pairs already expanded
    pending: list[tuple[Requirement, str | None]] = [(r, None) for r in requirements]
    while pending:
        req, parent_extra = pending.pop()
        if not _applies(req, parent_extra):
            continue
        key = canonicalize_name(req.name)
        try:
            dist = found.get(key) or metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise SetError(f"{req.name} is required ({req}) but not installed") from None
        found[key] = dist
        for extra in [None, *sorted(req.extras)]:
            if (key, extra or "") in done:
                continue
            done.add((key, extra or ""))
            for line in dist.requires or []:
                pending.append((Requirement(line), extra))
    return found


def dependency_set(*extras: str) -> dict[str, metadata.Distribution]:
    return closure(project_requirements(extras))


def _files(dist: metadata.Distribution) -> list[Path]:
    paths = []
    for file in dist.files or ():
        path = Path(dist.locate_file(file))
        if path.is_file():
            paths.append(path)
    return paths


def installed_bytes(dists: Iterable[metadata.Distribution]) -> int:
    return sum(p.stat().st_size for d in dists for p in _files(d))


def make_venv(target: Path, dists: Iterable[metadata.Distribution], extra_paths: Iterable[Path] = ()) -> Path:
    """A virtualenv at ``target`` (no pip) whose site-packages holds links to the files of ``dists`` only
    (plus a .pth for ``extra_paths``, e.g. the source tree). Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True)
    python = target / "bin" / "python"
    query = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.run([str(python), "-c", query], capture_output=True, text=True,
                               check=True).stdout.strip())
    for dist in dists:
        root = Path(dist.locate_file("")).resolve()  # the site-packages the distribution is installed in
        for path in _files(dist):
            real = path.resolve()
            if not real.is_relative_to(root):  # console scripts, data files outside site-packages
                continue
            link = site / real.relative_to(root)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                os.symlink(real, link)
    paths = list(extra_paths)
    if paths:
        (site / "00_extra_paths.pth").write_text("".join(f"{p}\n" for p in paths))
    return python


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args == ["sizes"]:
            sets = {"gateway": ("gateway",), "inference": ("inference",), "gateway + inference": ("all",)}
            resolved = {label: dependency_set(*extras) for label, extras in sets.items()}
            gateway = set(resolved["gateway"])
            for label, dists in resolved.items():
                print(f"{label:22} {len(dists):4} distributions  {_mb(installed_bytes(dists.values())):>10}")
            only = {k: v for k, v in resolved["inference"].items() if k not in gateway}
            print(f"{'inference, not gateway':22} {len(only):4} distributions  "
                  f"{_mb(installed_bytes(only.values())):>10}")
            everything = resolved["gateway + inference"].values()
            biggest = sorted(everything, key=lambda d: -installed_bytes([d]))[:8]
            print("largest: " + ", ".join(f"{d.metadata['Name']} {_mb(installed_bytes([d]))}"
                                          for d in biggest))
            return 0
        if len(args) == 2 and args[0] == "list":
            for _key, dist in sorted(dependency_set(*args[1].split(",")).items()):
                print(f"{dist.metadata['Name']}=={dist.version}")
            return 0
        if len(args) == 3 and args[0] == "venv":
            python = make_venv(Path(args[2]), dependency_set(*args[1].split(",")).values(), [ROOT])
            print(python)
            return 0
    except SetError as exc:
        print(f"dependency_sets: {exc}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
