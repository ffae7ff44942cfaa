"""Connectors: one module per kind of source (`postgres`, `mysql`, `oauth2`, `api_key`)."""

from connectors.base import (
    AuthFailed,
    CheckContext,
    CheckError,
    CheckResult,
    ConnectionSpec,
    Connector,
    FetchResult,
    Field,
    Unreachable,
)
from connectors.registry import UnknownConnector, all_connectors, get

__all__ = [
    "AuthFailed",
    "CheckContext",
    "CheckError",
    "CheckResult",
    "ConnectionSpec",
    "Connector",
    "FetchResult",
    "Field",
    "UnknownConnector",
    "Unreachable",
    "all_connectors",
    "get",
]
