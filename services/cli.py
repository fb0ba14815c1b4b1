"""The ``polyvec`` command: ``polyvec inference | gateway | up``."""

from __future__ import annotations

import sys

USAGE = """usage: polyvec COMMAND [options]

commands:
  inference   run one inference service (one model per process)
  gateway     run the gateway (HTTP + gRPC) on Qdrant
  up          run everything on this machine: embedded store, inference services, gateway

Run 'polyvec COMMAND --help' for the options of one command."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "inference":
        from services.inference.main import main as run
    elif command == "gateway":
        from gateway.main import main as run
    elif command == "up":
        from services.up import main as run
    else:
        print(f"polyvec: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return run(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
