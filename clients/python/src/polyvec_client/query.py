"""Search request bodies, for ``col.search.batch([...])`` (and used by the single-search methods).

    from polyvec_client import query as q
    col.search.batch([q.near_text("red shoes", limit=3), q.bm25("leather", filter={"brand": "Oxley"})])
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ImageInput = str | Path | bytes | bytearray | Any  # a path, an http(s) URL, encoded bytes, or a PIL.Image


def _common(body: dict[str, Any], *, limit: int | None, offset: int | None, filter: dict[str, Any] | None,
            properties: Sequence[str] | None, vector: str | None) -> dict[str, Any]:
    if limit is not None:
        body["limit"] = limit
    if offset:
        body["offset"] = offset
    if filter is not None:
        body["filter"] = filter
    if properties is not None:
        body["properties"] = list(properties)
    if vector is not None:
        body["vector"] = vector
    return body


def near_text(query: str, *, limit: int | None = None, offset: int | None = None,
              filter: dict[str, Any] | None = None, properties: Sequence[str] | None = None,
              vector: str | None = None) -> dict[str, Any]:
    return _common({"near_text": {"query": query}}, limit=limit, offset=offset, filter=filter,
                   properties=properties, vector=vector)


def near_image(image: ImageInput, *, limit: int | None = None, offset: int | None = None,
               filter: dict[str, Any] | None = None, properties: Sequence[str] | None = None,
               vector: str | None = None) -> dict[str, Any]:
    return _common({"near_image": {"image": image_value(image)}}, limit=limit, offset=offset,
                   filter=filter, properties=properties, vector=vector)


def near_vector(vector_values: Sequence[float], *, limit: int | None = None, offset: int | None = None,
                filter: dict[str, Any] | None = None, properties: Sequence[str] | None = None,
                vector: str | None = None) -> dict[str, Any]:
    values = vector_values.tolist() if hasattr(vector_values, "tolist") else [float(v) for v in vector_values]
    return _common({"near_vector": {"vector": values}}, limit=limit, offset=offset, filter=filter,
                   properties=properties, vector=vector)


def bm25(query: str, *, limit: int | None = None, offset: int | None = None,
         filter: dict[str, Any] | None = None, properties: Sequence[str] | None = None) -> dict[str, Any]:
    return _common({"bm25": {"query": query}}, limit=limit, offset=offset, filter=filter,
                   properties=properties, vector=None)


def neural_sparse(query: str, *, sparse_vector: str | None = None, limit: int | None = None,
                  offset: int | None = None, filter: dict[str, Any] | None = None,
                  properties: Sequence[str] | None = None) -> dict[str, Any]:
    """Neural sparse search by a sparse vectorizer (``sparse_vector``; default the collection's first)."""
    inner: dict[str, Any] = {"query": query}
    if sparse_vector is not None:
        inner["vector"] = sparse_vector
    return _common({"neural_sparse": inner}, limit=limit, offset=offset, filter=filter,
                   properties=properties, vector=None)


def hybrid(query: str, *, alpha: float | None = None, weights: Mapping[str, float] | None = None,
           fusion: str = "rrf", limit: int | None = None, offset: int | None = None,
           filter: dict[str, Any] | None = None, properties: Sequence[str] | None = None,
           vector: str | None = None) -> dict[str, Any]:
    """Fused search: ``alpha`` weighs the dense vector against BM25 (default 0.5), or ``weights`` names
    two or three lists (a dense vectorizer, ``"bm25"``, a sparse vectorizer) with their weights."""
    inner: dict[str, Any] = {"query": query, "fusion": fusion}
    if weights is not None:
        inner["weights"] = dict(weights)
        if alpha is not None:
            inner["alpha"] = alpha  # the gateway refuses both, naming the field
    else:
        inner["alpha"] = 0.5 if alpha is None else alpha
    return _common({"hybrid": inner}, limit=limit, offset=offset, filter=filter, properties=properties,
                   vector=vector)


def image_value(image: ImageInput) -> str:
    """What the gateway takes for an image: an http(s) URL as is, anything else as base64.

    A ``str`` is a URL when it starts with http:// or https://, else a file path; ``bytes`` are the
    encoded image (JPEG, PNG, ...); a PIL.Image is encoded as PNG.
    """
    if isinstance(image, str) and image.startswith(("http://", "https://")):
        return image
    if isinstance(image, str | Path):
        data = Path(image).expanduser().read_bytes()
    elif isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
    elif hasattr(image, "save") and hasattr(image, "mode"):  # PIL.Image.Image
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
    else:
        raise TypeError(f"an image must be a path, an http(s) URL, bytes or a PIL.Image, "
                        f"not {type(image).__name__}")
    return base64.b64encode(data).decode()
