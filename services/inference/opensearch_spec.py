"""OpenSearch register bodies (``POST /_plugins/_ml/models/_register``) as ``MODEL_PROPERTIES``.

A body is pasted as-is::

    {"name": "huggingface/sentence-transformers/all-MiniLM-L6-v2", "version": "1.0.2",
     "model_format": "TORCH_SCRIPT", "function_name": "TEXT_EMBEDDING",
     "model_content_hash_value": "<sha256 of the zip>", "model_content_size_in_bytes": 91790008,
     "url": "https://.../all-MiniLM-L6-v2-1.0.2-torch_script.zip",
     "model_config": {"model_type": "bert", "embedding_dimension": 384,
                      "framework_type": "sentence_transformers", "pooling_mode": "mean",
                      "normalize_result": true, "all_config": "{...}"}}

Keys that only mean something inside an OpenSearch cluster (``model_group_id``, ``description``,
``deploy_setting``, access control, ...) are accepted and ignored; unknown keys, remote models
(``connector``) and contradictions are refused naming the key. A body without ``url`` whose name is
one of OpenSearch's pretrained models is fetched from OpenSearch's artifact repository, its hash
taken from the ``config.json`` published next to the zip (see :mod:`.registry`).

:func:`parse_config_json` reads that ``config.json`` (the same shape, with ``model_task_type`` as
an older spelling of ``function_name``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .model_spec import (
    FUNCTION_NAMES,
    MODEL_FORMATS,
    ONNX,
    SPARSE_ENCODING,
    SPARSE_FUNCTIONS,
    SPARSE_TOKENIZE,
    TEXT_EMBEDDING,
    TORCH_SCRIPT,
    ModelSpec,
    ModelSpecError,
    parse_pooling_mode,
    refuse_unknown,
)

_WHERE = "MODEL_PROPERTIES"

#: keys that tell an OpenSearch register body from a Marqo spec
MARKER_KEYS: tuple[str, ...] = (
    "model_format", "function_name", "model_task_type", "model_config", "model_content_hash_value",
    "model_content_size_in_bytes",
)
#: keys about the OpenSearch cluster, not the model: accepted, ignored
CLUSTER_KEYS: tuple[str, ...] = (
    "description", "model_group_id", "created_time", "last_updated_time", "last_registered_time",
    "is_enabled", "rate_limiter", "deploy_setting", "deploy_model", "model_node_ids", "access_mode",
    "backend_roles", "add_all_backend_roles", "guardrails", "interface", "is_hidden",
)
BODY_KEYS: tuple[str, ...] = (
    "name", "version", "model_format", "function_name", "model_task_type", "url",
    "model_content_hash_value", "model_content_size_in_bytes", "model_config",
) + CLUSTER_KEYS + ("connector", "connector_id")
CONFIG_KEYS: tuple[str, ...] = (
    "model_type", "embedding_dimension", "framework_type", "pooling_mode", "normalize_result", "all_config",
    "additional_config", "model_max_length", "query_prefix", "passage_prefix",
)
FRAMEWORK_TYPES: tuple[str, ...] = ("sentence_transformers", "huggingface_transformers")
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def is_register_body(props: Mapping[str, Any]) -> bool:
    """Whether ``props`` is shaped like an OpenSearch register body rather than a Marqo spec."""
    return any(key in props for key in MARKER_KEYS)


def parse_register_body(props: Mapping[str, Any], where: str = _WHERE) -> ModelSpec:
    """An OpenSearch register body -> :class:`ModelSpec`; ModelSpecError naming the key otherwise."""
    refuse_unknown(props, BODY_KEYS, where)
    for key in ("connector", "connector_id"):
        if key in props:
            raise ModelSpecError(
                f"{where}.{key}: remote models (connectors) call an outside service; polyvec serves local "
                "models only (TORCH_SCRIPT or ONNX artifacts)")
    name = _str(props, "name", where)
    if name is None:
        raise ModelSpecError(f"{where}.name is required")
    version = _version(props, where)
    function = _function_name(props, where)
    fmt = _model_format(props, where, function)
    sha256 = _sha256(props, where)
    size = _size(props, where)
    given_url = url = _str(props, "url", where)
    localpath = None
    if url is not None:
        url, localpath = _location(url, where)
        if localpath is None and sha256 is None:
            raise ModelSpecError(
                f"{where}.model_content_hash_value is required with an http(s) url: the SHA-256 of the zip, "
                "as OpenSearch requires it (sha256sum model.zip)")
    config = _model_config(props.get("model_config"), f"{where}.model_config", function)

    spec_type = "sparse" if function in SPARSE_FUNCTIONS else {TORCH_SCRIPT: "torchscript", ONNX: "onnx"}[fmt]
    spec = ModelSpec(
        name=name, type=spec_type, version=version, function_name=function, model_format=fmt,
        url=url, localpath=localpath, sha256=sha256, content_size=size,
        dimensions=config.get("dimensions"), pooling_mode=config.get("pooling_mode"),
        normalize=config.get("normalize", False), max_text_tokens=config.get("max_text_tokens"),
        framework_type=config.get("framework_type"),
        extra={k: v for k, v in config.items() if k in ("model_type", "all_config", "additional_config")},
    )
    if given_url is None:
        from .registry import opensearch_pretrained

        pretrained = opensearch_pretrained(name, version, fmt, where=where)
        if pretrained is None:
            raise ModelSpecError(
                f"{where}.url is required: {name!r} is not one of OpenSearch's pretrained models "
                "(give the zip's http(s):// or file:// url)")
        for key in ("model_content_hash_value", "model_content_size_in_bytes", "model_config"):
            if props.get(key) is not None:
                raise ModelSpecError(
                    f"{where}.{key} needs a url; without one the pretrained model {name!r} comes with "
                    "OpenSearch's published config.json, which the zip is checked against")
        if any(props.get(k) for k in ("function_name", "model_task_type")) \
                and function != pretrained.function_name:
            raise ModelSpecError(
                f"{where}.function_name is {function} but the pretrained model {name!r} is "
                f"{pretrained.function_name}")
        return pretrained
    return spec


def parse_config_json(raw: bytes | str, label: str) -> dict[str, Any]:
    """OpenSearch's ``config.json`` published next to a pretrained zip, validated like a register body.

    Returns ``{"sha256", "content_size", "function_name", "model_format", "config"}``.
    """
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelSpecError(f"{label} is not valid JSON: {exc}") from None
    if not isinstance(doc, Mapping):
        raise ModelSpecError(f"{label} must be a JSON object")
    where = label
    known = BODY_KEYS + ("model_id", "model_state", "chunk_number", "total_chunks")
    refuse_unknown(doc, known, where)
    function = _function_name(doc, where)
    sha256 = _sha256(doc, where)
    if sha256 is None:
        raise ModelSpecError(f"{where} has no model_content_hash_value to verify the zip against")
    return {
        "sha256": sha256,
        "content_size": _size(doc, where),
        "function_name": function,
        "model_format": _model_format(doc, where, function),
        "config": _model_config(doc.get("model_config"), f"{where}.model_config", function),
    }


# --- fields ----------------------------------------------------------------------------------------

def _str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ModelSpecError(f"{where}.{key} must be a non-empty string, not {value!r}")
    return value.strip()


def _version(props: Mapping[str, Any], where: str) -> str | None:
    value = props.get("version")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ModelSpecError(f"{where}.version must be a string like \"1.0.1\", not {value!r}")
    return str(value).strip() or None


def _function_name(props: Mapping[str, Any], where: str) -> str:
    given = {k: props[k] for k in ("function_name", "model_task_type") if props.get(k) is not None}
    values = set()
    for key, value in given.items():
        if not isinstance(value, str) or value.strip().upper() not in FUNCTION_NAMES:
            raise ModelSpecError(
                f"{where}.{key} {value!r} is not served here: use one of {', '.join(FUNCTION_NAMES)} "
                "(polyvec serves embedding models)")
        values.add(value.strip().upper())
    if len(values) > 1:
        raise ModelSpecError(
            f"{where}: function_name ({given['function_name']}) contradicts model_task_type "
            f"({given['model_task_type']}); give one")
    return values.pop() if values else TEXT_EMBEDDING


def _model_format(props: Mapping[str, Any], where: str, function: str) -> str:
    value = props.get("model_format")
    if value is None:
        if function == SPARSE_TOKENIZE:  # a tokenizer needs no model file
            return TORCH_SCRIPT
        raise ModelSpecError(f"{where}.model_format is required: TORCH_SCRIPT or ONNX")
    if not isinstance(value, str) or value.strip().upper().replace("-", "_") not in MODEL_FORMATS:
        raise ModelSpecError(f"{where}.model_format must be TORCH_SCRIPT or ONNX, not {value!r}")
    return value.strip().upper().replace("-", "_")


def _sha256(props: Mapping[str, Any], where: str) -> str | None:
    value = props.get("model_content_hash_value")
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256_RE.match(value.strip()):
        raise ModelSpecError(
            f"{where}.model_content_hash_value must be a SHA-256: 64 hexadecimal characters, not {value!r}")
    return value.strip().lower()


def _size(props: Mapping[str, Any], where: str) -> int | None:
    value = props.get("model_content_size_in_bytes")
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelSpecError(
            f"{where}.model_content_size_in_bytes must be a positive whole number, not {value!r}")
    return value


def _location(url: str, where: str) -> tuple[str | None, str | None]:
    """(http(s) url, None) or (None, local path) for a file:// url."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https") and parts.netloc:
        return url, None
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ModelSpecError(
                f"{where}.url: a file:// url names a file on this machine, not on {parts.netloc!r}")
        return None, str(Path(unquote(parts.path)))
    raise ModelSpecError(f"{where}.url must be an http://, https:// or file:// url, not {url!r}")


