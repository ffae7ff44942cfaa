"""Connectors: one module per kind of source (`postgres`, `mysql`, `oauth2`, `api_key`)."""

from connectors.base import (
    AuthFailed,
    AuthKind,
    CheckContext,
    CheckError,
    CheckResult,
    ConnectionSpec,
    Connector,
    FetchResult,
    Field,
    Outcome,
    Unreachable,
)
from connectors.registry import UnknownConnector, all_connectors, get

__all__ = [
    "AuthFailed",
    "AuthKind",
    "CheckContext",
    "CheckError",
    "CheckResult",
    "ConnectionSpec",
    "Connector",
    "FetchResult",
    "Field",
    "Outcome",
    "UnknownConnector",
    "Unreachable",
    "all_connectors",
    "get",
]
