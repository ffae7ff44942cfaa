"""A dataset's query over an HTTP API (the `oauth2` and `api_key` connectors):
``"<path-or-url> [| <dotted.json.path>]"`` is parsed (`parse_query`), resolved against the
connection's API base URL, refusing any other origin (`resolve_url`), and the records at
the dotted path of the JSON answer become columns and rows (`records_to_result`). A query
that cannot be answered as written is `Unreachable("invalid_query")`. The format in full:
docs/connectors.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from connectors.base import FetchResult, Unreachable
from connectors.http import where
from connectors.outcomes import INVALID_QUERY


def parse_query(query: str) -> tuple[str, list[str]]:
    """``"<path-or-url> [| <dotted.json.path>]"`` -> (path-or-url, path segments)."""
    target, sep, dotted = query.partition("|")
    target = target.strip()
    if not target:
        raise Unreachable(INVALID_QUERY, "the query names no path; write e.g. '/api/items | data'")
    segments: list[str] = []
    if sep:
        dotted = dotted.strip()
        segments = dotted.split(".") if dotted else []
        if any(not s.strip() for s in segments) or "|" in dotted:
            raise Unreachable(
                INVALID_QUERY, f"the records path {dotted[:80]!r} is not a dotted path like a.b.c"
            )
        segments = [s.strip() for s in segments]
    return target, segments


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def resolve_url(base_url: str | None, target: str) -> str:
    """The URL a dataset path means, relative to `base_url`; other origins are refused."""
    try:
        absolute = bool(urlsplit(target).scheme)
        if absolute:
            if not base_url or _origin(target) != _origin(base_url):
                raise Unreachable(
                    INVALID_QUERY,
                    f"the query's URL is not on the connection's API host "
                    f"({where(base_url) if base_url else 'none configured'}); the "
                    "credentials are only sent there",
                )
            return target
    except ValueError:
        raise Unreachable(INVALID_QUERY, "the query's URL cannot be parsed") from None
    if not base_url:
        raise Unreachable(
            INVALID_QUERY, "the connection has no API base URL to resolve the query's path against"
        )
    return base_url.rstrip("/") + "/" + target.lstrip("/")


def _walk(body: Any, segments: list[str]) -> Any:
    value = body
    for depth, segment in enumerate(segments):
        here = ".".join(segments[:depth]) or "the body"
        if isinstance(value, Mapping):
            if segment not in value:
                keys = ", ".join(sorted(str(k) for k in value)[:10])
                raise Unreachable(
                    INVALID_QUERY, f"no {segment!r} in {here} of the answer (keys: {keys})"
                )
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit():
            index = int(segment)
            if index >= len(value):
                raise Unreachable(INVALID_QUERY, f"{here} has no item {index}")
            value = value[index]
        else:
            raise Unreachable(
                INVALID_QUERY, f"cannot take {segment!r} of {here}: it is a {type(value).__name__}"
            )
    return value


def records_to_result(body: Any, segments: list[str]) -> FetchResult:
    """Columns (union of keys, first-seen order) and rows from a JSON body."""
    value = _walk(body, segments)
    if value is None:
        items: list[Any] = []
    elif isinstance(value, list):
        items = value
    else:
        items = [value]
    records = [item if isinstance(item, Mapping) else {"value": item} for item in items]
    columns: dict[str, None] = {}
    for record in records:
        for key in record:
            columns.setdefault(str(key), None)
    names = list(columns)
    rows = [tuple(record.get(name) for name in names) for record in records]
    return FetchResult(names, rows)
