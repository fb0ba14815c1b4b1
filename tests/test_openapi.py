"""The gateway's OpenAPI document says what the routes really do, and a client generated from it works.

* every route has a response model and declares its real errors with the {error, field} /
  {error, service} schemas; no phantom 422; the API keys as security schemes; README examples;
  no description points at a source file; the document passes openapi-spec-validator;
* real error answers validate against the documented schemas;
* /docs loads Swagger UI from the gateway itself (no CDN), and its license is served beside it;
* openapi-python-client generates a client from /openapi.json and the README's quick start runs
  through it against the real gateway (real service, real inference server, QdrantStore).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate as validate_spec

from gateway import openapi
from gateway.http_api import create_app
from tests.gateway_support import gateway_with_inference, make_store

ROOT = Path(__file__).resolve().parent.parent


def _with_app(tmp_path, scenario, **create_kwargs):
    async def run():
        async with gateway_with_inference(make_store("qdrant", tmp_path)) as (svc, inference):
            app = create_app(svc, **create_kwargs)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                return await scenario(app, client, transport)

    return asyncio.run(asyncio.wait_for(run(), 180))


@pytest.fixture(scope="module")
def document(tmp_path_factory) -> dict:
    async def fetch(app, client, transport):
        return (await client.get("/openapi.json")).json()

    return _with_app(tmp_path_factory.mktemp("doc"), fetch)


def _operations(document: dict):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield method, path, operation


def _resolve(document: dict, schema: dict) -> dict:
    ref = schema.get("$ref", "")
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def test_the_document_is_valid_openapi(document):
    validate_spec(document)
    assert document["info"]["version"] != "0+unknown"


def test_every_route_has_a_response_model_and_its_real_errors(document):
    error_schema = {"$ref": "#/components/schemas/Error"}
    service_schema = {"$ref": "#/components/schemas/ServiceError"}
    overloaded_schema = {"$ref": "#/components/schemas/OverloadedError"}
    seen = set()
    for method, path, operation in _operations(document):
        if (method, path) in openapi.NOT_JSON:
            continue
        seen.add((method, path))
        status, model, errors = openapi.RESPONSES[(method, path)]  # a new route must be documented
        ok = operation["responses"][str(status)]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{model.__name__}"}, (method, path)
        assert _resolve(document, ok)["properties"], (method, path)  # a real model, not {}
        declared = {int(code) for code in operation["responses"]} - {status}
        assert set(errors) <= declared, (method, path)
        for code in declared:
            schema = operation["responses"][str(code)]["content"]["application/json"]["schema"]
            if path != "/readyz":
                want = service_schema if code == 503 else overloaded_schema if code == 429 else error_schema
                assert schema == want, (method, path, code)
        if path.startswith("/v1/"):
            assert 401 in declared and 429 in declared
            assert "Retry-After" in operation["responses"]["429"]["headers"]
            assert operation["security"] == [{"bearer": []}, {"apiKey": []}]
    assert seen <= set(openapi.RESPONSES)
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "one of the gateway's API_KEYS"}
    assert document["components"]["securitySchemes"]["apiKey"]["name"] == "x-api-key"


def test_no_phantom_422_and_no_pointers_to_source_files(document):
    text = json.dumps(document)
    assert '"422"' not in text and "HTTPValidationError" not in text
    assert not re.search(r"[\w/]+\.py\b|\bprotos/|\bgateway/|\bservices/", text), \
        re.search(r".{60}([\w/]+\.py\b|\bprotos/|\bgateway/|\bservices/).{60}", text)


def test_readme_examples_are_in_the_document(document):
    readme = (ROOT / "README.md").read_text()
    for (method, path), example in openapi.QUICK_START.items():
        operation = document["paths"][path][method]
        request = operation["requestBody"]["content"]["application/json"]["example"]
        assert request == example["request"]
        for value in ("sneakers for jogging", "Red running shoes", "products"):
            assert value in readme
        if "response" in example:
            status = str(openapi.RESPONSES[(method, path)][0])
            answer = operation["responses"][status]["content"]["application/json"]["example"]
            schema = dict(_resolve(document, operation["responses"][status]["content"]["application/json"]
                                   ["schema"]), components=document["components"])
            jsonschema.validate(answer, _inline(document, schema))


def _inline(document: dict, schema: dict) -> dict:
    """A schema whose #/components refs resolve (jsonschema needs the document around it)."""
    return {**schema, "$defs": document["components"]["schemas"],
            **json.loads(json.dumps(schema).replace("#/components/schemas/", "#/$defs/"))}


