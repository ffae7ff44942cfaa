"""The connector registry: every kind of source Relink can check, by type name."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from connectors.base import Connector


class UnknownConnector(LookupError):
    def __init__(self, type_: str) -> None:
        known = ", ".join(sorted(_REGISTRY))
        super().__init__(
            f"unknown connector type {type_!r}; known types: {known} (see `relink connectors list`)"
        )
        self.type = type_


_REGISTRY: dict[str, Connector] = {}


def register(connector: Connector) -> Connector:
    if connector.type in _REGISTRY:
        raise ValueError(f"connector type {connector.type!r} registered twice")
    _REGISTRY[connector.type] = connector
    return connector


def get(type_: str) -> Connector:
    _load()
    try:
        return _REGISTRY[type_]
    except KeyError:
        raise UnknownConnector(type_) from None


def all_connectors() -> Iterator[Connector]:
    _load()
    return iter(sorted(_REGISTRY.values(), key=lambda c: c.type))


_loaded = False
_loading = threading.Lock()


def _load() -> None:
    """Import the connector modules once; each registers its types.

    Thread-safe: the flag is set only after every module has registered, so a
    thread arriving meanwhile waits instead of seeing a half-filled registry.
    """
    global _loaded
    if _loaded:
        return
    with _loading:
        if _loaded:
            return
        from connectors import api_key, mysql, oauth2, postgres  # noqa: F401

        _loaded = True
