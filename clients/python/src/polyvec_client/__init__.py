"""polyvec-client: the Python client of the polyvec gateway.

    from polyvec_client import Client
    with Client("http://localhost:8000") as client:
        col = client.collection("products")
        report = col.insert_many(objects)            # streaming, batched, retried, with progress
        hits = col.search.hybrid("running shoes", alpha=0.7, limit=5).hits
        for obj in col.iterate({"brand": "Fleet"}):  # every object, over the gateway's cursor
            ...

:class:`AsyncClient` has the same surface for asyncio.
"""

from polyvec_client import query
from polyvec_client._importer import object_uuid
from polyvec_client._retry import RetryPolicy
from polyvec_client.aio import AsyncClient, AsyncCollection
from polyvec_client.client import Client, Collection, ImportInterrupted
from polyvec_client.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    PolyvecError,
    RateLimitedError,
    ServerError,
    TransportError,
    UnavailableError,
)
from polyvec_client.models import (
    CollectionInfo,
    Failure,
    Hit,
    ImportReport,
    Limits,
    Object,
    SearchError,
    SearchResult,
    Vectorizer,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncCollection",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "Collection",
    "CollectionInfo",
    "ConflictError",
    "Failure",
    "Hit",
    "ImportInterrupted",
    "ImportReport",
    "Limits",
    "NotFoundError",
    "Object",
    "PayloadTooLargeError",
    "PolyvecError",
    "RateLimitedError",
    "RetryPolicy",
    "SearchError",
    "SearchResult",
    "ServerError",
    "TransportError",
    "UnavailableError",
    "Vectorizer",
    "object_uuid",
    "query",
]
