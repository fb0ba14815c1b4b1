"""The committed stubs are exactly what protos.generate produces from the .proto sources."""

from __future__ import annotations

from pathlib import Path

from protos import generate


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path):
    protos = generate.proto_files()
    assert protos, "no .proto files found"
    generate.generate(tmp_path)
    for proto in protos:
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            name = proto.stem + suffix
            fresh = tmp_path / "protos" / name
            committed = generate.PROTO_DIR / name
            assert fresh.is_file(), f"protoc did not produce {name}"
            assert committed.is_file(), f"{name} is not committed: run `python -m protos.generate`"
            assert committed.read_bytes() == fresh.read_bytes(), (
                f"protos/{name} differs from a fresh generation: run `python -m protos.generate` and commit"
            )


def test_the_client_carries_the_same_gateway_messages():
    for name in generate.CLIENT_STUBS:
        copy = generate.CLIENT_STUB_DIR / name
        assert copy.is_file(), f"{copy} is missing: run `python -m protos.generate`"
        assert copy.read_bytes() == (generate.PROTO_DIR / name).read_bytes(), (
            f"{copy} differs from protos/{name}: run `python -m protos.generate` and commit"
        )
