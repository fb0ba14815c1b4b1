"""Request paths and bodies of the gateway API, shared by the sync and async clients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from polyvec_client.models import SearchError, SearchResult

DEFAULT_PAGE = 500


def col(name: str, *rest: str) -> str:
    return "/".join([f"/v1/collections/{quote(name, safe='')}", *rest])


def obj(name: str, object_id: str) -> str:
    return col(name, "objects", quote(object_id, safe=""))


def definition(name_or_definition: str | dict[str, Any], **fields: Any) -> dict[str, Any]:
    if isinstance(name_or_definition, dict):
        return {**name_or_definition, **{k: v for k, v in fields.items() if v is not None}}
    return {"name": name_or_definition, **{k: v for k, v in fields.items() if v is not None}}


def scroll_body(filter: dict[str, Any] | None, limit: int, cursor: str | None,
                properties: Sequence[str] | None, with_vectors: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"limit": limit}
    if filter:
        body["filter"] = filter
    if cursor is not None:
        body["cursor"] = cursor
    if properties is not None:
        body["properties"] = list(properties)
    if with_vectors:
        body["with_vectors"] = True
    return body


def delete_body(filter: dict[str, Any] | None, ids: Sequence[str] | None, all: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if filter is not None:
        body["filter"] = filter
    if ids is not None:
        body["ids"] = [str(i) for i in ids]
    if all:
        body["all"] = True
    return body


def batch_results(answer: dict[str, Any]) -> list[SearchResult | SearchError]:
    out: list[SearchResult | SearchError] = []
    for r in answer["results"]:
        out.append(SearchError(r["error"], r.get("field")) if "error" in r else SearchResult.from_json(r))
    return out


def renumber(errors: list[SearchResult | SearchError], offset: int) -> list[SearchResult | SearchError]:
    """Field names of a batch sent in parts say ``searches.N`` of the whole batch."""
    if not offset:
        return errors
    out: list[SearchResult | SearchError] = []
    for r in errors:
        if isinstance(r, SearchError) and r.field and r.field.startswith("searches."):
            head, _, rest = r.field[len("searches."):].partition(".")
            if head.isdigit():
                field = f"searches.{int(head) + offset}" + (f".{rest}" if rest else "")
                r = SearchError(r.error.replace(r.field, field, 1), field)
        out.append(r)
    return out
