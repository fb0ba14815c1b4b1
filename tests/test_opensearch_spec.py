"""OpenSearch register bodies as MODEL_PROPERTIES, Marqo's new types and snake_case spellings, and the
built-in OpenSearch pretrained names (URL scheme, MODEL_FORMAT)."""

from __future__ import annotations

import json

import pytest

from services.inference.config import InferenceSettings, SettingsError
from services.inference.main import plan_model
from services.inference.model_spec import HfLocation, ModelSpecError, parse_model_properties
from services.inference.opensearch_spec import parse_config_json
from services.inference.registry import OPENSEARCH_MODELS, builtin_spec, opensearch_urls

SHA = "c15f0d2e62d872be5b5bc6c84d2e0f4921541e29fefbef51d59cc10a8ae30e0f"
ALL_CONFIG = json.dumps({"_name_or_path": "nreimers/MiniLM-L6-H384-uncased", "architectures": ["BertModel"],
                         "max_position_embeddings": 512, "model_type": "bert", "vocab_size": 30522})

# OpenSearch's documented register body, pasted as-is (custom local models page)
DOCS_BODY = {
    "name": "huggingface/sentence-transformers/msmarco-distilbert-base-tas-b",
    "version": "1.0.1",
    "model_group_id": "wlcnb4kBJ1eYAeTMHlV6",
    "description": "This is a port of the DistilBert TAS-B Model to sentence-transformers model",
    "function_name": "TEXT_EMBEDDING",
    "model_format": "TORCH_SCRIPT",
    "model_content_size_in_bytes": 266352827,
    "model_content_hash_value": "acdc81b652b83121f914c5912ae27c0fca8fabf270e6f191ace6979a19830413",
    "model_config": {
        "model_type": "distilbert",
        "embedding_dimension": 768,
        "framework_type": "sentence_transformers",
        "all_config": "{\"activation\":\"gelu\",\"max_position_embeddings\":512,"
                      "\"model_type\":\"distilbert\"}",
    },
    "created_time": 1676073973126,
    "url": "https://artifacts.opensearch.org/models/ml-models/huggingface/sentence-transformers/"
           "msmarco-distilbert-base-tas-b/1.0.1/torch_script/"
           "sentence-transformers_msmarco-distilbert-base-tas-b-1.0.1-torch_script.zip",
}


