"""OAuth 2.0 sources through Authlib: one generic implementation, provider entries."""

from __future__ import annotations

from dataclasses import dataclass

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

TOKEN_FIELDS = (
    Field("access_token", "Access token", secret=True, required=False),
    Field("refresh_token", "Refresh token", secret=True, required=False),
    Field("expires_at", "Expires at (epoch seconds)", secret=True, required=False),
    Field(
        "client_id",
        "Client ID",
        required=False,
        help="Overrides the installation's client id for this provider",
    ),
    Field(
        "client_secret",
        "Client secret",
        secret=True,
        required=False,
        help="Overrides the installation's client secret for this provider",
    ),
    Field("authorize_url", "Authorize URL", required=False),
    Field("token_url", "Token URL", required=False),
    Field("introspection_url", "Introspection URL", required=False),
    Field("revocation_url", "Revocation URL", required=False),
    Field(
        "probe_url",
        "Probe URL",
        required=False,
        help="A cheap authenticated GET (userinfo / who am I)",
    ),
)


@dataclass(frozen=True)
class ProviderEndpoints:
    authorize_url: str
    token_url: str
    probe_url: str | None = None
    introspection_url: str | None = None
    revocation_url: str | None = None
    scope: str = ""


class OAuth2Connector(Connector):
    auth_kind = AuthKind.OAUTH2
    fields = TOKEN_FIELDS

    def __init__(self, type_: str, display_name: str, endpoints: ProviderEndpoints | None) -> None:
        self.type = type_
        self.display_name = display_name
        self.provider = type_
        self.endpoints = endpoints

    async def validate(self, conn: ConnectionSpec, ctx: CheckContext) -> CheckResult:
        raise NotImplementedError  # TODO(checks issue)

    async def fetch(self, conn: ConnectionSpec, query: str, ctx: CheckContext) -> FetchResult:
        raise NotImplementedError  # TODO(checks issue)


PROVIDERS: dict[str, tuple[str, ProviderEndpoints | None]] = {
    "oauth2": ("Generic OAuth 2.0", None),
    "salesforce": (
        "Salesforce",
        ProviderEndpoints(
            authorize_url="https://login.salesforce.com/services/oauth2/authorize",
            token_url="https://login.salesforce.com/services/oauth2/token",
            probe_url="https://login.salesforce.com/services/oauth2/userinfo",
            introspection_url="https://login.salesforce.com/services/oauth2/introspect",
            revocation_url="https://login.salesforce.com/services/oauth2/revoke",
            scope="api refresh_token",
        ),
    ),
    "google_analytics": (
        "Google Analytics",
        ProviderEndpoints(
            authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
            token_url="https://oauth2.googleapis.com/token",
            probe_url="https://openidconnect.googleapis.com/v1/userinfo",
            revocation_url="https://oauth2.googleapis.com/revoke",
            scope="openid email https://www.googleapis.com/auth/analytics.readonly",
        ),
    ),
    "google_sheets": (
        "Google Sheets",
        ProviderEndpoints(
            authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
            token_url="https://oauth2.googleapis.com/token",
            probe_url="https://openidconnect.googleapis.com/v1/userinfo",
            revocation_url="https://oauth2.googleapis.com/revoke",
            scope="openid email https://www.googleapis.com/auth/spreadsheets.readonly",
        ),
    ),
    "hubspot": (
        "HubSpot",
        ProviderEndpoints(
            authorize_url="https://app.hubspot.com/oauth/authorize",
            token_url="https://api.hubapi.com/oauth/v1/token",
            probe_url="https://api.hubapi.com/account-info/v3/details",
            scope="crm.objects.contacts.read",
        ),
    ),
    "quickbooks": (
        "QuickBooks Online",
        ProviderEndpoints(
            authorize_url="https://appcenter.intuit.com/connect/oauth2",
            token_url="https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
            probe_url="https://accounts.platform.intuit.com/v1/openid_connect/userinfo",
            revocation_url="https://developer.api.intuit.com/v2/oauth2/tokens/revoke",
            scope="com.intuit.quickbooks.accounting openid email",
        ),
    ),
    "microsoft_graph": (
        "Microsoft Graph",
        ProviderEndpoints(
            authorize_url="https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
            token_url="https://login.microsoftonline.com/common/oauth2/v2.0/token",
            probe_url="https://graph.microsoft.com/v1.0/me",
            scope="offline_access User.Read",
        ),
    ),
}

for _type, (_name, _endpoints) in PROVIDERS.items():
    register(OAuth2Connector(_type, _name, _endpoints))
