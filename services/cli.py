"""The ``polyvec`` command: ``polyvec inference | gateway | up`` and the client's
``polyvec import | export | search | collections | eval`` (polyvec-client, clients/python)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

USAGE = """usage: polyvec COMMAND [options]

commands:
  inference   run one inference service (one model per process)
  gateway     run the gateway (HTTP + gRPC) on Qdrant
  up          run everything on this machine: embedded store, inference services, gateway
  reindex-bm25  rebuild a collection's BM25 vectors through a running gateway (measures avg_len)

  import      import a JSONL/CSV/Parquet file or a folder of images into a collection
  export      write a collection as JSON lines (what import reads)
  search      search a collection and print the hits
  collections list, show or delete collections
  eval        measure retrieval quality: Recall@K, P@K, MRR@10, nDCG@10, MAP per search kind and alpha

Run 'polyvec COMMAND --help' for the options of one command."""


#: command -> (module with main(), the pyproject extra whose dependencies it needs)
COMMANDS = {
    "inference": ("services.inference.main", "inference"),
    "gateway": ("gateway.main", "gateway"),
    "up": ("services.up", "all"),
    "reindex-bm25": ("gateway.reindex_cli", "gateway"),
}
FIRST_PARTY = ("services", "gateway", "protos")
#: commands of the client's command line (polyvec_client.cli)
CLIENT_COMMANDS = ("import", "export", "search", "collections", "eval")


def client_main(argv: list[str]) -> int:
    """Run polyvec-client's command line; from a source checkout, this checkout's client is used."""
    checkout = Path(__file__).resolve().parents[1] / "clients" / "python" / "src"
    if (checkout / "polyvec_client").is_dir() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        from polyvec_client.cli.main import main as run
    except ModuleNotFoundError as exc:
        print(f"polyvec {argv[0]}: the client is not installed ({exc}); pip install ./clients/python",
              file=sys.stderr)
        return 1
    return run(argv, prog="polyvec")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command in CLIENT_COMMANDS:
        return client_main(argv)
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