def refused(props, *needles: str) -> str:
    with pytest.raises(ModelSpecError) as info:
        parse_model_properties(props)
    message = str(info.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def test_documented_register_body_parses_as_is():
    spec = parse_model_properties(json.dumps(DOCS_BODY))
    assert spec.type == "torchscript" and spec.model_format == "TORCH_SCRIPT"
    assert spec.function_name == "TEXT_EMBEDDING" and not spec.sparse
    assert spec.name == DOCS_BODY["name"] and spec.version == "1.0.1"
    assert spec.url == DOCS_BODY["url"] and spec.localpath is None
    assert spec.sha256 == DOCS_BODY["model_content_hash_value"]
    assert spec.content_size == 266352827
    assert spec.dimensions == 768 and spec.framework_type == "sentence_transformers"
    assert spec.normalize is False  # OpenSearch's default for normalize_result
    assert spec.pooling_mode is None  # the loader's default (mean) applies
    assert spec.extra["model_type"] == "distilbert"
    assert spec.extra["all_config"]["max_position_embeddings"] == 512


def test_onnx_and_sparse_bodies():
    onnx = parse_model_properties({
        "name": "m", "model_format": "onnx", "url": "file:///models/m.zip",
        "model_config": {"pooling_mode": "MEAN_SQRT_LEN", "normalize_result": "true", "model_max_length": 128,
                         "embedding_dimension": 384.0, "all_config": {"model_type": "bert"}}})
    assert onnx.type == "onnx" and onnx.model_format == "ONNX"
    assert onnx.localpath == "/models/m.zip" and onnx.url is None and onnx.sha256 is None
    assert onnx.pooling_mode == "mean_sqrt_len" and onnx.normalize is True
    assert onnx.max_text_tokens == 128 and onnx.dimensions == 384
    sparse = parse_model_properties({"name": "s", "function_name": "SPARSE_ENCODING",
                                     "model_format": "TORCH_SCRIPT", "url": "https://h/s.zip",
                                     "model_content_hash_value": SHA})
    assert sparse.type == "sparse" and sparse.sparse and sparse.function_name == "SPARSE_ENCODING"
    assert sparse.normalize is False
    tokenize = parse_model_properties({"name": "t", "model_task_type": "sparse_tokenize",
                                       "url": "file:///t.zip"})
    assert tokenize.function_name == "SPARSE_TOKENIZE" and tokenize.model_format == "TORCH_SCRIPT"


@pytest.mark.parametrize("mode, canonical", [("mean", "mean"), ("CLS", "cls"), ("Max", "max"),
                                             ("weighted_mean", "weightedmean"), ("LAST_TOKEN", "lasttoken"),
                                             ("none", "none")])
def test_pooling_modes_any_case(mode, canonical):
    spec = parse_model_properties({"name": "m", "model_format": "ONNX", "url": "file:///m.zip",
                                   "model_config": {"pooling_mode": mode}})
    assert spec.pooling_mode == canonical


@pytest.mark.parametrize(
    "changes, needles",
    [
        ({"bogus": 1}, ("unknown key 'bogus'",)),
        ({"model_format": "TENSORFLOW"}, ("model_format", "TORCH_SCRIPT or ONNX")),
        ({"model_format": None}, ("model_format is required",)),
        ({"function_name": "QUESTION_ANSWERING"}, ("function_name", "QUESTION_ANSWERING")),
        ({"function_name": "TEXT_EMBEDDING", "model_task_type": "SPARSE_ENCODING"},
         ("function_name", "contradicts model_task_type")),
        ({"model_content_hash_value": "abc"}, ("model_content_hash_value", "64 hexadecimal")),
        ({"model_content_hash_value": None}, ("model_content_hash_value is required",)),
        ({"model_content_size_in_bytes": -5}, ("model_content_size_in_bytes",)),
        ({"url": "ftp://h/m.zip"}, ("url", "http://, https:// or file://")),
        ({"url": None}, ("url is required",)),
        ({"name": None}, ("name is required",)),
        ({"connector_id": "abc"}, ("connector_id", "remote models")),
        ({"model_config": {"pooling_mode": "avg"}}, ("model_config.pooling_mode", "'avg'")),
        ({"model_config": {"dims": 3}}, ("model_config", "unknown key 'dims'")),
        ({"model_config": {"framework_type": "tensorflow"}}, ("model_config.framework_type",)),
        ({"model_config": {"framework_type": "huggingface_transformers_neuron"}}, ("Inferentia",)),
        ({"model_config": {"all_config": "{not json"}}, ("model_config.all_config", "not valid JSON")),
        ({"model_config": {"query_prefix": "query: "}}, ("model_config.query_prefix", "not supported")),
        ({"model_config": {"embedding_dimension": 0}}, ("model_config.embedding_dimension",)),
        ({"model_config": {"normalize_result": "yes"}}, ("model_config.normalize_result",)),
        ({"function_name": "SPARSE_ENCODING", "model_config": {"embedding_dimension": 4}},
         ("embedding_dimension applies to TEXT_EMBEDDING",)),
    ],
)
def test_register_body_refusals_name_the_key(changes, needles):
    body = {"name": "m", "version": "1", "model_format": "TORCH_SCRIPT", "url": "https://h/m.zip",
            "model_content_hash_value": SHA}
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    refused(body, *needles)


def test_pretrained_body_without_url_uses_opensearch_artifacts():
    spec = parse_model_properties({"name": "huggingface/sentence-transformers/all-MiniLM-L6-v2",
                                   "version": "1.0.1", "model_format": "TORCH_SCRIPT"})
    assert spec.url == ("https://artifacts.opensearch.org/models/ml-models/huggingface/sentence-transformers/"
                        "all-MiniLM-L6-v2/1.0.1/torch_script/"
                        "sentence-transformers_all-MiniLM-L6-v2-1.0.1-torch_script.zip")
    assert spec.config_url == ("https://artifacts.opensearch.org/models/ml-models/huggingface/"
                               "sentence-transformers/all-MiniLM-L6-v2/1.0.1/torch_script/config.json")
    assert spec.sha256 is None  # comes from config.json at load time
    refused({"name": "amazon/neural-sparse/opensearch-neural-sparse-encoding-v1", "model_format": "ONNX"},
            "TORCH_SCRIPT only")
    refused({"name": "huggingface/sentence-transformers/all-MiniLM-L6-v2", "model_format": "ONNX",
             "model_content_hash_value": SHA}, "model_content_hash_value needs a url")
    refused({"name": "amazon/neural-sparse/opensearch-neural-sparse-tokenizer-v1",
             "model_format": "TORCH_SCRIPT", "function_name": "SPARSE_ENCODING"}, "SPARSE_TOKENIZE")


def test_marqo_types_and_snake_case_spellings():
    hf = parse_model_properties({"name": "m", "type": "hf", "dimensions": 384,
                                 "model_location": {"hf": {"repo_id": "org/repo"}, "auth_required": True}})
    assert hf.hf == HfLocation(repo_id="org/repo") and hf.auth_required is True
    top = parse_model_properties({"name": "m", "type": "hf", "auth_required": True,
                                  "modelLocation": {"hf": {"repoId": "org/repo"}}})
    assert top.auth_required is True
    ts = parse_model_properties({"name": "m", "type": "torchscript", "localpath": "/m.zip",
                                 "pooling_mode": "cls"})
    assert ts.type == "torchscript" and ts.model_format == "TORCH_SCRIPT" and ts.pooling_mode == "cls"
    assert ts.normalize is True  # Marqo's default
    onnx = parse_model_properties({"name": "m", "type": "ONNX", "url": "https://h/m.zip",
                                   "poolingMode": "max"})
    assert onnx.type == "onnx" and onnx.pooling_mode == "max"
    sparse = parse_model_properties({"name": "org/splade", "type": "sparse"})
    assert sparse.type == "sparse" and sparse.sparse and sparse.model_format is None
    assert sparse.normalize is False
    refused({"name": "m", "type": "hf", "modelLocation": {"hf": {"repoId": "a/b"}},
             "model_location": {"hf": {"repoId": "a/b"}}}, "give one of 'modelLocation' and 'model_location'")
    refused({"name": "m", "type": "hf", "modelLocation": {"hf": {"repoId": "a/b", "repo_id": "a/b"}}},
            "'repoId' and 'repo_id'")
    refused({"name": "m", "type": "onnx"}, "needs the model's files")
    refused({"name": "m", "type": "clip", "poolingMode": "mean"}, "poolingMode applies to")
    refused({"name": "m", "type": "sparse", "dimensions": 5}, "dimensions does not apply")
    refused({"name": "m", "type": "onnx", "url": "https://h/m.zip", "mean": [0.5, 0.5, 0.5],
             "std": [0.5, 0.5, 0.5]}, "image setting")


def test_registry_names_and_url_scheme():
    sparse_names = {"amazon/neural-sparse/opensearch-neural-sparse-encoding-v1",
                    "amazon/neural-sparse/opensearch-neural-sparse-encoding-doc-v1",
                    "amazon/neural-sparse/opensearch-neural-sparse-tokenizer-v1"}
    dense_names = {"huggingface/sentence-transformers/all-MiniLM-L6-v2",
                   "huggingface/sentence-transformers/all-mpnet-base-v2",
                   "huggingface/sentence-transformers/msmarco-distilbert-base-tas-b",
                   "huggingface/sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"}
    assert sparse_names | dense_names <= set(OPENSEARCH_MODELS)
    assert opensearch_urls("amazon/neural-sparse/opensearch-neural-sparse-encoding-doc-v1", "1.0.1",
                           "TORCH_SCRIPT") == (
        "https://artifacts.opensearch.org/models/ml-models/amazon/neural-sparse/"
        "opensearch-neural-sparse-encoding-doc-v1/1.0.1/torch_script/"
        "neural-sparse_opensearch-neural-sparse-encoding-doc-v1-1.0.1-torch_script.zip",
        "https://artifacts.opensearch.org/models/ml-models/amazon/neural-sparse/"
        "opensearch-neural-sparse-encoding-doc-v1/1.0.1/torch_script/config.json")
    minilm = builtin_spec("huggingface/sentence-transformers/all-MiniLM-L6-v2")
    assert minilm.model_format == "ONNX" and minilm.type == "onnx" and minilm.dimensions == 384
    assert minilm.url.endswith("/1.0.2/onnx/sentence-transformers_all-MiniLM-L6-v2-1.0.2-onnx.zip")
    assert builtin_spec("huggingface/sentence-transformers/all-MiniLM-L6-v2", enable_cuda=True).model_format \
        == "TORCH_SCRIPT"
    ts = builtin_spec("huggingface/sentence-transformers/all-MiniLM-L6-v2", "TORCH_SCRIPT")
    assert ts.type == "torchscript" and "/torch_script/" in ts.config_url
    tokenizer = builtin_spec("amazon/neural-sparse/opensearch-neural-sparse-tokenizer-v1")
    assert tokenizer.function_name == "SPARSE_TOKENIZE" and tokenizer.type == "sparse"
    with pytest.raises(ModelSpecError, match="TORCH_SCRIPT only"):
        builtin_spec("huggingface/sentence-transformers/distiluse-base-multilingual-cased-v1", "ONNX")
    with pytest.raises(ModelSpecError, match="MODEL_FORMAT applies to OpenSearch"):
        builtin_spec("sentence-transformers/all-MiniLM-L6-v2", "ONNX")


def test_artifacts_mirror_and_settings(monkeypatch):
    monkeypatch.setenv("OPENSEARCH_ARTIFACTS_URL", "http://127.0.0.1:9/mirror/")
    spec = builtin_spec("amazon/neural-sparse/opensearch-neural-sparse-encoding-v1")
    assert spec.url.startswith("http://127.0.0.1:9/mirror/amazon/neural-sparse/")
    settings = InferenceSettings.from_env({"MODEL": "huggingface/sentence-transformers/all-mpnet-base-v2",
                                           "MODEL_FORMAT": "torch-script"})
    assert plan_model(settings).spec.model_format == "TORCH_SCRIPT"
    with pytest.raises(SettingsError, match="MODEL_FORMAT must be"):
        InferenceSettings.from_env({"MODEL": "x", "MODEL_FORMAT": "tf"})
    with pytest.raises(SettingsError, match="give model_format in the spec"):
        InferenceSettings.from_env({"MODEL_PROPERTIES": "{}", "MODEL_FORMAT": "ONNX"})
    with pytest.raises(SettingsError, match="SPARSE_PRUNE_RATIO"):
        InferenceSettings.from_env({"MODEL": "x", "SPARSE_PRUNE_RATIO": "1.5"})
    with pytest.raises(SettingsError, match="SPARSE_MAX_TERMS"):
        InferenceSettings.from_env({"MODEL": "x", "SPARSE_MAX_TERMS": "-1"})
    dense = InferenceSettings.from_env({"MODEL": "huggingface/sentence-transformers/all-mpnet-base-v2",
                                        "SPARSE_MAX_TERMS": "10"})
    with pytest.raises(SettingsError, match="apply to sparse models"):
        plan_model(dense)
    sparse = plan_model(InferenceSettings.from_env({
        "MODEL": "amazon/neural-sparse/opensearch-neural-sparse-encoding-v1", "SPARSE_MAX_TERMS": "10",
        "SPARSE_PRUNE_RATIO": "0.1"}))
    assert sparse.sparse.max_terms == 10 and sparse.sparse.prune_ratio == pytest.approx(0.1)


def test_published_config_json_is_validated():
    doc = {"name": "sentence-transformers/all-MiniLM-L6-v2", "version": "1.0.2", "description": "d",
           "model_task_type": "TEXT_EMBEDDING", "model_format": "ONNX", "model_content_size_in_bytes": 91,
           "model_content_hash_value": SHA,
           "model_config": {"model_type": "bert", "embedding_dimension": 384,
                            "framework_type": "sentence_transformers", "pooling_mode": "MEAN",
                            "normalize_result": True, "all_config": ALL_CONFIG}}
    published = parse_config_json(json.dumps(doc), "config.json")
    assert published["sha256"] == SHA and published["content_size"] == 91
    assert published["config"]["pooling_mode"] == "mean" and published["config"]["normalize"] is True
    with pytest.raises(ModelSpecError, match="no model_content_hash_value"):
        parse_config_json(json.dumps({**doc, "model_content_hash_value": None}), "config.json")
    with pytest.raises(ModelSpecError, match="not valid JSON"):
        parse_config_json("<html>", "config.json")
