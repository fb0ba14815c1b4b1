"""The gateway against the real inference server (services.inference, dynamic batching on) over loopback.

The encoder is tests.fake_encoders.FakeEncoder (bag-of-words texts, colour-histogram images, a poison
word that makes its batch fail): the server, batching, image decoding and gRPC status codes are real.
"""

from __future__ import annotations

import asyncio
import base64
import io

from PIL import Image

from gateway.config import GatewaySettings
from gateway.service import GatewayService
from services.inference.config import InferenceSettings
from services.inference.main import start_servers
from tests.fake_encoders import FakeEncoder
from tests.gateway_support import make_store


def png(colour: tuple[int, int, int], size=(16, 16)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_gateway_on_the_real_inference_server(tmp_path):
    async def scenario():
        encoder = FakeEncoder(dims=24)
        settings = InferenceSettings.from_env({"HTTP_PORT": "off"}, model="fake", grpc_port=0,
                                              host="127.0.0.1")
        running = await start_servers(encoder, settings, batching=True, host="127.0.0.1")
        store = make_store("edge", tmp_path)
        svc = GatewayService(store, GatewaySettings.from_env({}, models={"fake": running.grpc_target},
                                                             inference_timeout_s=10, inference_batch_size=4))
        try:
            await svc.create_collection({"name": "things", "vectorizers": {"main": {
                "model": "fake", "text_fields": ["title"], "image_fields": ["picture"]}}})
            objects = [{"id": f"t{i}", "properties": {"title": f"plain item number {i}"}} for i in range(9)]
            objects += [
                {"id": "red", "properties": {"picture": png((230, 10, 10))}},
                {"id": "blue", "properties": {"picture": png((10, 10, 230))}},
                {"id": "broken", "properties": {"title": "broken",
                                                "picture": base64.b64encode(b"nope").decode()}},
                {"id": "poisoned", "properties": {"title": "this has poison in it"}},
            ]
            out = await svc.import_objects("things", {"objects": objects})
            status = {r["id"]: r for r in out["results"]}
            assert status["broken"]["status"] == "error"
            assert status["broken"]["field"] == "objects.11.properties.picture"
            assert status["poisoned"]["status"] == "error"
            assert status["poisoned"]["field"] == "objects.12.properties.title"
            assert out["ok"] == 11
            assert await asyncio.to_thread(store.count, "things") == 11
            hits = await svc.search("things", {"near_image": {"image": png((200, 0, 0))}, "limit": 1})
            assert hits["hits"][0]["id"] == "red"
            hits = await svc.search("things", {"hybrid": {"query": "item number 3", "alpha": 0.5},
                                               "limit": 1})
            assert hits["hits"][0]["id"] == "t3"
        finally:
            await svc.close()
            store.close()
            await running.stop()

    asyncio.run(scenario())
