"""A Qdrant server that does not answer is a 503 naming Qdrant (never a 400, never a hang)."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from gateway.config import GatewaySettings
from gateway.http_api import create_app
from gateway.service import GatewayService
from gateway.storage.base import StoreUnavailable
from gateway.storage.qdrant_store import QdrantStore


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_store_calls_raise_store_unavailable_naming_the_server():
    url = f"http://127.0.0.1:{closed_port()}"
    store = QdrantStore(url=url, timeout=5, check_compatibility=False)
    with pytest.raises(StoreUnavailable, match=f"Qdrant at {url} did not answer"):
        store.list_definitions()
    with pytest.raises(StoreUnavailable):
        store.count("anything")


def test_gateway_answers_503_naming_qdrant():
    store = QdrantStore(url=f"http://127.0.0.1:{closed_port()}", timeout=5, check_compatibility=False)

    async def scenario():
        svc = GatewayService(store, GatewaySettings.from_env({}))
        app = create_app(svc)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            listing = await client.get("/v1/collections")
            search = await client.post("/v1/collections/items/search", json={"bm25": {"query": "shoes"}})
            ready = await client.get("/readyz")
        await svc.close()
        return listing, search, ready

    listing, search, ready = asyncio.run(asyncio.wait_for(scenario(), 60))
    for response in (listing, search):
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["service"] == "qdrant" and "did not answer" in body["error"]
    assert ready.status_code == 503 and ready.json()["storage"] == "unavailable"
