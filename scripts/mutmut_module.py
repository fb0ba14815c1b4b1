"""Run mutmut over one module against that module's own fast tests.

``[tool.mutmut]`` in pyproject.toml names every module that was mutated (``only_mutate``) and the union
of their test selections; a run over all of them at once is slow, since every mutant then runs every
test that touches its function. This runs one module at a time: it takes the module's test selection
from ``[tool.polyvec-mutmut.<name>]`` (``only_mutate`` + ``tests``, and any other ``[tool.mutmut]``
key it sets), hands it to mutmut in place of the shared one, and runs mutmut with one child (the
machine is shared)::

    nice -n 15 .venv/bin/python scripts/mutmut_module.py requests run            # run
    nice -n 15 .venv/bin/python scripts/mutmut_module.py core run --keep 'gateway.service.core.x*search*'
                                                       # only the mutants matching the globs, keeping the
                                                       # results of the earlier runs of this selection
    .venv/bin/python scripts/mutmut_module.py requests results                   # survivors
    .venv/bin/python scripts/mutmut_module.py requests show <mutant name>        # one survivor's diff

``run`` starts from an empty ``mutants/`` (results of another module's selection do not carry over);
``run --keep`` does not, for a module run in parts (mutant-name globs, one function at a time).
docs/mutation-report.md records what each run left alive and why.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def module_config(name: str) -> dict[str, Any]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    modules: dict[str, Any] = data["tool"]["polyvec-mutmut"]
    if name not in modules:
        raise SystemExit(f"unknown module {name!r}; one of: {', '.join(sorted(modules))}")
    entry: dict[str, Any] = modules[name]
    return entry


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        raise SystemExit(f"usage: {argv[0]} MODULE [run | results | show NAME]")
    entry = module_config(argv[1])
    overrides = {
        # the gateway tests start gRPC threads: a child forked from the process that ran them aborts
        "process_isolation": "forkserver",
        # any other [tool.mutmut] key (source_paths, also_copy, ...) the module's table sets
        **{key: value for key, value in entry.items() if key != "tests"},
        "pytest_add_cli_args_test_selection": list(entry["tests"]),
    }

    import mutmut.configuration as configuration

    original_reader = configuration._config_reader

    def reader() -> Any:
        read = original_reader()

        def get(key: str, default: Any) -> Any:
            return overrides[key] if key in overrides else read(key, default)

        return get

    configuration._config_reader = reader
    configuration.reset_config()
    command = argv[2:] or ["run"]
    if command[0] == "run":
        rest = [arg for arg in command[1:] if arg != "--keep"]
        if len(rest) == len(command) - 1:
            shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        command = ["run", "--max-children", "1", *rest]

    from mutmut.__main__ import cli

    args = command
    try:
        cli(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
