"""The OAuth 2.0 providers Relink knows (`PROVIDERS`): for each connector type its display
name and its defaults (`ProviderEndpoints`: endpoints, scope, client authentication,
extra consent parameters), which a connection's settings override; the generic
``oauth2`` type has none (its endpoints are all the connection's own). Beside it, how
long each provider's refresh tokens live (`REFRESH_LIFETIMES`, read by
`refresh_lifetime` under a connection's own `refresh_token_lifetime` setting)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from relink.domain.expiry import ExpiryKind, Lifetime, parse_lifetime


@dataclass(frozen=True)
class ProviderEndpoints:
    authorize_url: str
    token_url: str
    probe_url: str | None = None
    introspection_url: str | None = None
    revocation_url: str | None = None
    scope: str = ""
    api_base_url: str | None = None
    token_endpoint_auth_method: str = "client_secret_basic"
    # extra authorization request parameters (Google sends no refresh token without these)
    authorize_params: tuple[tuple[str, str], ...] = ()
    # The provider's access tokens last until revoked, and it may grant no refresh token;
    # otherwise a grant without one is refused (it would break when the token expires).
    access_tokens_last: bool = False
    # OpenID Connect: who issues its ID tokens and where its signing keys are (both, or
    # an ID token is not believed: connectors.oauth2.identity)
    issuer: str | None = None
    jwks_uri: str | None = None


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
            api_base_url=None,  # the token response's instance_url
            token_endpoint_auth_method="client_secret_post",
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
            api_base_url="https://analyticsdata.googleapis.com",
            token_endpoint_auth_method="client_secret_post",
            authorize_params=(("access_type", "offline"), ("prompt", "consent")),
            issuer="https://accounts.google.com",
            jwks_uri="https://www.googleapis.com/oauth2/v3/certs",
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
            api_base_url="https://sheets.googleapis.com",
            token_endpoint_auth_method="client_secret_post",
            authorize_params=(("access_type", "offline"), ("prompt", "consent")),
            issuer="https://accounts.google.com",
            jwks_uri="https://www.googleapis.com/oauth2/v3/certs",
        ),
    ),
    "hubspot": (
        "HubSpot",
        ProviderEndpoints(
            authorize_url="https://app.hubspot.com/oauth/authorize",
            token_url="https://api.hubapi.com/oauth/v1/token",
            probe_url="https://api.hubapi.com/account-info/v3/details",
            scope="crm.objects.contacts.read",
            api_base_url="https://api.hubapi.com",
            token_endpoint_auth_method="client_secret_post",
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
            api_base_url="https://quickbooks.api.intuit.com",
            token_endpoint_auth_method="client_secret_basic",
            issuer="https://oauth.platform.intuit.com/op/v1",
            jwks_uri="https://oauth.platform.intuit.com/op/v1/jwks",
        ),
    ),
    "microsoft_graph": (
        "Microsoft Graph",
        ProviderEndpoints(
            authorize_url="https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
            token_url="https://login.microsoftonline.com/common/oauth2/v2.0/token",
            probe_url="https://graph.microsoft.com/v1.0/me",
            scope="offline_access User.Read",
            api_base_url="https://graph.microsoft.com/v1.0",
            token_endpoint_auth_method="client_secret_post",
        ),
    ),
    "xero": (
        "Xero",
        ProviderEndpoints(
            authorize_url="https://login.xero.com/identity/connect/authorize",
            token_url="https://identity.xero.com/connect/token",
            probe_url="https://api.xero.com/connections",
            revocation_url="https://identity.xero.com/connect/revocation",
            scope="openid email offline_access accounting.reports.read",
            api_base_url="https://api.xero.com",
            token_endpoint_auth_method="client_secret_basic",
        ),
    ),
    "box": (
        "Box",
        ProviderEndpoints(
            authorize_url="https://account.box.com/api/oauth2/authorize",
            token_url="https://api.box.com/oauth2/token",
            probe_url="https://api.box.com/2.0/users/me",
            revocation_url="https://api.box.com/oauth2/revoke",
            api_base_url="https://api.box.com/2.0",
            token_endpoint_auth_method="client_secret_post",
        ),
    ),
    "airtable": (
        "Airtable",
        ProviderEndpoints(
            authorize_url="https://airtable.com/oauth2/v1/authorize",
            token_url="https://airtable.com/oauth2/v1/token",
            probe_url="https://api.airtable.com/v0/meta/whoami",
            scope="data.records:read schema.bases:read user.email:read",
            api_base_url="https://api.airtable.com/v0",
            token_endpoint_auth_method="client_secret_basic",
        ),
    ),
}

_HARD, _IDLE = ExpiryKind.HARD, ExpiryKind.IDLE

REFRESH_LIFETIMES: dict[str, Lifetime] = {
    # https://learn.microsoft.com/en-us/entra/identity-platform/refresh-tokens
    # 90 days (non-SPA apps); every refresh returns a new one, so it lapses only unused
    "microsoft_graph": Lifetime(_IDLE, timedelta(days=90)),
    # https://developer.xero.com/documentation/guides/oauth2/auth-flow/
    # 60 days unused; rotating, the replaced one still works for 30 minutes
    "xero": Lifetime(_IDLE, timedelta(days=60), grace=timedelta(minutes=30)),
    # https://developer.box.com/guides/authentication/tokens/refresh/
    # 60 days, single use: each refresh grants a new one for 60 more days
    "box": Lifetime(_IDLE, timedelta(days=60)),
    # https://airtable.com/developers/web/api/oauth-reference (refresh_expires_in)
    # 60 days, single use: each refresh grants a new one for 60 more days
    "airtable": Lifetime(_IDLE, timedelta(days=60)),
    # https://developer.intuit.com/app/developer/qbo/docs/develop/authentication-and-authorization/faq
    # rotates about daily under a hard cap, sent as x_refresh_token_expires_in
    "quickbooks": Lifetime(_HARD, None),
    # Salesforce: the connected app's Refresh Token Policy (valid until revoked, N days,
    # or N days unused), unknown here: set the connection's `refresh_token_lifetime`.
    # https://help.salesforce.com/s/articleView?id=sf.connected_app_manage_oauth.htm
}

GOOGLE_TESTING = Lifetime(_HARD, timedelta(days=7))
"""https://developers.google.com/identity/protocols/oauth2#expiration: an app whose
consent screen is in "Testing" gets refresh tokens that end 7 days after consent
(published apps' last until revoked). A Google connection says so with
`publishing_status: testing`."""

LIFETIME_SETTING = "refresh_token_lifetime"


def refresh_lifetime(provider: str, settings: Mapping[str, Any]) -> Lifetime | None:
    """How long this connection's refresh tokens live: its own `refresh_token_lifetime`
    ('30 days unused', '7 days', 'never'), else the catalogue's row, else unknown (None).
    An unreadable setting counts as unset (settings_problem refuses it when stored)."""
    own = settings.get(LIFETIME_SETTING)
    if isinstance(own, str) and own.strip():
        try:
            return parse_lifetime(own)
        except ValueError:
            pass
    if provider.startswith("google_"):
        testing = str(settings.get("publishing_status") or "").strip().lower() == "testing"
        return GOOGLE_TESTING if testing else None
    return REFRESH_LIFETIMES.get(provider)
