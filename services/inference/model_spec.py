"""The bring-your-own-model spec (``MODEL_PROPERTIES``): Marqo's ``modelProperties`` or an OpenSearch
register body.

The dataclass fields are the contract other modules read; :func:`parse_model_properties`
turns the user's JSON into one, refusing unknown keys and contradictions with the key named.
A body holding OpenSearch's keys (``model_format``, ``function_name``, ``model_config``,
``model_content_hash_value``, ...) is read by :mod:`.opensearch_spec`; anything else is Marqo's shape.
Marqo's snake_case spellings (``model_location``, ``repo_id``, ``auth_required``) are accepted next
to the camelCase ones.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit


class ModelSpecError(ValueError):
    """The model spec is invalid; the message names the offending key."""


TEXT_EMBEDDING = "TEXT_EMBEDDING"
SPARSE_ENCODING = "SPARSE_ENCODING"
SPARSE_TOKENIZE = "SPARSE_TOKENIZE"
FUNCTION_NAMES: tuple[str, ...] = (TEXT_EMBEDDING, SPARSE_ENCODING, SPARSE_TOKENIZE)
SPARSE_FUNCTIONS: tuple[str, ...] = (SPARSE_ENCODING, SPARSE_TOKENIZE)
TORCH_SCRIPT = "TORCH_SCRIPT"
ONNX = "ONNX"
MODEL_FORMATS: tuple[str, ...] = (TORCH_SCRIPT, ONNX)
#: OpenSearch's pooling modes (``model_config.pooling_mode``), lower-case as its docs spell them
POOLING_MODES: tuple[str, ...] = ("mean", "mean_sqrt_len", "max", "weightedmean", "cls", "lasttoken", "none")
_POOLING_ALIASES = {"weighted_mean": "weightedmean", "last_token": "lasttoken"}


def parse_pooling_mode(raw: Any, where: str) -> str:
    """A pooling mode in any case (``MEAN``, ``mean``, ``weighted_mean``...), canonical lower-case."""
    if not isinstance(raw, str) or not raw.strip():
        raise ModelSpecError(f"{where} must be one of {', '.join(POOLING_MODES)}, not {raw!r}")
    key = raw.strip().lower()
    key = _POOLING_ALIASES.get(key, key)
    if key not in POOLING_MODES:
        raise ModelSpecError(f"{where} must be one of {', '.join(POOLING_MODES)}, not {raw!r}")
    return key


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str


@dataclass(frozen=True)
class HfLocation:
    repo_id: str
    filename: str | None = None  # None: the whole repo snapshot (a folder)


@dataclass(frozen=True)
class ModelSpec:
    name: str  # architecture name (open_clip), hub name, "hf-hub:ORG/NAME", or a label
    type: str  # "open_clip" | "clip" | "sentence_transformers" | "torchscript" | "onnx" | "sparse"
    dimensions: int | None = None
    pretrained: str | None = None  # open_clip pretrained tag (built-in registry only)
    url: str | None = None
    localpath: str | None = None
    s3: S3Location | None = None
    hf: HfLocation | None = None
    auth_required: bool = False
    jit: bool = False
    precision: str | None = None  # fp32 | fp16 | bf16
    tokenizer: str | None = None
    image_preprocessor: str | None = None  # OpenCLIP | OpenAI | SigLIP | MobileCLIP | CLIPA
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    size: int | None = None
    sha256: str | None = None
    normalize: bool = True
    max_text_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # --- OpenSearch artifacts (zip: one .pt or .onnx, tokenizer.json, optional config.json / idf.json)
    function_name: str = TEXT_EMBEDDING  # TEXT_EMBEDDING | SPARSE_ENCODING | SPARSE_TOKENIZE
    model_format: str | None = None  # TORCH_SCRIPT | ONNX (None: found from the files)
    pooling_mode: str | None = None  # mean | mean_sqrt_len | max | weightedmean | cls | lasttoken | none
    content_size: int | None = None  # the artifact's size in bytes, checked with sha256
    version: str | None = None
    framework_type: str | None = None  # sentence_transformers | huggingface_transformers
    #: OpenSearch's config.json next to the zip: its hash, size and model_config complete this spec
    #: before the zip is fetched (built-in OpenSearch names)
    config_url: str | None = None

    @property
    def sparse(self) -> bool:
        return self.function_name in SPARSE_FUNCTIONS


# --------------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------------

#: canonical model types a loader exists for
MODEL_TYPES: tuple[str, ...] = ("open_clip", "clip", "sentence_transformers", "torchscript", "onnx", "sparse")
#: types whose artifact is OpenSearch's layout (or, for sparse, also a Hugging Face masked-LM folder)
ARTIFACT_TYPES: tuple[str, ...] = ("torchscript", "onnx", "sparse")

_TYPE_ALIASES: dict[str, str] = {
    "open_clip": "open_clip",
    "openclip": "open_clip",
    "clip": "clip",
    "hf_clip": "clip",
    "transformers_clip": "clip",
    "siglip": "clip",
    "hf_siglip": "clip",
    "sentence_transformers": "sentence_transformers",
    "sentence_transformer": "sentence_transformers",
    "sentencetransformers": "sentence_transformers",
    "sbert": "sentence_transformers",
    "st": "sentence_transformers",
    # Marqo's "hf" type is a Hugging Face text model with pooling: sentence-transformers loads those
    "hf": "sentence_transformers",
    "huggingface": "sentence_transformers",
    "transformers": "sentence_transformers",
    "torchscript": "torchscript",
    "torch_script": "torchscript",
    "onnx": "onnx",
    "sparse": "sparse",
    "splade": "sparse",
}

IMAGE_PREPROCESSORS: tuple[str, ...] = ("OpenCLIP", "OpenAI", "SigLIP", "MobileCLIP", "CLIPA")

_PRECISIONS: dict[str, str] = {
    "fp32": "fp32", "float32": "fp32", "float": "fp32", "full": "fp32",
    "fp16": "fp16", "float16": "fp16", "half": "fp16",
    "bf16": "bf16", "bfloat16": "bf16",
}

_KNOWN_KEYS: tuple[str, ...] = (
    "name", "dimensions", "type", "url", "localpath", "modelLocation", "authRequired", "jit", "precision",
    "tokenizer", "imagePreprocessor", "mean", "std", "size", "sha256", "normalize", "tokens",
    "maxTextTokens", "pretrained", "poolingMode", "note", "notes",
)
_LOCATION_KEYS: tuple[str, ...] = ("s3", "hf", "authRequired")
_S3_KEYS: tuple[str, ...] = ("Bucket", "Key")
_HF_KEYS: tuple[str, ...] = ("repoId", "filename")
#: Marqo's own examples spell these in snake_case; both spellings are accepted (one per spec)
_SNAKE_CASE: dict[str, str] = {
    "model_location": "modelLocation",
    "auth_required": "authRequired",
    "repo_id": "repoId",
    "pooling_mode": "poolingMode",
}

_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_WHERE = "MODEL_PROPERTIES"


def parse_model_properties(raw: str | bytes | Mapping[str, Any]) -> ModelSpec:
    """Validate a Marqo-shaped ``modelProperties`` object (JSON text or a dict) into a :class:`ModelSpec`.

    Unknown keys, wrong types and contradictions raise :class:`ModelSpecError` naming the key.
    """
    props = _load(raw)
    from .opensearch_spec import is_register_body, parse_register_body

    if is_register_body(props):
        return parse_register_body(props)
    props = camel_case(props, _WHERE)
    refuse_unknown(props, _KNOWN_KEYS, _WHERE)

    mtype = _parse_type(props)
    name = _opt_str(props, "name")
    dimensions = _opt_int(props, "dimensions", minimum=1)
    url = _opt_str(props, "url")
    localpath = _opt_str(props, "localpath")
    top_auth = _opt_bool(props, "authRequired")
    location = props.get("modelLocation")
    s3, hf, loc_auth = _parse_location(location) if location is not None else (None, None, None)
    jit = _opt_bool(props, "jit") or False
    precision = _parse_precision(props)
    tokenizer = _opt_str(props, "tokenizer")
    preprocessor = _parse_preprocessor(props)
    mean = _opt_triple(props, "mean", positive=False)
    std = _opt_triple(props, "std", positive=True)
    size = _opt_int(props, "size", minimum=1)
    sha256 = _parse_sha256(props)
    normalize = _opt_bool(props, "normalize")
    max_tokens = _parse_max_tokens(props)
    pretrained = _opt_str(props, "pretrained")
    pooling = (parse_pooling_mode(props["poolingMode"], f"{_WHERE}.poolingMode")
               if props.get("poolingMode") is not None else None)
    extra: dict[str, Any] = {}
    for key in ("note", "notes"):
        if key in props:
            if not isinstance(props[key], str):
                raise ModelSpecError(f"{_WHERE}.{key} must be a string, not {_type_name(props[key])}")
            extra[key] = props[key]

    # --- one location at most -------------------------------------------------------------------
    given = [k for k, v in (("url", url), ("localpath", localpath), ("modelLocation", s3 or hf)) if v]
    if len(given) > 1:
        raise ModelSpecError(
            f"{_WHERE}: give only one of url, localpath and modelLocation, "
            f"not both {given[0]} and {given[1]}")
    if url is not None:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ModelSpecError(f"{_WHERE}.url must be an http:// or https:// URL, not {url!r}")

    # --- authRequired ----------------------------------------------------------------------------
    if top_auth is not None and loc_auth is not None and top_auth != loc_auth:
        raise ModelSpecError(
            f"{_WHERE}: authRequired ({top_auth}) contradicts modelLocation.authRequired ({loc_auth})")
    auth_required = bool(top_auth if top_auth is not None else loc_auth)
    if auth_required and not (s3 or hf):
        raise ModelSpecError(
            f"{_WHERE}.authRequired applies to modelLocation (s3 or hf) only; "
            f"{'url' if url else 'localpath' if localpath else 'a hub name'} takes no credentials")

    # --- name -----------------------------------------------------------------------------------
    has_location = bool(url or localpath or s3 or hf)
    if name is None:
        if mtype == "open_clip" or not has_location:
            what = "the OpenCLIP architecture (e.g. ViT-B-32) or hf-hub:ORG/NAME" if mtype == "open_clip" \
                else "a hub model name, or give localpath/url/modelLocation"
            raise ModelSpecError(f"{_WHERE}.name is required: {what}")
        name = _default_name(url, localpath, s3, hf)
    if not name.strip():
        raise ModelSpecError(f"{_WHERE}.name must not be empty")

    # --- type-specific contradictions -----------------------------------------------------------
    if pretrained is not None:
        if mtype != "open_clip":
            raise ModelSpecError(f"{_WHERE}.pretrained is an OpenCLIP pretrained tag; type is {mtype!r}")
        if has_location:
            raise ModelSpecError(
                f"{_WHERE}: pretrained ({pretrained!r}) and {given[0]} both name the weights; give one")
    if mtype == "open_clip" and name.startswith("hf-hub:") and has_location:
        raise ModelSpecError(
            f"{_WHERE}: name {name!r} loads its weights from the hub; do not also give {given[0]}")
    if jit and mtype != "open_clip":
        raise ModelSpecError(f"{_WHERE}.jit applies to open_clip models only, not {mtype!r}")
    if mtype in ("sentence_transformers",) + ARTIFACT_TYPES:
        for key, value in (("imagePreprocessor", preprocessor), ("mean", mean), ("std", std), ("size", size)):
            if value is not None:
                raise ModelSpecError(
                    f"{_WHERE}.{key} is an image setting; type {mtype!r} embeds text only")
    if pooling is not None and mtype not in ("torchscript", "onnx"):
        raise ModelSpecError(f"{_WHERE}.poolingMode applies to types torchscript and onnx, not {mtype!r}")
    if mtype in ("torchscript", "onnx") and not (url or localpath or s3 or hf):
        raise ModelSpecError(
            f"{_WHERE}: type {mtype!r} needs the model's files: give url, localpath or modelLocation "
            "(a zip or folder holding one .pt or .onnx file and tokenizer.json)")
    if mtype == "sparse" and dimensions is not None:
        raise ModelSpecError(
            f"{_WHERE}.dimensions does not apply to type 'sparse': a sparse model's width is its vocabulary")
    if (mean is None) != (std is None):
        have, missing = ("mean", "std") if mean is not None else ("std", "mean")
        raise ModelSpecError(f"{_WHERE}.{have} given without {missing}: give both, 3 numbers each")

    # --- sha256 needs a file --------------------------------------------------------------------
    if sha256 is not None:
        if not has_location:
            raise ModelSpecError(
                f"{_WHERE}.sha256 needs a file to check: give url, localpath or modelLocation "
                f"(name {name!r} alone is resolved by the model library)")
        if hf is not None and hf.filename is None:
            raise ModelSpecError(
                f"{_WHERE}.sha256 needs modelLocation.hf.filename: a whole repo snapshot is a folder")

    return ModelSpec(
        name=name, type=mtype, dimensions=dimensions, pretrained=pretrained, url=url, localpath=localpath,
        s3=s3, hf=hf, auth_required=auth_required, jit=jit, precision=precision, tokenizer=tokenizer,
        image_preprocessor=preprocessor, mean=mean, std=std, size=size, sha256=sha256,
        normalize=(mtype != "sparse") if normalize is None else normalize, max_text_tokens=max_tokens,
        extra=extra, pooling_mode=pooling,
        model_format={"torchscript": TORCH_SCRIPT, "onnx": ONNX}.get(mtype),
        function_name=SPARSE_ENCODING if mtype == "sparse" else TEXT_EMBEDDING,
    )


def camel_case(obj: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``obj`` with Marqo's snake_case keys renamed to camelCase; both spellings of one key is refused."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        canonical = _SNAKE_CASE.get(key, key) if isinstance(key, str) else key
        if canonical in out:
            other = key if canonical != key else next(k for k, v in _SNAKE_CASE.items() if v == key)
            raise ModelSpecError(f"{where}: give one of {canonical!r} and {other!r}, not both")
        out[canonical] = value
    return out


# --- helpers -------------------------------------------------------------------------------------

def blank(raw: Any) -> bool:
    """True for JSON text (str or bytes) that is empty or only white space."""
    return isinstance(raw, str | bytes | bytearray) and not raw.strip()


def decode_json(raw: Any, where: str, error: type[ModelSpecError] = ModelSpecError) -> Any:
    """JSON text (str or bytes) parsed, anything else as it is; bad JSON raises ``error`` naming ``where``.

    The message holds the parser's reason and position only, never the document (it may hold secrets).
    """
    if isinstance(raw, bytes | bytearray):
        raw = raw.decode("utf-8")
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise error(f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
                    f"(char {exc.pos})") from None


def _load(raw: str | bytes | Mapping[str, Any]) -> dict[str, Any]:
    if blank(raw):
        raise ModelSpecError(f"{_WHERE} is empty: give a JSON object")
    raw = decode_json(raw, _WHERE)
    if not isinstance(raw, Mapping):
        raise ModelSpecError(f"{_WHERE} must be a JSON object, not {_type_name(raw)}")
    return dict(raw)


def refuse_unknown(obj: Mapping[str, Any], known: tuple[str, ...], where: str,
                   error: type[ModelSpecError] = ModelSpecError, *, show_key: bool = True) -> None:
    """Raise ``error`` naming the first key of ``obj`` not in ``known`` (with the closest known key).

    ``show_key=False`` (credentials): the key is not quoted, since a secret pasted in the wrong place
    may be that key.
    """
    for key in obj:
        if key in known:
            continue
        if not isinstance(key, str):
            raise error(f"{where}: keys must be strings" + (f", not {key!r}" if show_key else ""))
        hint = _closest(key, known)
        name = f"unknown key {key!r}" if show_key else "an unknown key (not shown: it may be a secret)"
        raise error(
            f"{where}: {name}" + (f" (did you mean {hint!r}?)" if hint else "")
            + f"; known keys: {', '.join(known)}")


def _closest(key: str, known: tuple[str, ...]) -> str | None:
    lowered = {k.lower(): k for k in known}
    if key.lower() in lowered:
        return lowered[key.lower()]
    squashed = key.lower().replace("_", "").replace("-", "")
    for k in known:
        if k.lower().replace("_", "") == squashed:
            return k
    match = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _opt_str(obj: Mapping[str, Any], key: str, where: str = _WHERE) -> str | None:
    if key not in obj or obj[key] is None:
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise ModelSpecError(f"{where}.{key} must be a string, not {_type_name(value)}")
    if not value.strip():
        raise ModelSpecError(f"{where}.{key} must not be empty")
    return value.strip()


def _opt_bool(obj: Mapping[str, Any], key: str, where: str = _WHERE) -> bool | None:
    if key not in obj or obj[key] is None:
        return None
    value = obj[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ModelSpecError(f"{where}.{key} must be true or false, not {value!r}")


def _opt_int(obj: Mapping[str, Any], key: str, *, minimum: int) -> int | None:
    if key not in obj or obj[key] is None:
        return None
    value = obj[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelSpecError(f"{_WHERE}.{key} must be a whole number, not {value!r}")
    if value < minimum:
        raise ModelSpecError(f"{_WHERE}.{key} must be at least {minimum}, not {value}")
    return value


def _opt_triple(obj: Mapping[str, Any], key: str, *, positive: bool) -> tuple[float, float, float] | None:
    if key not in obj or obj[key] is None:
        return None
    value = obj[key]
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ModelSpecError(f"{_WHERE}.{key} must be a list of 3 numbers (R, G, B), not {value!r}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise ModelSpecError(f"{_WHERE}.{key} must hold 3 finite numbers, not {value!r}")
        if positive and item <= 0:
            raise ModelSpecError(f"{_WHERE}.{key} values must be greater than 0, not {value!r}")
        out.append(float(item))
    return (out[0], out[1], out[2])


def _parse_type(props: Mapping[str, Any]) -> str:
    raw = props.get("type")
    if raw is None:
        raise ModelSpecError(f"{_WHERE}.type is required: one of {', '.join(MODEL_TYPES)} (or hf)")
    if not isinstance(raw, str):
        raise ModelSpecError(f"{_WHERE}.type must be a string, not {_type_name(raw)}")
    key = raw.strip().lower().replace("-", "_").replace(" ", "_")
    if key in _TYPE_ALIASES:
        return _TYPE_ALIASES[key]
    raise ModelSpecError(
        f"{_WHERE}.type {raw!r} is not supported: use one of {', '.join(MODEL_TYPES)} (or hf)")


def _parse_precision(props: Mapping[str, Any]) -> str | None:
    raw = props.get("precision")
    if raw is None:
        return None
    if not isinstance(raw, str) or raw.strip().lower() not in _PRECISIONS:
        raise ModelSpecError(f"{_WHERE}.precision must be fp32, fp16 or bf16, not {raw!r}")
    return _PRECISIONS[raw.strip().lower()]


def _parse_preprocessor(props: Mapping[str, Any]) -> str | None:
    raw = props.get("imagePreprocessor")
    if raw is None:
        return None
    if isinstance(raw, str):
        for canonical in IMAGE_PREPROCESSORS:
            if raw.strip().lower() == canonical.lower():
                return canonical
    raise ModelSpecError(
        f"{_WHERE}.imagePreprocessor must be one of {', '.join(IMAGE_PREPROCESSORS)}, not {raw!r}")


def _parse_sha256(props: Mapping[str, Any]) -> str | None:
    raw = props.get("sha256")
    if raw is None:
        return None
    if not isinstance(raw, str) or not _SHA256_RE.match(raw.strip()):
        raise ModelSpecError(f"{_WHERE}.sha256 must be 64 hexadecimal characters, not {raw!r}")
    return raw.strip().lower()


def _parse_max_tokens(props: Mapping[str, Any]) -> int | None:
    tokens = _opt_int(props, "tokens", minimum=1)
    max_tokens = _opt_int(props, "maxTextTokens", minimum=1)
    if tokens is not None and max_tokens is not None and tokens != max_tokens:
        raise ModelSpecError(
            f"{_WHERE}: tokens ({tokens}) contradicts maxTextTokens ({max_tokens}); give one")
    return max_tokens if max_tokens is not None else tokens


def _parse_location(raw: Any) -> tuple[S3Location | None, HfLocation | None, bool | None]:
    where = f"{_WHERE}.modelLocation"
    if not isinstance(raw, Mapping):
        raise ModelSpecError(f"{where} must be an object like {{\"s3\": {{...}}}} or {{\"hf\": {{...}}}}, "
                             f"not {_type_name(raw)}")
    raw = camel_case(raw, where)
    refuse_unknown(raw, _LOCATION_KEYS, where)
    auth = _opt_bool(raw, "authRequired", where)
    if "s3" in raw and "hf" in raw:
        raise ModelSpecError(f"{where}: give only one of s3 and hf, not both")
    if "s3" in raw:
        s3 = raw["s3"]
        sw = f"{where}.s3"
        if not isinstance(s3, Mapping):
            raise ModelSpecError(
                f"{sw} must be an object {{\"Bucket\": ..., \"Key\": ...}}, not {_type_name(s3)}")
        refuse_unknown(s3, _S3_KEYS, sw)
        bucket, key = _opt_str(s3, "Bucket", sw), _opt_str(s3, "Key", sw)
        if bucket is None or key is None:
            raise ModelSpecError(f"{sw}.{'Bucket' if bucket is None else 'Key'} is required")
        return S3Location(bucket=bucket, key=key.lstrip("/")), None, auth
    if "hf" in raw:
        hf = raw["hf"]
        hw = f"{where}.hf"
        if not isinstance(hf, Mapping):
            raise ModelSpecError(f"{hw} must be an object {{\"repoId\": ..., \"filename\": ...}}, "
                                 f"not {_type_name(hf)}")
        hf = camel_case(hf, hw)
        refuse_unknown(hf, _HF_KEYS, hw)
        repo_id = _opt_str(hf, "repoId", hw)
        if repo_id is None:
            raise ModelSpecError(f"{hw}.repoId is required (e.g. \"ORG/NAME\")")
        if repo_id.count("/") > 1 or repo_id.startswith("/") or repo_id.endswith("/"):
            raise ModelSpecError(f"{hw}.repoId must look like ORG/NAME, not {repo_id!r}")
        return None, HfLocation(repo_id=repo_id, filename=_opt_str(hf, "filename", hw)), auth
    raise ModelSpecError(f"{where} must name s3 or hf")


def _default_name(
    url: str | None, localpath: str | None, s3: S3Location | None, hf: HfLocation | None
) -> str:
    if hf is not None:
        return hf.repo_id
    if s3 is not None:
        return PurePosixPath(s3.key).name or s3.bucket
    if url is not None:
        return PurePosixPath(urlsplit(url).path).name or urlsplit(url).netloc
    return PurePosixPath(str(localpath).rstrip("/")).name or str(localpath)
