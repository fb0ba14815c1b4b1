"""Fetch a model's files: ``localpath``, ``url``, ``modelLocation`` S3 or Hugging Face.

:func:`resolve_artifact` returns the local path of the model file or folder (``None`` when the
spec names no location: the model library then resolves ``name`` itself). Downloads land in
``cache_dir`` once (temp file, then an atomic rename), log their progress, and are verified
against ``sha256`` (and ``content_size``, an OpenSearch body's ``model_content_size_in_bytes``)
before use, on cache hits too. Archives are extracted safely, once.

:func:`apply_published_config` completes the spec of one of OpenSearch's pretrained models from
the ``config.json`` published next to its zip (hash, size, model_config) before the zip is fetched.

Cache layout under ``cache_dir``::

    url/<hash of URL>/<file name>           downloads from url
    s3/<hash of endpoint+bucket+key>/<file> downloads from S3
    hf/                                     Hugging Face hub cache (unless HF_HOME/HF_HUB_CACHE is set)
    extracted/<hash>/                       archives given as localpath or from the hub
    <download>.extracted/                   archives downloaded from url or S3, next to the download
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from .archives import ArchiveError, is_archive, safe_extract
from .auth import ModelAuth
from .model_spec import HfLocation, ModelSpec, S3Location

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class ArtifactError(Exception):
    """A model file could not be found, fetched, verified or extracted; the message says which."""


def resolve_artifact(spec: ModelSpec, auth: ModelAuth | None, cache_dir: str | Path) -> Path | None:
    """Local path of the model file or folder named by ``spec``, fetching it into ``cache_dir`` if needed."""
    cache = Path(cache_dir).expanduser()
    if spec.localpath:
        path = _from_localpath(spec)
        return _maybe_extract(path, cache / "extracted" / _local_key(path, spec.sha256))
    if spec.url:
        path = _from_url(spec.url, spec.sha256, cache, spec.content_size)
    elif spec.s3 is not None:
        path = _from_s3(spec.s3, spec.sha256, spec.auth_required, auth, cache, spec.content_size)
    elif spec.hf is not None:
        path = _from_hf(spec.hf, spec.sha256, spec.auth_required, auth, cache, spec.content_size)
        if path.is_file():
            return _maybe_extract(path, cache / "extracted" / _local_key(path, spec.sha256))
        return path
    else:
        return None
    return _maybe_extract(path, path.with_name(path.name + ".extracted"))


# --- sha256 ------------------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _mismatch(label: str, expected: str, actual: str) -> ArtifactError:
    return ArtifactError(
        f"sha256 mismatch for {label}: expected {expected}, got {actual}; refusing to load it")


def _size_mismatch(label: str, expected: int, actual: int) -> ArtifactError:
    return ArtifactError(
        f"size mismatch for {label}: expected {expected} bytes (model_content_size_in_bytes), got {actual}; "
        "refusing to load it")


def _verify(path: Path, expected: str | None, label: str,
            discard: Callable[[Path], None] | None = None, size: int | None = None) -> None:
    """Check ``path`` against ``size`` and ``expected``; on a mismatch ``discard(path)`` (if given), raise."""
    if size is not None and path.is_file() and path.stat().st_size != size:
        actual_size = path.stat().st_size
        if discard is not None:
            discard(path)
        raise _size_mismatch(label, size, actual_size)
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected:
        if discard is not None:
            discard(path)
        raise _mismatch(label, expected, actual)
    log.info("sha256 verified for %s", label)


# --- localpath ---------------------------------------------------------------------------------

def _from_localpath(spec: ModelSpec) -> Path:
    path = Path(os.path.expandvars(str(spec.localpath))).expanduser().absolute()
    if not path.exists():
        raise ArtifactError(f"localpath {spec.localpath} does not exist")
    if path.is_dir():
        if spec.sha256 or spec.content_size:
            raise ArtifactError(
                f"sha256 / size was given but localpath {spec.localpath} is a folder; "
                "they check a single file or archive")
        return path
    if not os.access(path, os.R_OK):
        raise ArtifactError(f"localpath {spec.localpath} is not readable")
    _verify(path, spec.sha256, f"localpath {path}", size=spec.content_size)
    return path


def _local_key(path: Path, sha256: str | None) -> str:
    st = path.stat()
    ident = sha256 or f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


def _maybe_extract(path: Path, target: Path) -> Path:
    if not (path.is_file() and is_archive(path)):
        return path
    try:
        if target.is_dir():
            log.info("using archive %s already extracted in %s", path.name, target)
        else:
            log.info("extracting %s into %s", path, target)
        return safe_extract(path, target)
    except ArchiveError as exc:
        raise ArtifactError(str(exc)) from None


# --- downloads into the cache -------------------------------------------------------------------

class _Progress:
    """Logs bytes received every ~10% (or every few seconds when the size is unknown)."""

    def __init__(self, label: str, total: int | None, every_s: float = 5.0) -> None:
        self.label, self.total, self.every_s = label, total, every_s
        self.done = 0
        self.start = self.last_log = time.monotonic()
        self.next_pct = 10

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.total:
            pct = self.done * 100 // self.total
            if pct >= self.next_pct and self.done < self.total:
                self.next_pct = (pct // 10 + 1) * 10
                self._log(now, f"{pct}%")
                return
        if now - self.last_log >= self.every_s:
            self._log(now, f"{self.done * 100 // self.total}%" if self.total else "")

    def _log(self, now: float, pct: str) -> None:
        self.last_log = now
        total = f" of {_size(self.total)}" if self.total else ""
        log.info("downloading %s: %s%s %s", self.label, _size(self.done), total, pct)

    def finish(self) -> None:
        secs = max(time.monotonic() - self.start, 1e-6)
        log.info("downloaded %s: %s in %.1fs (%s/s)", self.label, _size(self.done), secs,
                 _size(int(self.done / secs)))


def _size(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _cached_download(
    dest: Path,
    expected: str | None,
    label: str,
    fetch: Callable[[IO[bytes], Callable[[bytes], None]], None],
    size: int | None = None,
) -> Path:
    """Return ``dest`` if it is cached (and verified), else fetch it through a temp file.

    ``fetch(out, sink)`` writes the bytes to ``out`` and hands every chunk to ``sink``
    (which hashes it and logs progress). ``size``: the expected byte count, checked before the hash.
    """
    if dest.is_file() and size is not None and dest.stat().st_size != size:
        log.warning("cached %s has %d bytes, expected %d: removing it and downloading again",
                    label, dest.stat().st_size, size)
        dest.unlink(missing_ok=True)
    if dest.is_file():
        if expected is None:
            log.info("using cached %s (%s)", label, dest)
            return dest
        actual = sha256_file(dest)
        if actual == expected:
            log.info("using cached %s (%s), sha256 verified", label, dest)
            return dest
        log.warning("cached %s has sha256 %s, expected %s: removing it and downloading again",
                    label, actual, expected)
        dest.unlink(missing_ok=True)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex[:8]}")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            fetch(out, digest.update)
            out.flush()
            os.fsync(out.fileno())
        if size is not None and tmp.stat().st_size != size:
            raise _size_mismatch(f"{label} (file {dest.name})", size, tmp.stat().st_size)
        if expected is not None and digest.hexdigest() != expected:
            raise _mismatch(f"{label} (file {dest.name})", expected, digest.hexdigest())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    if expected is not None:
        log.info("sha256 verified for %s", label)
    return dest


def _safe_filename(name: str, fallback: str = "download") -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name[:200] or fallback


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# --- url ---------------------------------------------------------------------------------------

def redact_url(url: str) -> str:
    """The URL without credentials or query string (signed URLs carry secrets there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _from_url(url: str, expected: str | None, cache: Path, size: int | None = None) -> Path:
    import httpx

    label = redact_url(url)
    filename = _safe_filename(PurePosixPath(urlsplit(url).path).name)
    dest = cache / "url" / _hash(url) / filename

    def fetch(out: IO[bytes], sink: Callable[[bytes], None]) -> None:
        log.info("downloading %s into %s", label, dest.parent)
        timeout = httpx.Timeout(30.0, read=120.0)
        try:
            with httpx.Client(follow_redirects=True, timeout=timeout) as client, \
                    client.stream("GET", url) as resp:
                if resp.status_code >= 400:
                    raise ArtifactError(
                        f"download of {label} failed: HTTP {resp.status_code} {resp.reason_phrase}")
                length = resp.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
                if resp.headers.get("content-encoding"):
                    total = None  # content-length counts the compressed bytes
                progress = _Progress(label, total)
                for chunk in resp.iter_bytes(CHUNK):
                    out.write(chunk)
                    sink(chunk)
                    progress(len(chunk))
                if total is not None and progress.done != total:
                    raise ArtifactError(
                        f"download of {label} was cut short: {progress.done} of {total} bytes")
                progress.finish()
        except httpx.HTTPError as exc:
            raise ArtifactError(f"download of {label} failed: {type(exc).__name__}: {exc}") from None

    return _cached_download(dest, expected, label, fetch, size)


# --- S3 ----------------------------------------------------------------------------------------

def _s3_endpoint(auth: ModelAuth | None) -> str | None:
    if auth is not None and auth.s3_endpoint_url:
        return auth.s3_endpoint_url
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _s3_client(auth_required: bool, auth: ModelAuth | None, label: str) -> Any:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    region = (auth.region if auth else None) or os.environ.get("AWS_REGION") \
        or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=30, read_timeout=120)
    if auth_required and auth is not None and auth.has_s3_keys:
        session = boto3.session.Session(
            aws_access_key_id=auth.aws_access_key_id,
            aws_secret_access_key=auth.aws_secret_access_key,
            aws_session_token=auth.aws_session_token,
            region_name=region,
        )
    else:
        session = boto3.session.Session(region_name=region)
        if session.get_credentials() is None:
            if auth_required:
                raise ArtifactError(
                    f"{label}: modelLocation.authRequired is true but MODEL_AUTH has no s3 "
                    "aws_access_key_id/aws_secret_access_key and no AWS credentials were found")
            config = config.merge(Config(signature_version=UNSIGNED))  # public bucket
    return session.client("s3", endpoint_url=_s3_endpoint(auth), config=config)