def test_real_errors_match_the_documented_schemas(document, tmp_path):
    async def errors(app, client, transport):
        definition = {"name": "docs", "vectorizers": {"clip": {"model": "clip", "text_fields": ["title"]}}}
        assert (await client.post("/v1/collections", json=definition)).status_code == 201
        return [
            await client.post("/v1/collections", json=definition),                      # 409
            await client.get("/v1/collections/nope"),                                   # 404
            await client.post("/v1/collections/docs/search", json={"near_text": {"query": 5}}),  # 400
            await client.post("/v1/collections/docs/search", json={"bm25": {"query": "x"}, "limit": -1}),
        ]

    answers = _with_app(tmp_path, errors)
    assert [a.status_code for a in answers] == [409, 404, 400, 400]
    error = _inline(document, _resolve(document, {"$ref": "#/components/schemas/Error"}))
    for answer in answers:
        jsonschema.validate(answer.json(), error)
    assert answers[2].json()["field"].startswith("near_text")


def test_docs_work_offline(tmp_path):
    async def docs(app, client, transport):
        page = await client.get("/docs")
        assets = {url: await client.get(url) for url in re.findall(r'(?:src|href)="([^"]+)"', page.text)}
        license_text = await client.get(f"{openapi.DOCS_STATIC}/LICENSE")
        return page, assets, license_text

    page, assets, license_text = _with_app(tmp_path, docs)
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    assert assets and all(url.startswith("/docs/static/") for url in assets), list(assets)
    assert all(r.status_code == 200 and r.content for r in assets.values())
    assert "http://" not in page.text.replace("http://gateway", "") and "https://" not in page.text
    assert license_text.status_code == 200 and "Apache License" in license_text.text


def test_a_generated_client_runs_the_quick_start(tmp_path):
    """openapi-python-client builds a client from /openapi.json; the README's quick start runs through it."""
    spec_file = tmp_path / "openapi.json"
    out = tmp_path / "polyvec_api_client"

    async def scenario(app, client, transport):
        spec_file.write_text((await client.get("/openapi.json")).text)
        result = subprocess.run([sys.executable, "-m", "openapi_python_client", "generate", "--path",
                                 str(spec_file), "--output-path", str(out), "--meta", "none"],
                                capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        sys.path.insert(0, str(tmp_path))
        try:
            api = importlib.import_module("polyvec_api_client")
            models = importlib.import_module("polyvec_api_client.models")
            create = importlib.import_module("polyvec_api_client.api.collections.create_collection")
            import_objects = importlib.import_module("polyvec_api_client.api.objects.import_objects")
            search = importlib.import_module("polyvec_api_client.api.search.search")
            gen = api.Client(base_url="http://gateway", httpx_args={"transport": transport})
            examples = openapi.QUICK_START
            # the README runs on `polyvec up`, where the first model is also "default"; here it is "clip"
            definition = json.loads(json.dumps(examples[("post", "/v1/collections")]["request"])
                                    .replace('"default"', '"clip"'))
            body = models.CollectionDefinition.from_dict(definition)
            created = await create.asyncio(client=gen, body=body)
            assert isinstance(created, models.Collection), created
            assert created.name == "products"
            objects = examples[("post", "/v1/collections/{name}/objects")]["request"]
            batch = models.ImportRequest.from_dict(objects)
            imported = await import_objects.asyncio("products", client=gen, body=batch)
            assert isinstance(imported, models.ImportResult), imported
            assert (imported.ok, imported.errors) == (2, 0)
            found = await search.asyncio("products", client=gen, body=models.SearchRequest.from_dict(
                examples[("post", "/v1/collections/{name}/search")]["request"]))
            assert isinstance(found, models.SearchResult), found
            assert [hit.id for hit in found.hits][0] == "sku-1"  # the running shoes, under 100
            missing = await search.asyncio("nope", client=gen, body=models.SearchRequest.from_dict(
                {"bm25": {"query": "x"}}))
            assert isinstance(missing, models.Error) and "nope" in missing.error
        finally:
            sys.path.remove(str(tmp_path))
            for name in [m for m in sys.modules if m.startswith("polyvec_api_client")]:
                del sys.modules[name]
        return True

    assert _with_app(tmp_path, scenario)
