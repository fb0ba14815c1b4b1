"""The one logging setup of the polyvec servers: a level, a format, and no secret in any line.

:func:`setup_logging` (called by ``polyvec inference``, ``polyvec gateway`` and ``polyvec up``)

* sends records at ``LOG_LEVEL`` and above to stderr in one format;
* keeps the chatty third-party loggers (botocore, urllib3, httpx, grpc, ...) at INFO or above even
  when LOG_LEVEL is DEBUG: at DEBUG they print request headers, signed URLs and bodies;
* redacts every record before any handler sees it (a log record factory, so handlers added later,
  a test's capture included, get the redacted record too): the secrets the server was configured
  with (:func:`add_secrets`), and anything shaped like a credential whatever its source: the
  ``user:password@`` of a URL, AWS access key ids, SigV4 ``Credential=``/``Signature=``, security
  tokens, signed-URL query parameters, ``Authorization``/``api-key`` header values, bearer tokens
  and Hugging Face tokens. Tracebacks attached to a record are redacted the same way.

:func:`redact` applies the same rules to any text, for errors printed without logging (startup
errors) and for messages sent back to clients.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from urllib.parse import quote

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter configured values are not masked in every line (they are not secrets)

#: Loggers that print credentials, headers or bodies at DEBUG: never below INFO.
QUIET_LOGGERS = (
    "botocore", "boto3", "s3transfer", "urllib3", "httpx", "httpcore", "hpack", "h11", "h2",
    "grpc", "asyncio", "filelock", "fsspec", "huggingface_hub", "transformers", "sentence_transformers",
    "open_clip", "PIL", "multipart", "python_multipart", "qdrant_client", "uvicorn.access",
)

_CREDENTIAL_NAMES = (
    "x-amz-security-token", "x-amz-session-token", "aws_session_token", "aws_secret_access_key",
    "x-api-key", "api-key", "api_key", "apikey", "authorization", "proxy-authorization", "cookie",
    "set-cookie", "token", "access_token", "hf_token", "password", "passwd",
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # user:password@ (or a bare token@) in any URL
    (re.compile(r"(?<=://)[^/\s@'\"<>]+@"), MASK + "@"),
    # AWS SigV4: the Authorization header and presigned-URL parameters
    (re.compile(r"((?:X-Amz-)?Credential=)(?!\*\*\*)[^,\s'\"&]+", re.IGNORECASE), r"\1" + MASK),
    (re.compile(r"((?:X-Amz-)?Signature=)(?!\*\*\*)[^,\s'\"&]+", re.IGNORECASE), r"\1" + MASK),
    # "name: value", "name=value", "'name': b'value'" of credential headers and parameters
    (re.compile(r"((?<![\w-])(?:" + "|".join(re.escape(n) for n in _CREDENTIAL_NAMES)
                + r")['\"]?\s*[:=]\s*(?:b(?=['\"]))?['\"]?)(?!\*\*\*)(?:(?:Bearer|Basic|Token)\s+)?"
                r"[^'\",;\s&}]+",
                re.IGNORECASE), r"\1" + MASK),
    # bearer/basic credentials anywhere
    (re.compile(r"\b(Bearer|Basic)\s+(?!\*\*\*)[A-Za-z0-9._~+/=-]{4,}"), r"\1 " + MASK),
    # key ids and tokens recognisable by their shape
    (re.compile(r"\b(AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b"), r"\1" + MASK),
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}\b"), "hf_" + MASK),
)

#: Environment variables whose values are secrets wherever they are set (the libraries read them).
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN",
              "HUGGING_FACE_HUB_TOKEN", "API_KEYS", "QDRANT_API_KEY", "OTEL_EXPORTER_OTLP_HEADERS",
              "OTEL_EXPORTER_OTLP_TRACES_HEADERS")

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def add_secrets(values: Iterable[str | None]) -> None:
    """Mask these values (and their URL-encoded forms) in every log record and in :func:`redact`."""
    global _secrets
    found = set(_secrets)
    for value in values:
        if not isinstance(value, str) or len(value.strip()) < MIN_SECRET_LENGTH:
            continue
        value = value.strip()
        found.update({value, quote(value, safe=""), quote(value, safe="/")})
    with _lock:
        _secrets = tuple(sorted(found, key=len, reverse=True))  # longest first: no partial masks


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of :data:`SECRET_ENV` (API_KEYS split at its commas, OTLP headers' values too)."""
    environ = os.environ if environ is None else environ
    values: list[str] = []
    for name in SECRET_ENV:
        raw = environ.get(name) or ""
        if name == "API_KEYS":
            values += [part.strip() for part in raw.split(",")]
        elif name.endswith("_HEADERS"):  # k1=v1,k2=v2: each value is a credential
            values += [raw, *(part.partition("=")[2].strip() for part in raw.split(","))]
        else:
            values.append(raw)
    return [v for v in values if v]


def clear_secrets() -> None:
    """Forget the configured secrets (tests)."""
    global _secrets
    with _lock:
        _secrets = ()


def redact(text: str) -> str:
    """``text`` with configured secrets and credential-shaped parts masked."""
    if not text:
        return text
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a malformed call (args not matching the format): leave it to the handler
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def install_redaction() -> None:
    """Redact every log record of this process when it is made (idempotent)."""
    with _lock:
        make_record = logging.getLogRecordFactory()
        if getattr(make_record, "polyvec_redacting", False):
            return

        def factory(*args, **kwargs) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            _redact_record(record)
            return record

        factory.polyvec_redacting = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(factory)


def parse_level(level: str, env: str = "LOG_LEVEL") -> int:
    """The numeric level of a LOG_LEVEL value; ValueError naming ``env`` otherwise."""
    numeric = logging.getLevelName(str(level).strip().upper())
    if not isinstance(numeric, int) or str(level).strip().upper() not in LEVELS:
        raise ValueError(f"{env} must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {level!r}")
    return numeric


def setup_logging(level: str, secrets: Iterable[str | None] = ()) -> None:
    """Root logging at ``level`` to stderr, third-party loggers kept off DEBUG, every record redacted
    (``secrets`` and the values of :data:`SECRET_ENV` masked). ValueError for a bad ``level``."""
    numeric = parse_level(level)
    add_secrets([*secrets, *env_secrets()])
    install_redaction()
    logging.basicConfig(level=numeric, stream=sys.stderr, format=FORMAT, force=True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
