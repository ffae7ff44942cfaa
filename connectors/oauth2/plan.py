"""What an OAuth connection uses and may change: its fields (`TOKEN_FIELDS`), which of them
a reconnect may change, and its plan (`make_plan` -> `OAuthPlan`): endpoints, scope,
consent parameters and client, the connection's settings over its provider's defaults
and the installation's OAuth app; plus the check of settings before they are stored."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import httpx

from connectors.base import AuthFailed, CheckContext, Field
from connectors.http import url_problem
from connectors.oauth2.providers import ProviderEndpoints
from connectors.outcomes import INVALID_SETTINGS
from relink.domain.expiry import parse_lifetime

TOKEN_FIELDS = (
    Field("access_token", "Access token", secret=True, required=False),
    Field("refresh_token", "Refresh token", secret=True, required=False),
    Field("expires_at", "Expires at (epoch seconds)", secret=True, required=False),
    Field(
        "refresh_expires_at",
        "Refresh token expires at (epoch seconds)",
        secret=True,
        required=False,
        help="When the provider said the refresh token ends (refresh_token_expires_in)",
    ),
    Field(
        "instance_url",
        "Instance URL",
        secret=True,
        required=False,
        help="Sent by some providers (Salesforce) with the tokens: the API host",
    ),
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
    Field(
        "issuer",
        "ID token issuer",
        required=False,
        help="OpenID Connect: the issuer of the provider's ID tokens; default: the provider's",
    ),
    Field(
        "jwks_uri",
        "JWKS URL",
        required=False,
        help="OpenID Connect: the provider's signing keys, to verify its ID tokens",
    ),
    Field(
        "api_base_url",
        "API base URL",
        required=False,
        help="Base of dataset paths; default: the provider's (Salesforce: the instance URL)",
    ),
    Field(
        "scope",
        "Scopes",
        required=False,
        help="Space-separated scopes to ask for when connecting; default: the provider's",
    ),
    Field(
        "authorize_params",
        "Extra authorization parameters",
        required=False,
        help="Sent with the consent request, e.g. access_type=offline&prompt=consent "
        "(what some providers need to grant a refresh token); default: the provider's",
    ),
    Field(
        "token_endpoint_auth_method",
        "Client authentication",
        required=False,
        help="client_secret_post or client_secret_basic; default: the provider's",
    ),
    Field(
        "refresh_token_lifetime",
        "Refresh token lifetime",
        required=False,
        help="When the provider's refresh tokens end, where Relink's catalogue cannot know "
        "(Salesforce's Refresh Token Policy): '30 days unused', '90 days' or 'never'",
    ),
    Field(
        "publishing_status",
        "OAuth app publishing status",
        required=False,
        help="Google: 'testing' while the app's consent screen is in Testing (its refresh "
        "tokens end 7 days after consent)",
    ),
)

AUTH_METHODS = frozenset({"client_secret_basic", "client_secret_post"})
URL_SETTINGS = (
    "authorize_url",
    "token_url",
    "introspection_url",
    "revocation_url",
    "probe_url",
    "api_base_url",
    "jwks_uri",
)
# What a reconnect may change besides the consent: the connection's own client, and for
# the generic provider (whose endpoints are the connection's own) those endpoints too.
CLIENT_FIELDS = frozenset({"client_id", "client_secret"})
GENERIC_RECONNECT_FIELDS = frozenset({*URL_SETTINGS, "scope", "authorize_params", "issuer"})
# Authorization request parameters the flow sets itself: `authorize_params` may not.
FLOW_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
    }
)


@dataclass(frozen=True)
class OAuthPlan:
    """What one connection uses: endpoints and client, settings over provider defaults."""

    provider: str
    authorize_url: str | None
    token_url: str | None
    introspection_url: str | None
    revocation_url: str | None
    probe_url: str | None
    api_base_url: str | None
    scope: str | None
    authorize_params: tuple[tuple[str, str], ...]
    client_id: str | None
    client_secret: str | None = field(repr=False)
    auth_method: str
    # the client is the connection's own (its client_id setting), not the installation's
    own_client: bool = False
    # OpenID Connect: the ID token's issuer and the provider's signing keys
    issuer: str | None = None
    jwks_uri: str | None = None

    @property
    def effective_auth_method(self) -> str:
        return self.auth_method if self.client_secret else "none"

    @property
    def client_key(self) -> tuple[str | None, ...]:
        """What the client made by `session.make_client` depends on."""
        return (self.token_url, self.client_id, self.client_secret, self.effective_auth_method)


def text(value: Any) -> str | None:
    """A setting or secret as stripped text; None when empty."""
    if value is None:
        return None
    if hasattr(value, "get_secret_value"):  # pydantic SecretStr from Settings.oauth
        value = value.get_secret_value()
    text = str(value).strip()
    return text or None


def auth_method_problem(method: str | None) -> str | None:
    """Why `method` is not a client authentication we speak, or None."""
    if method is None or method in AUTH_METHODS:
        return None
    return (
        f"token_endpoint_auth_method must be one of {', '.join(sorted(AUTH_METHODS))}, "
        f"got {method[:40]!r}"
    )


def parse_authorize_params(raw: str | None) -> tuple[tuple[str, str], ...]:
    """``access_type=offline&prompt=consent`` (``&`` or spaces between pairs) as pairs;
    ValueError says what is wrong."""
    pairs: list[tuple[str, str]] = []
    for item in (raw or "").replace("&", " ").split():
        name, sep, value = item.partition("=")
        name, value = unquote_plus(name), unquote_plus(value)
        if not sep or not name:
            raise ValueError(f"authorize_params: expected name=value, got {item[:40]!r}")
        if name in FLOW_PARAMS:
            raise ValueError(f"authorize_params may not set {name!r}: the sign-in sets it")
        pairs.append((name, value))
    return tuple(pairs)


def authorize_params_problem(raw: str | None) -> str | None:
    """What is wrong with an `authorize_params` setting, or None."""
    try:
        parse_authorize_params(raw)
    except ValueError as exc:
        return str(exc)
    return None


def _entry(mapping: Any, name: str) -> Any:
    if isinstance(mapping, Mapping):
        return mapping.get(name)
    return getattr(mapping, name, None)


def make_plan(
    provider: str,
    defaults: ProviderEndpoints | None,
    settings: Mapping[str, Any],
    credentials: Mapping[str, str],
    ctx: CheckContext,
) -> OAuthPlan:
    """Endpoints and client of a connection: its settings over the provider's `defaults`,
    the installation's app (`ctx.app_settings["oauth"][provider]`) when it has no client of
    its own. Unusable settings raise `AuthFailed("invalid_settings")`."""
    d = defaults

    def setting(name: str, default: str | None = None) -> str | None:
        return text(settings.get(name)) or default

    method = setting(
        "token_endpoint_auth_method",
        d.token_endpoint_auth_method if d else "client_secret_basic",
    )
    problem = auth_method_problem(method)
    if problem:
        raise AuthFailed(INVALID_SETTINGS, problem)
    try:
        extra = parse_authorize_params(setting("authorize_params"))
    except ValueError as exc:
        raise AuthFailed(INVALID_SETTINGS, str(exc)) from None
    app = _entry(ctx.app_settings.get("oauth") or {}, provider) or {}
    return OAuthPlan(
        provider=provider,
        authorize_url=setting("authorize_url", d.authorize_url if d else None),
        token_url=setting("token_url", d.token_url if d else None),
        introspection_url=setting("introspection_url", d.introspection_url if d else None),
        revocation_url=setting("revocation_url", d.revocation_url if d else None),
        probe_url=setting("probe_url", d.probe_url if d else None),
        api_base_url=setting("api_base_url", d.api_base_url if d else None),
        scope=setting("scope", (d.scope or None) if d else None),
        authorize_params=extra or (d.authorize_params if d else ()),
        client_id=setting("client_id") or text(_entry(app, "client_id")),
        client_secret=text(credentials.get("client_secret")) or text(_entry(app, "client_secret")),
        auth_method=method,
        own_client=setting("client_id") is not None,
        issuer=setting("issuer", d.issuer if d else None),
        jwks_uri=setting("jwks_uri", d.jwks_uri if d else None),
    )


def settings_problem(settings: Mapping[str, Any]) -> str | None:
    """What makes these settings unusable (client authentication, consent parameters, a
    URL that is not http(s)), or None."""
    problem = auth_method_problem(text(settings.get("token_endpoint_auth_method")))
    problem = problem or authorize_params_problem(text(settings.get("authorize_params")))
    problem = problem or lifetime_problem(text(settings.get("refresh_token_lifetime")))
    urls = (url_problem(n, settings[n]) for n in URL_SETTINGS if text(settings.get(n)))
    return problem or next((p for p in urls if p), None)


def lifetime_problem(value: str | None) -> str | None:
    """Why a `refresh_token_lifetime` setting cannot be read, or None."""
    if value is None:
        return None
    try:
        parse_lifetime(value)
    except ValueError as err:
        return str(err)
    return None


def api_base_url(
    plan: OAuthPlan, settings: Mapping[str, Any], creds: Mapping[str, str]
) -> str | None:
    """The base of dataset paths: the setting, else the token set's `instance_url`
    (Salesforce), else the provider's, else the origin of the probe URL."""
    return (
        text(settings.get("api_base_url"))
        or text(creds.get("instance_url"))
        or plan.api_base_url
        or _origin(plan.probe_url)
    )


def _origin(url: str | None) -> str | None:
    """scheme://host[:port] of `url`; None when it has none."""
    if not url:
        return None
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        return None
    if not parsed.scheme or not parsed.host:
        return None
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"
