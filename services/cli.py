"""The ``polyvec`` command: ``polyvec inference | gateway | up``."""

from __future__ import annotations

import importlib
import sys

USAGE = """usage: polyvec COMMAND [options]

commands:
  inference   run one inference service (one model per process)
  gateway     run the gateway (HTTP + gRPC) on Qdrant
  up          run everything on this machine: embedded store, inference services, gateway
  reindex-bm25  rebuild a collection's BM25 vectors through a running gateway (measures avg_len)

Run 'polyvec COMMAND --help' for the options of one command."""


#: command -> (module with main(), the pyproject extra whose dependencies it needs)
COMMANDS = {
    "inference": ("services.inference.main", "inference"),
    "gateway": ("gateway.main", "gateway"),
    "up": ("services.up", "all"),
    "reindex-bm25": ("gateway.reindex_cli", "gateway"),
}
FIRST_PARTY = ("services", "gateway", "protos")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"polyvec: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module_name, extra = COMMANDS[command]
    try:
        # imports happen lazily inside the commands too: a missing package surfaces from either call
        return importlib.import_module(module_name).main(rest) or 0
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if not missing or missing in FIRST_PARTY:
            raise
        print(f"polyvec {command}: the Python package {missing!r} is not installed; "
              f"install this command's dependencies with: pip install 'polyvec[{extra}]'", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