def _model_config(raw: Any, where: str, function: str) -> dict[str, Any]:
    """``model_config`` -> the ModelSpec values it carries (absent keys absent)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ModelSpecError(f"{where} must be an object")
    refuse_unknown(raw, CONFIG_KEYS, where)
    out: dict[str, Any] = {}
    for key in ("query_prefix", "passage_prefix"):
        if raw.get(key):
            raise ModelSpecError(
                f"{where}.{key} is not supported: a Vectorize call does not say whether a text is a query "
                "or a passage; add the prefix to the texts you send")
    if raw.get("model_type") is not None:
        out["model_type"] = _str(raw, "model_type", where)
    if raw.get("framework_type") is not None:
        value = raw["framework_type"]
        key = value.strip().lower() if isinstance(value, str) else value
        if key == "huggingface_transformers_neuron":
            raise ModelSpecError(f"{where}.framework_type {value!r} needs AWS Inferentia; use "
                                 "sentence_transformers or huggingface_transformers")
        if key not in FRAMEWORK_TYPES:
            raise ModelSpecError(
                f"{where}.framework_type must be one of {', '.join(FRAMEWORK_TYPES)}, not {value!r}")
        out["framework_type"] = key
    dense_only = {"embedding_dimension": "dimensions", "pooling_mode": "pooling_mode",
                  "normalize_result": "normalize"}
    if function != TEXT_EMBEDDING:
        for key in dense_only:
            if raw.get(key) is not None and not (key == "normalize_result" and raw[key] is False):
                raise ModelSpecError(f"{where}.{key} applies to TEXT_EMBEDDING models, not {function}")
    if raw.get("embedding_dimension") is not None:
        dims = raw["embedding_dimension"]
        if isinstance(dims, float) and dims.is_integer():
            dims = int(dims)
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
            raise ModelSpecError(f"{where}.embedding_dimension must be a positive whole number, not {dims!r}")
        out["dimensions"] = dims
    if raw.get("pooling_mode") is not None:
        out["pooling_mode"] = parse_pooling_mode(raw["pooling_mode"], f"{where}.pooling_mode")
    if raw.get("normalize_result") is not None:
        value = raw["normalize_result"]
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            value = value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise ModelSpecError(f"{where}.normalize_result must be true or false, not {value!r}")
        out["normalize"] = value
    if raw.get("model_max_length") is not None:
        value = raw["model_max_length"]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelSpecError(f"{where}.model_max_length must be a positive whole number, not {value!r}")
        out["max_text_tokens"] = value
    if raw.get("all_config") is not None:
        out["all_config"] = _all_config(raw["all_config"], f"{where}.all_config")
    if raw.get("additional_config") is not None:
        if not isinstance(raw["additional_config"], Mapping):
            raise ModelSpecError(f"{where}.additional_config must be an object")
        out["additional_config"] = dict(raw["additional_config"])
    return out


def _all_config(value: Any, where: str) -> dict[str, Any]:
    """``all_config``: the Hugging Face config, as a JSON string (OpenSearch's spelling) or an object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ModelSpecError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise ModelSpecError(f"{where} must be a JSON object (or a string holding one)")
    return dict(value)


__all__ = [
    "BODY_KEYS", "CLUSTER_KEYS", "CONFIG_KEYS", "MARKER_KEYS", "is_register_body", "parse_config_json",
    "parse_register_body", "SPARSE_ENCODING", "SPARSE_TOKENIZE", "TEXT_EMBEDDING",
]
