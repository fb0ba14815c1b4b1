"""The gRPC front mirrors HTTP: same service layer, status codes for errors, API keys, health, reflection."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.grpc_api import SERVICE_NAME, start_grpc_server
from protos import gateway_pb2 as pb
from protos import gateway_pb2_grpc
from tests.gateway_support import gateway_with_inference, make_store, png_bytes


def run(coro):
    return asyncio.run(coro)


def props(**values) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def test_grpc_mirrors_http(tmp_path):
    async def scenario():
        async with gateway_with_inference(make_store("qdrant", tmp_path)) as (svc, inference):
            server, port = await start_grpc_server(svc, "127.0.0.1", 0, api_keys=["secret"])
            meta = (("x-api-key", "secret"),)
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = gateway_pb2_grpc.GatewayStub(channel)
                    created = await stub.CreateCollection(pb.CollectionDefinition(
                        name="g", vectorizers={"clip": pb.Vectorizer(model="clip", text_fields=["title"],
                                                                     image_fields=["photo"])}),
                        metadata=meta)
                    assert created.definition.vectorizers["clip"].dimensions == 32
                    assert created.definition.bm25.fields == ["title"]
                    out = await stub.ImportObjects(pb.ImportObjectsRequest(collection="g", objects=[
                        pb.ObjectIn(id="a", properties=props(title="red fox", n=1)),
                        pb.ObjectIn(id="b", properties=props(title="blue whale", n=2)),
                        pb.ObjectIn(id="c", properties=props(title="x", photo="not-base64!")),
                    ]), metadata=meta)
                    assert [r.status for r in out.results] == ["ok", "ok", "error"]
                    assert out.results[2].field == "objects.2.properties.photo" and out.ok == 2
                    got = await stub.GetCollection(pb.GetCollectionRequest(name="g"), metadata=meta)
                    assert got.count == 2
                    res = await stub.Search(pb.SearchRequest(
                        collection="g", near_text=pb.NearText(query="fox"), limit=1), metadata=meta)
                    assert [h.id for h in res.hits] == ["a"] and res.hits[0].properties["n"] == 1
                    hybrid = pb.HybridQuery(query="whale", alpha=0.5, fusion="relative_score")
                    res = await stub.Search(pb.SearchRequest(
                        collection="g", hybrid=hybrid, filter=props(n={"gte": 2}),
                        properties=pb.PropertyList(names=["title"])), metadata=meta)
                    assert [h.id for h in res.hits] == ["b"] and dict(res.hits[0].properties) == {
                        "title": "blue whale"}
                    res = await stub.Search(pb.SearchRequest(collection="g", bm25=pb.Bm25Query(query="fox")),
                                            metadata=meta)
                    assert [h.id for h in res.hits] == ["a"]
                    res = await stub.Search(pb.SearchRequest(
                        collection="g", near_image=pb.NearImage(image=png_bytes("blue"))), metadata=meta)
                    assert len(res.hits) == 2
                    put = await stub.PutObject(pb.PutObjectRequest(collection="g", id="a",
                                                                   properties=props(title="red fox", n=5)),
                                               metadata=meta)
                    assert list(put.vectorized) == [] and not put.created
                    obj = await stub.GetObject(pb.GetObjectRequest(collection="g", id="a", with_vectors=True),
                                               metadata=meta)
                    assert obj.properties["n"] == 5 and len(obj.vectors["clip"].values) == 32

                    # errors map to status codes and name the field
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.Search(pb.SearchRequest(collection="g", hybrid=pb.HybridQuery(query="x",
                                                                                                 alpha=3)),
                                          metadata=meta)
                    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                    assert "hybrid.alpha" in info.value.details()
                    assert ("field", "hybrid.alpha") in tuple(info.value.trailing_metadata())
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.Search(pb.SearchRequest(collection="g"), metadata=meta)
                    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.GetCollection(pb.GetCollectionRequest(name="missing"), metadata=meta)
                    assert info.value.code() == grpc.StatusCode.NOT_FOUND
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.ListCollections(pb.ListCollectionsRequest())
                    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    listed = await stub.ListCollections(pb.ListCollectionsRequest(),
                                                        metadata=(("authorization", "Bearer secret"),))
                    assert [c.definition.name for c in listed.collections] == ["g"]

                    # health and reflection, no API key needed
                    health = health_pb2_grpc.HealthStub(channel)
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
                    refl = reflection_pb2_grpc.ServerReflectionStub(channel)

                    async def ask():
                        yield reflection_pb2.ServerReflectionRequest(list_services="")

                    names = []
                    async for answer in refl.ServerReflectionInfo(ask()):
                        names += [s.name for s in answer.list_services_response.service]
                    assert SERVICE_NAME in names

                    await inference.stop()
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.Search(pb.SearchRequest(collection="g", near_text=pb.NearText(query="x")),
                                          metadata=meta, timeout=10)
                    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                    assert inference.address in info.value.details()
                    deleted = await stub.DeleteCollection(pb.DeleteCollectionRequest(name="g"), metadata=meta)
                    assert deleted.deleted
            finally:
                await server.stop(None)

    run(scenario())


def test_struct_to_dict_reads_structs_as_the_http_json():
    """The gateway's fast Struct reader gives what json_format gives (integral numbers as ints), and a
    NaN or Infinity (which JSON cannot hold) is a 400 naming where it is, not an internal error."""
    from google.protobuf import json_format

    from gateway.errors import BadRequest
    from gateway.grpc_api import struct_to_dict

    value = {"a": [1, 2.5, {"b": None, "c": True, "d": []}], "s": "x", "e": {}, "n": -3, "big": 2.0**60}
    msg = props(**value)
    as_json = json_format.MessageToDict(msg)
    assert struct_to_dict(msg) == {k: int(v) if k == "n" else v for k, v in as_json.items()}
    assert struct_to_dict(msg) == value and isinstance(struct_to_dict(msg)["a"][0], int)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(BadRequest) as err:
            struct_to_dict(props(title="t", nested={"xs": [1, bad]}), "objects.3.properties")
        assert err.value.field == "objects.3.properties.nested.xs.1"
