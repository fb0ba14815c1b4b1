"""The gateway's service layer: collections, objects and search, shared by the HTTP and gRPC fronts."""

from gateway.service.core import GatewayService

__all__ = ["GatewayService"]
