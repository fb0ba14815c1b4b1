"""MODEL_PROPERTIES parsing: the Marqo modelProperties shape, unknown keys and contradictions refused."""

from __future__ import annotations

import json

import pytest

from services.inference.model_spec import HfLocation, ModelSpecError, S3Location, parse_model_properties

SHA = "ab" * 32


def refused(props, *needles: str) -> str:
    with pytest.raises(ModelSpecError) as info:
        parse_model_properties(props)
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def test_marqo_open_clip_url_spec_parses_every_field():
    raw = json.dumps(
        {
            "name": "ViT-B-32-quickgelu",
            "dimensions": 512,
            "type": "open_clip",
            "url": "https://example.com/models/epoch_10.pt",
            "jit": False,
            "precision": "FP16",
            "imagePreprocessor": "openclip",
            "tokenizer": "hf-hub:org/tok",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "size": 256,
            "sha256": SHA.upper(),
            "normalize": False,
            "tokens": 77,
            "note": "fine-tuned",
        }
    )
    spec = parse_model_properties(raw)
    assert spec.name == "ViT-B-32-quickgelu"
    assert spec.type == "open_clip"
    assert spec.dimensions == 512
    assert spec.url == "https://example.com/models/epoch_10.pt"
    assert spec.precision == "fp16"
    assert spec.image_preprocessor == "OpenCLIP"
    assert spec.tokenizer == "hf-hub:org/tok"
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.25, 0.25, 0.25)
    assert spec.size == 256
    assert spec.sha256 == SHA  # lower-cased
    assert spec.normalize is False
    assert spec.max_text_tokens == 77
    assert spec.extra == {"note": "fine-tuned"}
    assert spec.localpath is None and spec.s3 is None and spec.hf is None


def test_s3_location_with_auth_required_inside_model_location():
    spec = parse_model_properties(
        {
            "name": "ViT-B-32",
            "type": "open_clip",
            "dimensions": 512,
            "modelLocation": {"s3": {"Bucket": "models", "Key": "/clip/vit.pt"}, "authRequired": True},
        }
    )
    assert spec.s3 == S3Location(bucket="models", key="clip/vit.pt")
    assert spec.auth_required is True
    assert spec.hf is None


def test_hf_location_file_and_snapshot():
    spec = parse_model_properties(
        {
            "name": "ViT-B-16",
            "type": "open_clip",
            "modelLocation": {"hf": {"repoId": "org/repo", "filename": "open_clip_model.safetensors"}},
            "authRequired": True,
        }
    )
    assert spec.hf == HfLocation(repo_id="org/repo", filename="open_clip_model.safetensors")
    assert spec.auth_required is True
    snap = parse_model_properties(
        {"type": "sentence_transformers", "modelLocation": {"hf": {"repoId": "org/st"}}}
    )
    assert snap.hf == HfLocation(repo_id="org/st", filename=None)
    assert snap.name == "org/st"  # defaulted from the location


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("open_clip", "open_clip"),
        ("OpenCLIP", "open_clip"),
        ("open-clip", "open_clip"),
        ("clip", "clip"),
        ("siglip", "clip"),
        ("hf", "sentence_transformers"),
        ("sbert", "sentence_transformers"),
        ("sentence-transformers", "sentence_transformers"),
        ("Sentence_Transformers", "sentence_transformers"),
    ],
)
def test_type_aliases(alias, canonical):
    assert parse_model_properties({"name": "x/y", "type": alias}).type == canonical


@pytest.mark.parametrize("value", ["siglip", "SIGLIP", "SigLIP", "mobileclip", "clipa", "OPENAI"])
def test_image_preprocessor_case_insensitive(value):
    spec = parse_model_properties({"name": "ViT-B-32", "type": "open_clip", "imagePreprocessor": value})
    assert spec.image_preprocessor.lower() == value.lower()
    assert spec.image_preprocessor in ("OpenCLIP", "OpenAI", "SigLIP", "MobileCLIP", "CLIPA")


def test_defaults():
    spec = parse_model_properties('{"name": "ViT-B-32", "type": "open_clip"}')
    assert spec.normalize is True and spec.jit is False and spec.auth_required is False
    assert spec.precision is None and spec.dimensions is None and spec.extra == {}


def test_localpath_name_defaults_to_folder_name():
    spec = parse_model_properties({"type": "sentence_transformers", "localpath": "/models/my-minilm/"})
    assert spec.name == "my-minilm" and spec.localpath == "/models/my-minilm/"


def test_max_text_tokens_alias():
    assert parse_model_properties({"name": "a/b", "type": "hf", "maxTextTokens": 128}).max_text_tokens == 128


# --- refusals ------------------------------------------------------------------------------------


def test_invalid_json_names_position():
    message = refused(
        '{"name": "ViT-B-32", "type": }', "MODEL_PROPERTIES is not valid JSON", "line 1", "column"
    )
    assert "char 29" in message


def test_not_an_object():
    refused("[1, 2]", "must be a JSON object", "a list")
    refused("", "empty")


def test_unknown_key_suggests_closest():
    refused(
        {"name": "ViT-B-32", "type": "open_clip", "dimension": 512},
        "'dimension'",
        "did you mean 'dimensions'",
    )
    refused(
        {"name": "ViT-B-32", "type": "open_clip", "localPath": "/m"},
        "'localPath'",
        "did you mean 'localpath'",
    )
    refused(
        {"name": "ViT-B-32", "type": "open_clip", "image_preprocessor": "OpenAI"},
        "did you mean 'imagePreprocessor'",
    )
    message = refused({"name": "ViT-B-32", "type": "open_clip", "zzz": 1}, "unknown key 'zzz'")
    assert "did you mean" not in message


