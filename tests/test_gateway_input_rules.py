"""Input rules of the gateway's service layer, over the real inference server and a real store.

* values beyond float32 are refused like NaN/Inf, naming the index (near_vector and own vectors);
* a partial ``bm25`` setting keeps the default fields; only ``"fields": []`` turns BM25 off;
* ``inference_url`` must be allow-listed; a peer that is not a polyvec inference service is named so,
  and what it answered is never passed on;
* duplicate ids in one import: the earlier object reports it was replaced, only the later is written.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import grpc
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from gateway.errors import BadRequest, Forbidden
from protos import inference_pb2, inference_pb2_grpc
from tests.live_gateway import service_over_inference

OWN = {"name": "own", "vectorizers": {"v": {"dimensions": 4}}}
DOCS = {"name": "docs", "vectorizers": {"main": {"model": "clip", "text_fields": ["title", "body"]}}}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


# -- float32 ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("values,index,what", [
    ([0.1, 0.2, 0.3, 1e39], 3, "outside the float32 range"),
    ([-1e39, 0.2, 0.3, 0.4], 0, "outside the float32 range"),
    ([0.1, 3.5e38, 0.3, 0.4], 1, "outside the float32 range"),
    ([0.1, 0.2, 10**400, 0.4], 2, "valid number"),  # too large even for a float64
    ([0.1, float("nan"), 0.3, 0.4], 1, "not a finite number"),
    ([0.1, 0.2, float("-inf"), 0.4], 2, "not a finite number"),
])
def test_values_beyond_float32_are_refused_naming_the_index(tmp_path, values, index, what):
    async def scenario():
        async with service_over_inference(tmp_path) as (svc, _):
            await svc.create_collection(OWN)
            with pytest.raises(BadRequest) as info:
                await svc.search("own", {"near_vector": {"vector": values}})
            assert info.value.field == f"near_vector.vector.{index}" and what in info.value.message
            out = await svc.import_objects("own", {"objects": [
                {"id": "a", "vectors": {"v": [0.1, 0.2, 0.3, 0.4]}},
                {"id": "b", "vectors": {"v": [0.1, 0.2, 0.3, 0.4]}},
                {"id": "c", "vectors": {"v": values}}]})
            bad = out["results"][2]
            assert bad["status"] == "error" and bad["field"] == f"objects.2.vectors.v.{index}"
            assert what in bad["error"] and out["ok"] == 2
            with pytest.raises(BadRequest) as info:
                await svc.put_object("own", "d", {"vectors": {"v": values}})
            assert info.value.field == f"vectors.v.{index}"
            # the largest float32 itself is fine, and nothing bad was stored
            edge = [3.4028234663852886e38, -3.4028234663852886e38, 0.0, 1.0]
            assert (await svc.put_object("own", "e", {"vectors": {"v": edge}}))["status"] == "ok"
            assert (await svc.get_collection("own"))["count"] == 3

    run(scenario())


# -- bm25 ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bm25,fields", [
    (None, ["title", "body"]),
    ({"avg_len": 8}, ["title", "body"]),
    ({"k1": 1.5}, ["title", "body"]),
    ({"b": 0.5, "stopwords": ["the"]}, ["title", "body"]),
    ({"fields": ["body"], "k1": 1.5}, ["body"]),
    ({"fields": []}, []),
])
def test_a_partial_bm25_setting_keeps_the_default_fields(tmp_path, bm25, fields):
    async def scenario():
        async with service_over_inference(tmp_path) as (svc, _):
            body = dict(DOCS, **({"bm25": bm25} if bm25 is not None else {}))
            created = await svc.create_collection(body)
            assert created["bm25"]["fields"] == fields
            await svc.import_objects("docs", {"objects": [
                {"id": "1", "properties": {"title": "red fox", "body": "jumps"}},
                {"id": "2", "properties": {"title": "blue whale", "body": "swims"}}]})
            svc._definitions.clear()  # read back from the store
            assert (await svc.get_collection("docs"))["bm25"]["fields"] == fields
            if fields:
                hits = await svc.search("docs", {"bm25": {"query": "jumps"}})
                assert [h["id"] for h in hits["hits"]] == ["1"]
                hits = await svc.search("docs", {"hybrid": {"query": "whale", "alpha": 0.5}, "limit": 1})
                assert hits["hits"][0]["id"] == "2"
            else:
                with pytest.raises(BadRequest) as info:
                    await svc.search("docs", {"bm25": {"query": "jumps"}})
                assert info.value.field == "bm25" and "no bm25 fields" in info.value.message

    run(scenario())


# -- inference_url ----------------------------------------------------------------------------------------

class Listener:
    """A TCP listener that counts connections and answers each with ``reply`` (a secret-bearing text)."""

    def __init__(self, reply: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nSECRET-TOKEN!") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self.reply = reply
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                conn.recv(65536)
                conn.sendall(self.reply)
            except OSError:
                pass
            conn.close()


class NotPolyvecServicer(inference_pb2_grpc.InferenceServicer):
    def __init__(self, meta: inference_pb2.MetaResponse | None, code: grpc.StatusCode | None) -> None:
        self.meta, self.code = meta, code

    async def Meta(self, request, context):  # noqa: N802
        if self.code is not None:
            await context.abort(self.code, "SECRET-TOKEN from the peer")
        return self.meta


async def grpc_peer(servicer=None) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    if servicer is not None:
        inference_pb2_grpc.add_InferenceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)  # some gRPC server
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def with_url(url: str) -> dict:
    return {"name": "byurl", "vectorizers": {"main": {"inference_url": url, "text_fields": ["title"]}}}


def test_inference_url_needs_the_allow_list_and_no_connection_is_made_otherwise(tmp_path):
    listener = Listener()

    async def scenario():
        async with service_over_inference(tmp_path) as (svc, _):
            for url in (listener.address, "169.254.169.254:80", "10.0.0.1:50051", "localhost:1"):
                with pytest.raises(BadRequest) as info:
                    await svc.create_collection(with_url(url))
                assert info.value.field == "vectorizers.main.inference_url"
                assert "not allowed" in info.value.message
                assert "INFERENCE_URL_HOSTS is empty" in info.value.message
            assert listener.accepted == 0

    run(scenario())
    listener.sock.close()


def test_an_allow_listed_inference_url_works_and_is_checked_again_on_use(tmp_path):
    async def scenario():
        async with service_over_inference(tmp_path) as (svc, running):
            address = running.grpc_target
            port = address.rsplit(":", 1)[1]
            for patterns in ((address,), (f"127.0.0.1:{port}",), ("127.0.0.1",), ("127.0.0.1:*",), ("*",)):
                svc.settings.inference_url_hosts = patterns
                created = await svc.create_collection(with_url(address))
                assert created["vectorizers"]["main"]["dimensions"] == 24
                await svc.delete_collection("byurl")
            for patterns in (("127.0.0.1:1",), ("127.0.0.2",), ("*.example.com",)):
                svc.settings.inference_url_hosts = patterns
                with pytest.raises(BadRequest, match="INFERENCE_URL_HOSTS does not list it"):
                    await svc.create_collection(with_url(address))
            svc.settings.inference_url_hosts = ("127.0.0.1",)
            await svc.create_collection(with_url(address))
            out = await svc.import_objects("byurl", {"objects": [{"properties": {"title": "fox"}}]})
            assert out["ok"] == 1
            svc.settings.inference_url_hosts = ()  # the allow-list shrank since the collection was created
            with pytest.raises(Forbidden, match="no longer allowed"):
                await svc.search("byurl", {"near_text": {"query": "fox"}})

    run(scenario())


@pytest.mark.parametrize("peer,problem", [
    ("http1", "it does not speak gRPC"),
    ("grpc-other", "it answered UNIMPLEMENTED"),
    ("meta-invalid", "it answered Meta with an error"),
    ("meta-permission", "it answered PERMISSION_DENIED"),
    ("meta-empty", "its Meta names no model"),
    ("meta-no-dims", "its Meta gives no dimensions"),
    ("meta-odd-modalities", "its Meta gives no known modalities"),
])
def test_a_peer_that_is_not_a_polyvec_inference_service_is_named_so(tmp_path, peer, problem):
    async def scenario():
        server = listener = None
        if peer == "http1":
            listener = Listener()
            address = listener.address
        else:
            meta, code = None, None
            if peer == "meta-invalid":
                code = grpc.StatusCode.INVALID_ARGUMENT
            elif peer == "meta-permission":
                code = grpc.StatusCode.PERMISSION_DENIED
            elif peer == "meta-empty":
                meta = inference_pb2.MetaResponse()
            elif peer == "meta-no-dims":
                meta = inference_pb2.MetaResponse(name="SECRET-TOKEN", modalities=["text"])
            elif peer == "meta-odd-modalities":
                meta = inference_pb2.MetaResponse(name="SECRET", dimensions=8, modalities=["SECRET-TOKEN"])
            servicer = None if peer == "grpc-other" else NotPolyvecServicer(meta, code)
            server, address = await grpc_peer(servicer)
        try:
            async with service_over_inference(tmp_path, inference_url_hosts=("127.0.0.1",),
                                              inference_query_retry_budget_s=0.5) as (svc, _):
                with pytest.raises(BadRequest) as info:
                    await svc.create_collection(with_url(address))
                assert info.value.field == "vectorizers.main.inference_url"
                assert info.value.message == (f"vectorizers.main.inference_url: {address} is not a polyvec "
                                              f"inference service ({problem})")
                assert "SECRET" not in info.value.message
        finally:
            if server is not None:
                await server.stop(None)
            if listener is not None:
                listener.sock.close()

    run(scenario())


# -- duplicate ids ------------------------------------------------------------------------------------------

def test_duplicate_ids_in_one_import_the_later_one_wins(tmp_path):
    async def scenario():
        async with service_over_inference(tmp_path) as (svc, _):
            await svc.create_collection(DOCS)
            out = await svc.import_objects("docs", {"objects": [
                {"id": "x", "properties": {"title": "first version"}},
                {"id": "y", "properties": {"title": "other"}},
                {"id": "x", "properties": {"title": "second version"}},
                {"id": "x", "properties": {"title": 5, "body": {"not": "text"}}},  # fails: x stays "second"
                {"id": "z", "properties": {"title": "z one"}},
                {"id": "z", "properties": {"title": "z two"}},
            ]})
            results = out["results"]
            assert [r["status"] for r in results] == ["replaced", "ok", "ok", "error", "replaced", "ok"]
            assert results[0]["message"] == ("replaced by objects.2, a later object of this request with the "
                                             "same id; only that one is written")
            assert "objects.5" in results[4]["message"]
            assert results[3]["field"] == "objects.3.properties.body"
            assert (out["ok"], out["errors"], out["replaced"]) == (3, 1, 2)
            assert (await svc.get_object("docs", "x"))["properties"]["title"] == "second version"
            assert (await svc.get_object("docs", "z"))["properties"]["title"] == "z two"
            assert (await svc.get_collection("docs"))["count"] == 3

    run(scenario())


@pytest.mark.parametrize("address,patterns,allowed", [
    ("inf-1.svc.cluster.local:50051", ("inf-1.svc.cluster.local",), True),
    ("INF-1.svc.cluster.local.:50051", ("inf-1.svc.cluster.local",), True),
    ("inf-1.svc.cluster.local:50051", ("inf-1.svc.cluster.local:50051",), True),
    ("inf-1.svc.cluster.local:50052", ("inf-1.svc.cluster.local:50051",), False),
    ("inf-1.svc.cluster.local:50052", ("inf-1.svc.cluster.local:*",), True),
    ("a.svc.cluster.local:1", ("*.svc.cluster.local",), True),
    ("a.b.svc.cluster.local:1", ("*.svc.cluster.local:1",), True),
    ("a.svc.cluster.local:2", ("*.svc.cluster.local:1",), False),
    ("svc.cluster.local:1", ("*.svc.cluster.local",), False),
    ("evilsvc.cluster.local:1", ("*.svc.cluster.local",), False),
    ("svc.cluster.local.evil.com:1", ("*.svc.cluster.local",), False),
    ("169.254.169.254:80", ("10.0.0.5",), False),
    ("10.0.0.5:50051", ("10.0.0.5",), True),
    ("10.0.0.50:50051", ("10.0.0.5",), False),
    ("[fd00::5]:50051", ("[fd00::5]:50051",), True),
    ("[fd00::5]:50051", ("fd00::5",), True),
    ("[fd00::5]:50052", ("[fd00::5]:50051",), False),
    ("[fd00::6]:50051", ("fd00::5",), False),
    ("anything:1", ("*",), True),
    ("anything:1", (), False),
    ("anything:1", ("other", "anything:1"), True),
])
def test_inference_url_patterns(address, patterns, allowed):
    from gateway.inference_urls import inference_url_allowed

    assert inference_url_allowed(address, patterns) is allowed
