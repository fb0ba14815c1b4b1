"""Generate the Python stubs for every .proto in this folder.

Run from anywhere: ``python -m protos.generate [OUT_DIR]``. Stubs are generated
with ``-I<repo root>`` so their imports read ``from protos import ...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTO_DIR.parent
#: The client distribution's copy of the gateway's messages (its gRPC transport; it cannot import protos).
CLIENT_STUB_DIR = REPO_ROOT / "clients" / "python" / "src" / "polyvec_client" / "_pb"
CLIENT_STUBS = ("gateway_pb2.py", "gateway_pb2.pyi")


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out_dir: Path) -> None:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every proto into out_dir/protos."""
    from grpc_tools import protoc  # dev dependency: grpcio-tools

    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).resolve().parent / "_proto"
    for proto in proto_files():
        rel = proto.relative_to(REPO_ROOT)
        args = [
            "grpc_tools.protoc",
            f"-I{REPO_ROOT}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(rel),
        ]
        code = protoc.main(args)
        if code != 0:
            raise SystemExit(f"protoc failed on {rel} (exit {code})")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT
    import os

    cwd = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        generate(out.resolve())
        if out.resolve() == REPO_ROOT:
            for name in CLIENT_STUBS:
                (CLIENT_STUB_DIR / name).write_bytes((PROTO_DIR / name).read_bytes())
    finally:
        os.chdir(cwd)


if __name__ == "__main__":
    main()
