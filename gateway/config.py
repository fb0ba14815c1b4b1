"""Gateway settings, read from the environment (``polyvec gateway`` flags mirror them).

Every variable here is listed in :data:`ENV_VARS`; deployment files are tested
against that list so they cannot set a variable the code does not read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.image_urls import ImageUrlPolicy
from services.env_settings import (
    SettingsError,
    check_port,
    env_vars,
    parse_bool,
    parse_float,
    parse_int,
    parse_port,
    read_env,
)
from services.env_settings import env_name as _env_name
from services.tracing import ENV_VARS as TRACING_ENV_VARS

__all__ = ["ENV_VARS", "GatewaySettings", "SettingsError", "default_data_dir", "env_name", "parse_models"]


def default_data_dir() -> str:
    """``$XDG_DATA_HOME/polyvec`` (``~/.local/share/polyvec``) when a home exists, else ``./polyvec-data``."""
    base = os.environ.get("XDG_DATA_HOME")
    if base:
        return str(Path(base) / "polyvec")
    home = Path.home()
    if str(home) not in ("", "/") and home.exists():
        return str(home / ".local" / "share" / "polyvec")
    return "./polyvec-data"


@dataclass
class GatewaySettings:
    # storage: QDRANT_URL selects a Qdrant server/cluster, otherwise the embedded store under DATA_DIR
    qdrant_url: str | None = field(default=None, metadata={"env": "QDRANT_URL"})
    qdrant_api_key: str | None = field(default=None, metadata={"env": "QDRANT_API_KEY"})
    qdrant_https: bool | None = field(default=None, metadata={"env": "QDRANT_HTTPS"})
    qdrant_tls_ca: str | None = field(default=None, metadata={"env": "QDRANT_TLS_CA"})
    data_dir: str = field(default_factory=default_data_dir, metadata={"env": "DATA_DIR"})
    # network
    host: str = field(default="0.0.0.0", metadata={"env": "HOST"})
    http_port: int | None = field(default=8000, metadata={"env": "HTTP_PORT"})  # None: HTTP off
    grpc_port: int | None = field(default=50050, metadata={"env": "GRPC_PORT"})  # None: gRPC off
    # models: name -> gRPC address of its inference service
    models: dict[str, str] = field(default_factory=dict, metadata={"env": "MODELS"})
    # inference services a collection may name directly by inference_url (see gateway.inference_urls)
    inference_url_hosts: tuple[str, ...] = field(default=(), metadata={"env": "INFERENCE_URL_HOSTS"})
    # security
    api_keys: tuple[str, ...] = field(default=(), metadata={"env": "API_KEYS"})
    # image URLs in objects and near_image queries (see gateway.image_urls)
    image_urls: bool = field(default=True, metadata={"env": "IMAGE_URLS"})
    image_url_hosts: tuple[str, ...] = field(default=(), metadata={"env": "IMAGE_URL_HOSTS"})
    image_url_allow_private: bool = field(default=False, metadata={"env": "IMAGE_URL_ALLOW_PRIVATE"})
    image_url_max_bytes: int = field(default=20 * 1024 * 1024, metadata={"env": "IMAGE_URL_MAX_BYTES"})
    image_url_timeout_s: float = field(default=10.0, metadata={"env": "IMAGE_URL_TIMEOUT_S"})
    image_url_trust_env: bool = field(default=False, metadata={"env": "IMAGE_URL_TRUST_ENV"})
    image_url_concurrency: int = field(default=8, metadata={"env": "IMAGE_URL_CONCURRENCY"})
    # how long a gateway may reuse a collection definition it read (0: read it on every request)
    definition_cache_s: float = field(default=2.0, metadata={"env": "DEFINITION_CACHE_S"})
    # inference calls
    inference_timeout_s: float = field(default=30.0, metadata={"env": "INFERENCE_TIMEOUT_S"})
    inference_concurrency: int = field(default=4, metadata={"env": "INFERENCE_CONCURRENCY"})
    # requests that may wait for one inference service beyond those with a call in flight (then 429)
    inference_max_waiting: int = field(default=64, metadata={"env": "INFERENCE_MAX_WAITING"})
    # the longest a search query waits for a call slot before it is shed with 429 (0: no deadline)
    inference_query_max_wait_s: float = field(default=10.0, metadata={"env": "INFERENCE_QUERY_MAX_WAIT_S"})
    # how long a call refused with RESOURCE_EXHAUSTED / UNAVAILABLE is retried: imports and object
    # writes, and search queries (which a person is usually waiting for)
    inference_retry_budget_s: float = field(default=30.0, metadata={"env": "INFERENCE_RETRY_BUDGET_S"})
    inference_query_retry_budget_s: float = field(default=2.0,
                                                  metadata={"env": "INFERENCE_QUERY_RETRY_BUDGET_S"})
    inference_batch_size: int = field(default=64, metadata={"env": "INFERENCE_BATCH_SIZE"})
    # import / requests
    import_batch_size: int = field(default=1000, metadata={"env": "IMPORT_BATCH_SIZE"})
    max_page_size: int = field(default=1000, metadata={"env": "MAX_PAGE_SIZE"})
    search_batch_size: int = field(default=64, metadata={"env": "SEARCH_BATCH_SIZE"})
    max_request_bytes: int = field(default=64 * 1024 * 1024, metadata={"env": "MAX_REQUEST_BYTES"})
    # deepest nesting of a JSON body (HTTP) or of a Struct (gRPC), and of a search filter
    max_json_depth: int = field(default=64, metadata={"env": "MAX_JSON_DEPTH"})
    filter_max_depth: int = field(default=32, metadata={"env": "FILTER_MAX_DEPTH"})
    # POST /v1/collections/{name}/evaluate (the search page's Evaluate tab): most searches per request
    eval_max_searches: int = field(default=10_000, metadata={"env": "EVAL_MAX_SEARCHES"})
    log_level: str = field(default="INFO", metadata={"env": "LOG_LEVEL"})
    # shutdown: on SIGTERM/SIGINT new requests are refused and those in flight get this long to finish
    drain_timeout_s: float = field(default=30.0, metadata={"env": "DRAIN_TIMEOUT_S"})

    def validate(self) -> GatewaySettings:
        for name in ("inference_concurrency", "inference_batch_size", "import_batch_size",
                     "max_page_size", "search_batch_size", "max_request_bytes", "max_json_depth",
                     "filter_max_depth", "eval_max_searches", "image_url_concurrency"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{env_name(name)} must be at least 1, not {getattr(self, name)}")
        if self.inference_max_waiting < 0:
            raise SettingsError(f"INFERENCE_MAX_WAITING must be >= 0, not {self.inference_max_waiting}")
        for name in ("inference_retry_budget_s", "inference_query_retry_budget_s",
                     "inference_query_max_wait_s"):
            if not getattr(self, name) >= 0:
                raise SettingsError(f"{env_name(name)} must be >= 0 seconds, not {getattr(self, name)}")
        if self.image_url_max_bytes < 1:
            raise SettingsError(f"IMAGE_URL_MAX_BYTES must be at least 1, not {self.image_url_max_bytes}")
        if not self.image_url_timeout_s > 0:
            raise SettingsError(f"IMAGE_URL_TIMEOUT_S must be > 0, not {self.image_url_timeout_s}")
        if not self.definition_cache_s >= 0:
            raise SettingsError(f"DEFINITION_CACHE_S must be >= 0, not {self.definition_cache_s}")
        if not self.drain_timeout_s >= 0:
            raise SettingsError(f"DRAIN_TIMEOUT_S must be >= 0, not {self.drain_timeout_s}")
        if not self.inference_timeout_s > 0:
            raise SettingsError(f"INFERENCE_TIMEOUT_S must be > 0, not {self.inference_timeout_s}")
        for name in ("http_port", "grpc_port"):
            check_port(env_name(name), getattr(self, name))
        if self.http_port is None and self.grpc_port is None:
            raise SettingsError("HTTP_PORT and GRPC_PORT are both off: nothing to serve")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise SettingsError("LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, "
                                f"not {self.log_level!r}")
        self.log_level = self.log_level.upper()
        if self.qdrant_url and not self.qdrant_url.startswith(("http://", "https://")):
            raise SettingsError(f"QDRANT_URL must start with http:// or https://, not {self.qdrant_url!r}")
        return self

    def image_url_policy(self) -> ImageUrlPolicy:
        return ImageUrlPolicy(enabled=self.image_urls, allowed_hosts=self.image_url_hosts,
                              allow_private=self.image_url_allow_private,
                              max_bytes=self.image_url_max_bytes, timeout_s=self.image_url_timeout_s,
                              trust_env=self.image_url_trust_env, concurrency=self.image_url_concurrency)

    @property
    def embedded(self) -> bool:
        """True when the embedded store (qdrant-edge under DATA_DIR) is used."""
        return not self.qdrant_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 file_values: Mapping[str, str] | None = None, **overrides) -> GatewaySettings:
        """Read every setting: ``overrides`` (flags, not None) > ``environ`` (default: os.environ) >
        ``file_values`` (a config file, see services.env_settings.read_settings_file) > defaults."""
        return cls(**read_env(cls, _parse, environ, overrides, file_values)).validate()


def env_name(attr: str) -> str:
    return _env_name(GatewaySettings, attr)


_INTS = {"inference_concurrency", "inference_max_waiting", "inference_batch_size", "import_batch_size",
         "max_page_size", "search_batch_size", "max_request_bytes", "image_url_max_bytes", "max_json_depth",
         "filter_max_depth", "eval_max_searches", "image_url_concurrency"}
_PORTS = {"http_port", "grpc_port"}


def _parse(attr: str, env: str, raw: str):
    if attr in ("qdrant_https", "image_urls", "image_url_allow_private", "image_url_trust_env"):
        return parse_bool(env, raw)
    if attr in _PORTS:
        return parse_port(env, raw)
    if attr in _INTS:
        return parse_int(env, raw)
    if attr in ("inference_timeout_s", "definition_cache_s", "image_url_timeout_s", "drain_timeout_s",
                "inference_retry_budget_s", "inference_query_retry_budget_s", "inference_query_max_wait_s"):
        return parse_float(env, raw, "seconds")
    if attr == "models":
        return parse_models(raw, env)
    if attr in ("api_keys", "image_url_hosts", "inference_url_hosts"):
        return tuple(k.strip() for k in raw.split(",") if k.strip())
    return raw


def parse_models(raw: str, env: str = "MODELS") -> dict[str, str]:
    """``"name=host:port,name2=host:port"`` -> ``{name: address}``."""
    models: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, address = item.partition("=")
        name, address = name.strip(), address.strip()
        if not sep or not name or not address:
            raise SettingsError(f"{env} entries must look like name=host:port, not {item!r}")
        if name in models:
            raise SettingsError(f"{env} names model {name!r} twice")
        models[name] = address
    return models


#: Every environment variable the gateway reads.
ENV_VARS: tuple[str, ...] = env_vars(GatewaySettings) + ("XDG_DATA_HOME",) + TRACING_ENV_VARS + (
    # read by the image URL client only with IMAGE_URL_TRUST_ENV=1
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR")
