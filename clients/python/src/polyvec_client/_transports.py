"""Which transport a gateway URL takes: http(s):// over httpx, grpc(s):// over grpcio (the ``grpc`` extra)."""

from __future__ import annotations

from typing import Any


def _grpc_module() -> Any:
    try:
        from polyvec_client import _grpc
    except ImportError as exc:
        raise ImportError(f"a grpc:// gateway needs the grpc extra ({exc.name or exc} is missing): "
                          "pip install 'polyvec-client[grpc]'") from exc
    return _grpc


def is_grpc(url: str) -> bool:
    return url.lower().startswith(("grpc://", "grpcs://"))


def sync_transport(url: str, api_key: str | None, timeout: float, http_transport: Any = None) -> Any:
    """The blocking transport for ``url`` (``http_transport``: an httpx transport, for HTTP only)."""
    if is_grpc(url):
        return _grpc_module().SyncGRPC(url, api_key=api_key, timeout=timeout)
    from polyvec_client._http import SyncHTTP

    return SyncHTTP(url, api_key=api_key, timeout=timeout, transport=http_transport)


def async_transport(url: str, api_key: str | None, timeout: float, http_transport: Any = None) -> Any:
    """The asyncio transport for ``url``."""
    if is_grpc(url):
        return _grpc_module().AsyncGRPC(url, api_key=api_key, timeout=timeout)
    from polyvec_client._http import AsyncHTTP

    return AsyncHTTP(url, api_key=api_key, timeout=timeout, transport=http_transport)