def _from_s3(loc: S3Location, expected: str | None, auth_required: bool, auth: ModelAuth | None,
             cache: Path, size: int | None = None) -> Path:
    from botocore.exceptions import BotoCoreError, ClientError

    label = f"s3://{loc.bucket}/{loc.key}"
    endpoint = _s3_endpoint(auth) or ""
    filename = _safe_filename(PurePosixPath(loc.key).name)
    dest = cache / "s3" / _hash(f"{endpoint}|{loc.bucket}|{loc.key}") / filename

    def fetch(out: IO[bytes], sink: Callable[[bytes], None]) -> None:
        client = _s3_client(auth_required, auth, label)
        log.info("downloading %s%s into %s", label, f" from {redact_url(endpoint)}" if endpoint else "",
                 dest.parent)
        try:
            resp = client.get_object(Bucket=loc.bucket, Key=loc.key)
            total = resp.get("ContentLength")
            progress = _Progress(label, total)
            body = resp["Body"]
            for chunk in _iter_body(body):
                out.write(chunk)
                sink(chunk)
                progress(len(chunk))
            progress.finish()
        except ClientError as exc:
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise ArtifactError(
                f"download of {label} failed: {err.get('Code', 'error')} (HTTP {status}): "
                f"{err.get('Message', '')}".rstrip(": ")) from None
        except BotoCoreError as exc:
            raise ArtifactError(f"download of {label} failed: {exc}") from None

    return _cached_download(dest, expected, label, fetch, size)