def test_unknown_keys_inside_model_location():
    refused(
        {"name": "a", "type": "open_clip", "modelLocation": {"s3": {"bucket": "b", "Key": "k"}}},
        "modelLocation.s3",
        "'bucket'",
        "did you mean 'Bucket'",
    )
    refused(
        {"name": "a", "type": "open_clip", "modelLocation": {"hf": {"repoid": "o/r"}}},
        "modelLocation.hf",
        "did you mean 'repoId'",
    )
    refused({"name": "a", "type": "open_clip", "modelLocation": {"gcs": {}}}, "modelLocation", "'gcs'")


@pytest.mark.parametrize(
    ("props", "needles"),
    [
        (
            {"url": "https://h/m.pt", "modelLocation": {"s3": {"Bucket": "b", "Key": "k"}}},
            ("url", "modelLocation"),
        ),
        ({"url": "https://h/m.pt", "localpath": "/m.pt"}, ("url", "localpath")),
        ({"localpath": "/m.pt", "modelLocation": {"hf": {"repoId": "o/r"}}}, ("localpath", "modelLocation")),
        ({"modelLocation": {"s3": {"Bucket": "b", "Key": "k"}, "hf": {"repoId": "o/r"}}}, ("s3", "hf")),
        (
            {
                "authRequired": True,
                "modelLocation": {"s3": {"Bucket": "b", "Key": "k"}, "authRequired": False},
            },
            ("authRequired",),
        ),
        ({"authRequired": True, "url": "https://h/m.pt"}, ("authRequired",)),
        ({"sha256": SHA}, ("sha256",)),
        ({"sha256": SHA, "modelLocation": {"hf": {"repoId": "o/r"}}}, ("sha256", "filename")),
        ({"pretrained": "laion2b", "url": "https://h/m.pt"}, ("pretrained", "url")),
        ({"mean": [0.5, 0.5, 0.5]}, ("mean", "std")),
        ({"std": [0.5, 0.5, 0.5]}, ("std", "mean")),
        ({"tokens": 77, "maxTextTokens": 64}, ("tokens", "maxTextTokens")),
    ],
)
def test_contradictions_name_the_keys(props, needles):
    refused({"name": "ViT-B-32", "type": "open_clip", **props}, *needles)


def test_hub_name_with_location_refused():
    refused(
        {"name": "hf-hub:org/model", "type": "open_clip", "url": "https://h/m.pt"}, "hf-hub:org/model", "url"
    )


def test_image_settings_on_text_model_refused():
    for key, value in (("imagePreprocessor", "OpenAI"), ("size", 224), ("mean", [0.1, 0.1, 0.1])):
        refused({"name": "a/b", "type": "sentence_transformers", key: value}, key, "text only")
    refused({"name": "a/b", "type": "clip", "jit": True}, "jit")
    refused({"name": "a/b", "type": "clip", "pretrained": "x"}, "pretrained")


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("dimensions", 0, "at least 1"),
        ("dimensions", -5, "at least 1"),
        ("dimensions", "512", "whole number"),
        ("dimensions", True, "whole number"),
        ("dimensions", 1.5, "whole number"),
        ("size", 0, "at least 1"),
        ("jit", "yes", "true or false"),
        ("normalize", 1, "true or false"),
        ("precision", "int8", "fp32, fp16 or bf16"),
        ("imagePreprocessor", "Foo", "OpenCLIP"),
        ("mean", [0.5, 0.5], "3 numbers"),
        ("std", [0.5, 0.5, 0.0], "greater than 0"),
        ("mean", [0.5, "a", 0.5], "3 finite numbers"),
        ("sha256", "abc", "64 hexadecimal"),
        ("sha256", "g" * 64, "64 hexadecimal"),
        ("url", "ftp://h/m.pt", "http"),
        ("url", 5, "string"),
        ("localpath", "", "empty"),
        ("tokenizer", ["a"], "string"),
        ("modelLocation", "s3://b/k", "modelLocation"),
        ("note", 3, "note"),
    ],
)
def test_wrong_types_and_values_name_the_key(key, value, needle):
    props = {"name": "ViT-B-32", "type": "open_clip", key: value}
    if key in ("mean", "std"):
        props.setdefault("std" if key == "mean" else "mean", [0.5, 0.5, 0.5])
    refused(props, key, needle)


def test_type_required_and_checked():
    refused({"name": "x"}, "type is required")
    refused({"name": "x", "type": "tensorflow"}, "type", "'tensorflow'", "open_clip")
    refused({"name": "x", "type": 3}, "type", "string")


def test_name_required_for_open_clip_and_bare_hub_specs():
    refused({"type": "open_clip", "url": "https://h/m.pt"}, "name is required", "architecture")
    refused({"type": "clip"}, "name is required")


def test_incomplete_locations():
    refused(
        {"name": "a", "type": "open_clip", "modelLocation": {"s3": {"Bucket": "b"}}}, "modelLocation.s3.Key"
    )
    refused(
        {"name": "a", "type": "open_clip", "modelLocation": {"hf": {"filename": "f"}}}, "repoId is required"
    )
    refused({"name": "a", "type": "open_clip", "modelLocation": {"hf": {"repoId": "a/b/c"}}}, "ORG/NAME")
    refused({"name": "a", "type": "open_clip", "modelLocation": {}}, "modelLocation must name s3 or hf")
