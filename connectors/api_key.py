"""HTTP APIs authenticated with a static key (a header or a bearer token)."""

from __future__ import annotations

from connectors.base import (
    AuthKind,
    CheckContext,
    CheckResult,
    ConnectionSpec,
    Connector,
    FetchResult,
    Field,
)
from connectors.registry import register

FIELDS = (
    Field("base_url", "Base URL", help="e.g. https://api.example.com"),
    Field(
        "probe_path",
        "Probe path",
        required=False,
        default="/me",
        help="A cheap authenticated GET used to validate the key",
    ),
    Field(
        "header",
        "Header",
        required=False,
        default="Authorization",
        help="Header carrying the key; 'Authorization' sends 'Bearer <key>'",
    ),
    Field("api_key", "API key", secret=True, help="The key itself"),
)


class ApiKeyConnector(Connector):
    type = "api_key"
    display_name = "HTTP API (API key)"
    auth_kind = AuthKind.API_KEY
    provider = "api_key"
    fields = FIELDS

    async def validate(self, conn: ConnectionSpec, ctx: CheckContext) -> CheckResult:
        raise NotImplementedError  # TODO(checks issue)

    async def fetch(self, conn: ConnectionSpec, query: str, ctx: CheckContext) -> FetchResult:
        raise NotImplementedError  # TODO(checks issue)


register(ApiKeyConnector())