def _iter_body(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK)
    finally:
        body.close()


# --- Hugging Face hub --------------------------------------------------------------------------

def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _from_hf(loc: HfLocation, expected: str | None, auth_required: bool, auth: ModelAuth | None,
             cache: Path, size: int | None = None) -> Path:
    from huggingface_hub import constants, hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError

    label = f"hf://{loc.repo_id}" + (f"/{loc.filename}" if loc.filename else "")
    token: str | None = None
    if auth_required:
        token = auth.hf_token if auth is not None else None
        if token is None and not (os.environ.get("HF_TOKEN") or constants.HF_HUB_OFFLINE):
            log.warning("%s: authRequired but MODEL_AUTH has no hf token; trying the default HF login", label)
    # the user's own HF_HOME / HF_HUB_CACHE wins; otherwise the hub cache lives in MODEL_CACHE_DIR
    hub_cache = None if (os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME")) else cache / "hf"
    # the library reads HF_HUB_OFFLINE and HF_ENDPOINT once at import; read them again per call
    offline = constants.HF_HUB_OFFLINE or _env_true("HF_HUB_OFFLINE")
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    log.info("fetching %s from %s%s", label, endpoint or constants.ENDPOINT,
             " (offline: cache only)" if offline else "")
    kwargs: dict[str, Any] = {
        "cache_dir": hub_cache, "token": token, "local_files_only": offline, "endpoint": endpoint}
    try:
        if loc.filename:
            path = Path(hf_hub_download(loc.repo_id, loc.filename, **kwargs))
        else:
            path = Path(snapshot_download(loc.repo_id, **kwargs))
    except (HfHubHTTPError, EntryNotFoundError, HFValidationError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ArtifactError(f"download of {label} failed: {type(exc).__name__}: {first}") from None
    _verify(path, expected, f"{label} (file {path})", discard=_remove_hub_file, size=size)
    return path


def _remove_hub_file(path: Path) -> None:
    """Drop a bad file from the hub cache: the snapshot link and the blob it points to."""
    try:
        blob = path.resolve()
        path.unlink(missing_ok=True)
        if blob != path:
            blob.unlink(missing_ok=True)
    except OSError as exc:  # a read-only cache: the error above still refuses the file
        log.warning("could not remove %s from the hub cache: %s", path, exc)


# --- OpenSearch's published config.json ----------------------------------------------------------

def apply_published_config(spec: ModelSpec, cache_dir: str | Path) -> ModelSpec:
    """``spec`` completed from the ``config.json`` at ``spec.config_url`` (OpenSearch pretrained models).

    The config gives the zip's SHA-256 and size, which the zip is then verified against, and its
    ``model_config`` (pooling mode, normalisation, dimensions). Specs without ``config_url`` are
    returned unchanged.
    """
    if not spec.config_url:
        return spec
    import dataclasses

    from .model_spec import ModelSpecError
    from .opensearch_spec import parse_config_json

    path = _from_url(spec.config_url, None, Path(cache_dir).expanduser())
    label = f"{redact_url(spec.config_url)} (OpenSearch model config)"
    try:
        published = parse_config_json(path.read_bytes(), label)
    except ModelSpecError:
        path.unlink(missing_ok=True)  # fetch it again next time
        raise
    if published["function_name"] != spec.function_name:
        raise ArtifactError(
            f"{label} describes a {published['function_name']} model; {spec.name} is {spec.function_name}")
    config = published["config"]
    dims = config.get("dimensions")
    if spec.dimensions is not None and dims is not None and dims != spec.dimensions:
        raise ArtifactError(f"{label} says embedding_dimension {dims}; {spec.name} has {spec.dimensions}")
    log.info("%s: sha256 %s, %s bytes", label, published["sha256"], published["content_size"] or "?")
    return dataclasses.replace(
        spec, sha256=published["sha256"], content_size=published["content_size"],
        dimensions=dims or spec.dimensions,
        pooling_mode=config.get("pooling_mode", spec.pooling_mode),
        normalize=config.get("normalize", spec.normalize),
        max_text_tokens=config.get("max_text_tokens", spec.max_text_tokens),
        framework_type=config.get("framework_type", spec.framework_type),
        extra={**spec.extra, **{k: v for k, v in config.items()
                                 if k in ("model_type", "all_config", "additional_config")}},
        config_url=None,
    )
