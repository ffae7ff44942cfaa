"""The OAuth 2.0 providers Relink knows (`PROVIDERS`): for each connector type its display
name and its defaults (`ProviderEndpoints`: endpoints, scope, client authentication,
extra consent parameters), which a connection's settings override; the generic
``oauth2`` type has none (its endpoints are all the connection's own)."""

from __future__ import annotations

from dataclasses import dataclass


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
}
