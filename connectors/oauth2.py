"""OAuth 2.0 sources through Authlib: one generic implementation, provider entries.

Built on Authlib's `AsyncOAuth2Client` (httpx 0.28 underneath; see "Authlib and httpx2").

Settings and where they come from
---------------------------------
* Endpoints (`authorize_url`, `token_url`, `introspection_url`, `revocation_url`,
  `probe_url`): the connection's settings, else the provider's defaults
  (`ProviderEndpoints`). `api_base_url` (the base of dataset paths): the setting, else
  the `instance_url` of the token set (Salesforce sends one with every token), else the
  provider's default, else the origin of the probe URL.
* Client id / secret: the connection's `client_id` setting and `client_secret` secret,
  else the installation's app, `ctx.app_settings["oauth"][<provider>]`
  (``{"client_id": ..., "client_secret": ...}``, filled from `RELINK_OAUTH__...`).
  Without a client id a refresh cannot be made: that is
  `Misconfigured("oauth_app_not_configured")`, an installation problem that reconnecting
  cannot fix, so it never breaks the owner's connection; its message names the settings
  an admin sets.
* Extra authorization parameters (`authorize_params`, e.g.
  ``access_type=offline&prompt=consent``): the setting, else the provider's (Google's
  ask for offline access). The parameters the flow itself sends (`client_id`, `state`,
  `scope`, PKCE ...) cannot be set this way.
* Client authentication at the token and introspection endpoints: a provider property
  (Salesforce, Google, HubSpot, Microsoft: ``client_secret_post``; QuickBooks and the
  generic provider: ``client_secret_basic``), overridable by the
  `token_endpoint_auth_method` setting. Without a client secret: ``none`` (public
  client).

validate
--------
1. No access token, or one whose `expires_at` (epoch seconds, a string) is within
   `ctx.refresh_window` of `ctx.now`: run the refresh-token grant through
   `ctx.token_store.refresh` (serialized per connection, persisted before use). Without
   a token store (a dry validation of new credentials) the refreshed set is returned in
   `CheckResult.credentials` for the caller to store: the set it was given is spent.
   No refresh token: `AuthFailed("no_refresh_token")`.
2. Verify: RFC 7662 introspection when an introspection URL (and a client secret) is
   known (``active: false`` -> `AuthFailed("inactive_token")`; a 401 there is the client
   refused, as at the token endpoint), else an authenticated GET of the probe URL (401 ->
   `AuthFailed(<error of WWW-Authenticate or body>` default ``invalid_token``); a 403 is
   `AuthFailed` only when it names an error of the provider's row of
   `connectors.outcomes.FORBIDDEN_BODIES` (``insufficient_scope``, Salesforce's
   ``Bad_OAuth_Token``...), else `Unreachable("http_403")`). With neither, the refresh
   grant itself is the check.
   A token rejected here although it looked valid (revoked, expired early, a provider
   that sends no `expires_in`) gets one refresh and one more verification.
3. The token endpoint's error codes are judged by `connectors.outcomes.oauth_error`:
   `invalid_grant` -> `AuthFailed`, except after a rotation race: the stored credentials
   are reloaded, and when their refresh token is not the one we spent, another run
   rotated first; its token set is used instead. `invalid_client` /
   `unauthorized_client` refuse the OAuth app: `Misconfigured` for the installation's
   app (the message says which RELINK_OAUTH__ settings to fix; never the secret), but
   `AuthFailed` for a connection that carries its own client (its `client_id` setting),
   which its owner fixes by reconnecting.
4. Network errors, 5xx, 429 -> `Unreachable` (see `connectors.http`; a Retry-After is
   kept); other error codes of the token endpoint (``invalid_request``,
   ``temporarily_unavailable``...) are `Unreachable(<code>)` too: not proof that the
   grant is gone.
5. `validate` returns a `CheckResult`, never raises for a source problem. Its
   `stored_version` is the connection's version whose credentials the result is about
   whenever that is not `conn.version` (we stored a rotated set, or used one another run
   stored); None otherwise.

Token sets are stored as strings: `access_token`, `refresh_token`, `expires_at` (computed
as ``ctx.now + expires_in``: decisions use the caller's clock throughout), and
`instance_url` when the provider sends one. No message carries a token or a secret.

fetch
-----
Dataset query: ``"<path-or-url> [| <dotted.json.path>]"``, e.g.
``"/api/records?path=opportunities | data.records"``: an authenticated GET relative to
`api_base_url` (refreshed first when needed, as in validate), the records taken from the
dotted path (default: the body). Details in `connectors.http`. Errors raise the
classified `CheckError`.

Reconnect helpers
-----------------
`OAuth2Connector.authorization_url(...)` builds the consent URL (PKCE S256, state, the
scope and the extra authorization parameters); `OAuth2Connector.exchange_code(...)`
swaps the code for a token set (credentials dict). A token set without a refresh token
would stop working when its access token expires, so it is refused
(`AuthFailed("no_refresh_token")`) unless the provider's access tokens last
(`ProviderEndpoints.access_tokens_last`).

A reconnect may change (`Field.reconnect`, `OAuth2Connector.reconnect_fields`) the
connection's own client (`client_id`, `client_secret`) when it carries one, and for the
generic provider its endpoints, scope and extra authorization parameters too; a named
provider's endpoints and the installation's app are not the owner's to change.

Authlib and httpx2
------------------
Authlib 1.9.10's httpx integration (`authlib/integrations/httpx_client/_compat.py`)
imports `httpx2` when installed, else falls back to `httpx` and emits
``AuthlibDeprecationWarning("The httpx module is deprecated; please use httpx2 instead.")``
(a `DeprecationWarning` subclass, attributed to that package's modules). We stay on
httpx 0.28 on purpose (Prefect's own HTTP client; one HTTP stack; pinned
``httpx>=0.27,<0.29``, ``authlib>=1.9,<1.10``), so that one warning, and only it, is
silenced around the import below. Transport errors are classified as httpx exceptions;
`tests/unit/test_http_classification.py` checks that Authlib really uses the `httpx` we
classify (should `httpx2` ever be installed, unclassified errors fall back to
``Unreachable("error")``, which never breaks a connection).
"""

from __future__ import annotations

import asyncio
import dataclasses
import warnings
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote_plus

import httpx
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.oauth2.client import OAuth2Client as _ProtocolClient

from connectors.base import (
    AuthFailed,
    CheckContext,
    CheckError,
    CheckResult,
    ConnectionSpec,
    Connector,
    Credentials,
    FetchResult,
    Field,
    Misconfigured,
    Unreachable,
)
from connectors.http import (
    POOL_LIMITS,
    classify_exception,
    classify_response,
    json_body,
    no_cookies,
    parse_query,
    records_to_result,
    resolve_url,
    response_error,
    safe_code,
    safe_error,
    tls_context,
    url_problem,
    where,
)
from connectors.outcomes import (
    BAD_RESPONSE,
    CLIENT_REFUSALS,
    INACTIVE_TOKEN,
    INVALID_SETTINGS,
    NO_REFRESH_TOKEN,
    OAUTH_APP_NOT_CONFIGURED,
    oauth_error,
)
from connectors.registry import register
from relink.domain.words import AuthKind, Outcome

with warnings.catch_warnings():
    # Authlib 1.9.10 warns on import that its httpx integration is deprecated in favour
    # of httpx2. Staying on httpx 0.28 is a decision (see the module docstring): ignore
    # exactly that message of that category from that package, nothing else.
    warnings.filterwarnings(
        "ignore",
        message=r"The httpx module is deprecated; please use httpx2 instead\.",
        category=AuthlibDeprecationWarning,
        module=r"authlib\.integrations\.httpx_client",
    )
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

TOKEN_FIELDS = (
    Field("access_token", "Access token", secret=True, required=False),
    Field("refresh_token", "Refresh token", secret=True, required=False),
    Field("expires_at", "Expires at (epoch seconds)", secret=True, required=False),
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
)

AUTH_METHODS = frozenset({"client_secret_basic", "client_secret_post"})
URL_SETTINGS = (
    "authorize_url",
    "token_url",
    "introspection_url",
    "revocation_url",
    "probe_url",
    "api_base_url",
)
# What a reconnect may change besides the consent: the connection's own client, and for
# the generic provider (whose endpoints are the connection's own) those endpoints too.
CLIENT_FIELDS = frozenset({"client_id", "client_secret"})
GENERIC_RECONNECT_FIELDS = frozenset({*URL_SETTINGS, "scope", "authorize_params"})
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
# Verification answers after which one refresh is worth a try.
TOKEN_REJECTED = frozenset({"invalid_token", INACTIVE_TOKEN})
_TOKEN_SET = ("access_token", "refresh_token", "expires_at")


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

    @property
    def effective_auth_method(self) -> str:
        return self.auth_method if self.client_secret else "none"

    @property
    def client_key(self) -> tuple[str | None, ...]:
        """What the client made by `OAuth2Connector.client` depends on."""
        return (self.token_url, self.client_id, self.client_secret, self.effective_auth_method)


# --- small pure helpers -----------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "get_secret_value"):  # pydantic SecretStr from Settings.oauth
        value = value.get_secret_value()
    text = str(value).strip()
    return text or None


def _auth_method_problem(method: str | None) -> str | None:
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


def _authorize_params_problem(raw: str | None) -> str | None:
    try:
        parse_authorize_params(raw)
    except ValueError as exc:
        return str(exc)
    return None


def _entry(mapping: Any, name: str) -> Any:
    if isinstance(mapping, Mapping):
        return mapping.get(name)
    return getattr(mapping, name, None)


def expires_at(credentials: Credentials) -> float | None:
    """The access token's expiry (epoch seconds); None when unknown, 0 when unreadable."""
    raw = credentials.get("expires_at")
    if raw is None or str(raw).strip() == "":
        return None
    try:
        return float(raw)
    except ValueError:
        return 0.0  # unreadable: treat as expired, a refresh writes a proper one


def needs_refresh(credentials: Credentials, now: datetime, window: float) -> bool:
    """No access token, or one that expires within `window` seconds of `now`."""
    if not credentials.get("access_token"):
        return True
    expiry = expires_at(credentials)
    return expiry is not None and expiry <= now.timestamp() + window


def token_credentials(
    base: Mapping[str, str], token: Mapping[str, Any], now: datetime
) -> dict[str, str]:
    """A token endpoint's answer as credentials (strings), over `base`'s other keys."""
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise Unreachable(BAD_RESPONSE, "the token endpoint answered without an access_token")
    creds = {k: v for k, v in base.items() if k not in _TOKEN_SET}
    creds["access_token"] = access
    refresh = token.get("refresh_token") or base.get("refresh_token")
    if refresh:
        creds["refresh_token"] = str(refresh)
    try:
        if token.get("expires_in") not in (None, ""):
            creds["expires_at"] = str(int(now.timestamp() + float(token["expires_in"])))
        elif token.get("expires_at") not in (None, ""):
            creds["expires_at"] = str(int(float(token["expires_at"])))
    except (TypeError, ValueError):
        raise Unreachable(BAD_RESPONSE, "the token endpoint sent an unreadable expiry") from None
    if token.get("instance_url"):
        creds["instance_url"] = str(token["instance_url"])
    return creds


def _origin(url: str | None) -> str | None:
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


def app_settings_fix(provider: str) -> str:
    """Where an admin fixes the installation's OAuth app of `provider` (never its values)."""
    name = f"RELINK_OAUTH__{provider.upper()}"
    return f"set {name}__CLIENT_ID and {name}__CLIENT_SECRET to the app's current values"


_INSTALLATION_FIXES = {
    "unauthorized_client": "allow the app the refresh-token grant at the provider, or {settings}",
}


def refused(code: str, at: str, action: str, plan: OAuthPlan, detail: str = "") -> CheckError:
    """An OAuth error code from the provider as its `connectors.outcomes` row judges it."""
    judgment = oauth_error(code, own_client=plan.own_client)
    if judgment.outcome is Outcome.MISCONFIGURED:
        settings = app_settings_fix(plan.provider)
        fix = _INSTALLATION_FIXES.get(code, "{settings}").format(settings=settings)
        # the fix before the provider's own description, which may be cut off
        return judgment.error(
            code,
            f"{at} answered {code}: {judgment.meaning}. An admin must {fix}; reconnecting "
            f"cannot help.{detail}",
        )
    if judgment.outcome is Outcome.AUTH_FAILED:
        fix = "with the right client" if code in CLIENT_REFUSALS else "the connection"
        return judgment.error(code, f"{at} refused {action}: {code}{detail}; reconnect {fix}")
    return judgment.error(code, f"{at} could not answer {action}: {code}{detail}")


def not_configured(plan: OAuthPlan) -> Misconfigured:
    return Misconfigured(
        OAUTH_APP_NOT_CONFIGURED,
        f"no OAuth app is configured for {plan.provider}: an admin must "
        f"{app_settings_fix(plan.provider)}; reconnecting cannot help",
    )


async def _http(
    call: Awaitable[Any], at: str, ctx: CheckContext, plan: OAuthPlan, action: str = "the request"
) -> Any:
    """Await one HTTP exchange (Authlib or httpx); every failure becomes a CheckError."""
    backstop = max(ctx.timeout * 3, ctx.timeout + 5)  # for what httpx's timeouts miss
    try:
        async with asyncio.timeout(backstop):  # no task of its own, unlike wait_for
            return await call
    except CheckError:
        raise
    except OAuthError as exc:
        code = safe_code(exc.error) or "oauth_error"
        detail = f" ({str(exc.description)[:200]})" if exc.description else ""
        raise refused(code, at, action, plan, detail) from None
    except httpx.HTTPStatusError as exc:  # Authlib: a 5xx or a non-JSON error answer
        status = exc.response.status_code
        problem = classify_response(exc.response, at, now=ctx.now, provider=plan.provider)
        raise (problem or Unreachable(f"http_{status}", at)) from None
    except Exception as exc:  # noqa: BLE001 - validate never raises: unknown errors by class
        raise classify_exception(exc, at) from None


def _token_response_hook(at: str, now: datetime) -> Any:
    """Authlib parses a 429's JSON body as an OAuth error: classify by status first."""

    def hook(response: httpx.Response) -> httpx.Response:
        status = response.status_code
        if status == 429 or status >= 500:
            problem = classify_response(response, at, now=now)
            raise problem or Unreachable(f"http_{status}", at)
        return response

    return hook


# --- one validation or fetch --------------------------------------------------------------


class _Run:
    """The state of one validate/fetch: current credentials, what was stored, secrets seen."""

    def __init__(self, connector: OAuth2Connector, conn: ConnectionSpec, ctx: CheckContext):
        self.connector = connector
        self.conn = conn
        self.ctx = ctx
        self.creds: dict[str, str] = {str(k): str(v) for k, v in conn.credentials.items()}
        self.secrets: set[str] = set()
        self._remember(self.creds)
        self.version: int | None = None  # the stored version our credentials came from
        self.minted = False  # the current access token came from our own grant
        self.unstored = False  # we refreshed without a token store: self.creds are new
        self.retried = False  # one refresh after a rejected token, no more
        self.rejected: set[str] = set()
        self.spent_refresh: str | None = None
        self.plan: OAuthPlan | None = None
        self._client: AsyncOAuth2Client | None = None
        self._owned: AsyncOAuth2Client | None = None  # made for this run, closed after it

    # -- lifecycle --

    async def __aenter__(self) -> Self:
        plan = self.plan = self.connector.plan(self.conn.settings, self.creds, self.ctx)
        if plan.client_secret:
            self.secrets.add(plan.client_secret)
        shared = self.ctx.clients
        if shared is None:
            self._client = self._owned = self.connector.client(plan, self.ctx)
        else:
            key = (AsyncOAuth2Client, plan.client_key, self.ctx.timeout)
            self._client = shared.get(key, lambda: self.connector.client(plan, self.ctx))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owned is not None:
            await self._owned.aclose()

    @property
    def client(self) -> AsyncOAuth2Client:
        assert self._client is not None
        return self._client

    def _p(self) -> OAuthPlan:
        assert self.plan is not None
        return self.plan

    def _remember(self, creds: Mapping[str, str]) -> None:
        for name in ("access_token", "refresh_token", "client_secret"):
            if creds.get(name):
                self.secrets.add(str(creds[name]))

    def safe(self, err: CheckError) -> CheckError:
        return safe_error(err, self.secrets)

    # -- refresh --

    def usable(self, creds: Credentials) -> bool:
        access = creds.get("access_token")
        return (
            bool(access)
            and access not in self.rejected
            and not needs_refresh(creds, self.ctx.now, self.ctx.refresh_window)
        )

    def can_refresh(self) -> bool:
        p = self._p()
        return bool(self.creds.get("refresh_token") and p.token_url and p.client_id)

    async def grant(self, stored: Credentials) -> Credentials:
        """The refresh-token grant on `stored` (called by the token store, under its lock)."""
        p = self._p()
        refresh_token = stored.get("refresh_token")
        if not refresh_token:
            raise AuthFailed(
                NO_REFRESH_TOKEN,
                "the access token is missing or expired and there is no refresh token",
            )
        if not p.token_url:
            raise AuthFailed(INVALID_SETTINGS, "the connection has no token_url")
        if not p.client_id:
            raise not_configured(p)
        self._remember(stored)
        self.spent_refresh = refresh_token
        token = await _http(
            self.client.refresh_token(p.token_url, refresh_token=refresh_token),
            f"the token endpoint ({where(p.token_url)})",
            self.ctx,
            p,
            "the refresh token",
        )
        fresh = token_credentials(stored, token, self.ctx.now)
        self._remember(fresh)
        self.minted = True
        return fresh

    async def refresh(self, rejected: str | None = None) -> None:
        if rejected:
            self.rejected.add(rejected)
        store = self.ctx.token_store
        if store is None:
            self._use(await self.grant(self.creds))
            self.unstored = True
            return
        spec = dataclasses.replace(self.conn, credentials=dict(self.creds))
        try:
            creds, version = await store.refresh(spec, self.grant, usable=self.usable)
        except AuthFailed as err:
            if err.code != "invalid_grant":
                raise
            stored, version = await store.reload(self.conn.id)
            newer = stored.get("refresh_token")
            if not newer or newer == self.spent_refresh:
                raise
            # Another run rotated the refresh token before us: its set is the current one.
            self._remember(stored)
            if self.usable(stored):
                creds = stored
            else:
                again = dataclasses.replace(self.conn, credentials=dict(stored))
                creds, version = await store.refresh(again, self.grant, usable=self.usable)
        self._use(creds, version)

    def _use(self, creds: Credentials, version: int | None = None) -> None:
        self.creds = {str(k): str(v) for k, v in creds.items()}
        self._remember(self.creds)
        if version is not None and version != self.conn.version:
            self.version = version

    async def ensure_fresh(self) -> None:
        if needs_refresh(self.creds, self.ctx.now, self.ctx.refresh_window):
            await self.refresh()

    def _may_retry(self) -> bool:
        return not self.retried and not self.minted and self.can_refresh()

    # -- verification --

    async def verify(self) -> None:
        p = self._p()
        if p.introspection_url and p.client_id and p.client_secret:
            try:
                await self.introspect()
            except AuthFailed as err:
                if err.code != INACTIVE_TOKEN or not self._may_retry():
                    raise
                self.retried = True
                await self.refresh(rejected=self.creds.get("access_token"))
                await self.introspect()
        elif p.probe_url:
            await self.get(p.probe_url)
        elif self.minted:
            return  # the refresh grant just answered: the grant is alive
        elif self.can_refresh():
            await self.refresh(rejected=self.creds.get("access_token"))
        else:
            raise AuthFailed(
                INVALID_SETTINGS,
                "nothing to check the token against: set probe_url or introspection_url",
            )

    async def introspect(self) -> None:
        p = self._p()
        assert p.introspection_url
        at = f"the introspection endpoint ({where(p.introspection_url)})"
        response: httpx.Response = await _http(
            self.client.introspect_token(
                p.introspection_url,
                # never None: Authlib would fall back to the token its client last saw
                token=self.creds.get("access_token") or "",
                token_type_hint="access_token",
            ),
            at,
            self.ctx,
            p,
        )
        status = response.status_code
        if status in (400, 401):
            # RFC 7662 §2.1: the caller (the OAuth app) authenticates; a 401 refuses it
            error = response_error(response)
            if error in CLIENT_REFUSALS or status == 401:
                code = error if error in CLIENT_REFUSALS else "invalid_client"
                raise refused(code, at, "the OAuth client", p)
        problem = classify_response(response, at, now=self.ctx.now, provider=p.provider)
        if problem is not None:
            raise problem
        body = json_body(response, at)
        active = body.get("active") if isinstance(body, Mapping) else None
        if active is True or active == "true":
            return
        if active is False or active == "false":
            raise AuthFailed(
                INACTIVE_TOKEN,
                f"{at}: the provider reports the access token as inactive (expired or revoked)",
            )
        raise Unreachable(BAD_RESPONSE, f"{at} answered without an 'active' member")

    async def get(self, url: str) -> httpx.Response:
        """An authenticated GET; a rejected token gets one refresh and one more try."""
        at = where(url)
        p = self._p()
        while True:
            access = self.creds.get("access_token", "")
            response: httpx.Response = await _http(
                self.client.request(
                    "GET",
                    url,
                    headers={"Authorization": f"Bearer {access}", "Accept": "application/json"},
                    withhold_token=True,  # Authlib must not refresh on its own: the store does
                ),
                at,
                self.ctx,
                p,
            )
            status = response.status_code
            error: str | None = None
            if status == 401:
                error = response_error(response) or "invalid_token"
                if error in TOKEN_REJECTED and self._may_retry():
                    self.retried = True
                    await self.refresh(rejected=access)
                    continue
            problem = classify_response(
                response, at, now=self.ctx.now, provider=p.provider, error=error
            )
            if problem is not None:
                raise problem
            return response

    def api_base_url(self) -> str | None:
        p = self._p()
        return (
            _text(self.conn.settings.get("api_base_url"))
            or _text(self.creds.get("instance_url"))
            or p.api_base_url
            or _origin(p.probe_url)
        )


# --- the connector ---------------------------------------------------------------------


class OAuth2Connector(Connector):
    auth_kind = AuthKind.OAUTH2
    fields = TOKEN_FIELDS

    def __init__(self, type_: str, display_name: str, endpoints: ProviderEndpoints | None) -> None:
        self.type = type_
        self.display_name = display_name
        self.provider = type_
        self.endpoints = endpoints
        changeable = CLIENT_FIELDS | (GENERIC_RECONNECT_FIELDS if endpoints is None else set())
        self.fields = tuple(
            dataclasses.replace(f, reconnect=f.name in changeable) for f in TOKEN_FIELDS
        )

    # -- configuration --

    def reconnect_fields(self, settings: Mapping[str, Any]) -> tuple[Field, ...]:
        """Besides the consent: the client only when the connection carries its own."""
        own_client = _text(settings.get("client_id")) is not None
        return tuple(
            f
            for f in super().reconnect_fields(settings)
            if own_client or f.name not in CLIENT_FIELDS
        )

    def settings_problem(self, settings: Mapping[str, Any]) -> str | None:
        problem = _auth_method_problem(_text(settings.get("token_endpoint_auth_method")))
        problem = problem or _authorize_params_problem(_text(settings.get("authorize_params")))
        urls = (url_problem(n, settings[n]) for n in URL_SETTINGS if _text(settings.get(n)))
        return problem or next((p for p in urls if p), None)

    def plan(
        self, settings: Mapping[str, Any], credentials: Mapping[str, str], ctx: CheckContext
    ) -> OAuthPlan:
        """Endpoints and client of a connection: its settings over the provider's defaults."""
        d = self.endpoints

        def setting(name: str, default: str | None = None) -> str | None:
            return _text(settings.get(name)) or default

        method = setting(
            "token_endpoint_auth_method",
            d.token_endpoint_auth_method if d else "client_secret_basic",
        )
        problem = _auth_method_problem(method)
        if problem:
            raise AuthFailed(INVALID_SETTINGS, problem)
        try:
            extra = parse_authorize_params(setting("authorize_params"))
        except ValueError as exc:
            raise AuthFailed(INVALID_SETTINGS, str(exc)) from None
        app = _entry(ctx.app_settings.get("oauth") or {}, self.provider) or {}
        return OAuthPlan(
            provider=self.provider,
            authorize_url=setting("authorize_url", d.authorize_url if d else None),
            token_url=setting("token_url", d.token_url if d else None),
            introspection_url=setting("introspection_url", d.introspection_url if d else None),
            revocation_url=setting("revocation_url", d.revocation_url if d else None),
            probe_url=setting("probe_url", d.probe_url if d else None),
            api_base_url=setting("api_base_url", d.api_base_url if d else None),
            scope=setting("scope", (d.scope or None) if d else None),
            authorize_params=extra or (d.authorize_params if d else ()),
            client_id=setting("client_id") or _text(_entry(app, "client_id")),
            client_secret=_text(credentials.get("client_secret"))
            or _text(_entry(app, "client_secret")),
            auth_method=method,
            own_client=setting("client_id") is not None,
        )

    def client(self, plan: OAuthPlan, ctx: CheckContext) -> AsyncOAuth2Client:
        """Authlib's client for `plan.client_key`; safe to share between connections.

        Each call passes its connection's token explicitly (`refresh_token=`, `token=`,
        `withhold_token=True` with our own header), so the token Authlib keeps on the
        client (set by a grant and returned without an await in between) is never read.
        """
        client = AsyncOAuth2Client(
            client_id=plan.client_id,
            client_secret=plan.client_secret,
            token_endpoint_auth_method=plan.effective_auth_method,
            revocation_endpoint_auth_method=plan.effective_auth_method,
            timeout=httpx.Timeout(ctx.timeout),
            verify=tls_context(),
            follow_redirects=False,
            cookies=no_cookies(),
            limits=POOL_LIMITS,
        )
        hook = _token_response_hook(f"the token endpoint ({where(plan.token_url or '')})", ctx.now)
        client.register_compliance_hook("access_token_response", hook)
        client.register_compliance_hook("refresh_token_response", hook)
        return client

    @property
    def access_tokens_last(self) -> bool:
        return self.endpoints is not None and self.endpoints.access_tokens_last

    # -- Connector --

    async def validate(self, conn: ConnectionSpec, ctx: CheckContext) -> CheckResult:
        run = _Run(self, conn, ctx)
        try:
            async with run:
                await run.ensure_fresh()
                await run.verify()
        except CheckError as err:
            return CheckResult.from_error(run.safe(err), stored_version=run.version)
        return CheckResult.ok(
            stored_version=run.version, credentials=dict(run.creds) if run.unstored else None
        )

    async def fetch(self, conn: ConnectionSpec, query: str, ctx: CheckContext) -> FetchResult:
        run = _Run(self, conn, ctx)
        try:
            target, records_path = parse_query(query)
            async with run:
                await run.ensure_fresh()
                url = resolve_url(run.api_base_url(), target)
                response = await run.get(url)
                body = json_body(response, where(url))
            return records_to_result(body, records_path)
        except CheckError as err:
            raise run.safe(err) from None

    # -- reconnect helpers --

    def authorization_url(
        self,
        conn_settings: Mapping[str, Any],
        ctx: CheckContext,
        redirect_uri: str,
        state: str,
        code_verifier: str,
    ) -> str:
        """The provider's consent URL (authorization code + PKCE S256) for a reconnect."""
        plan = self.plan(conn_settings, {}, ctx)
        if not plan.authorize_url:
            raise AuthFailed(INVALID_SETTINGS, "the connection has no authorize_url")
        if not plan.client_id:
            raise not_configured(plan)
        client = _ProtocolClient(
            None,
            client_id=plan.client_id,
            scope=plan.scope,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
        )
        url, _ = client.create_authorization_url(
            plan.authorize_url,
            state=state,
            code_verifier=code_verifier,
            **dict(plan.authorize_params),
        )
        return str(url)

    async def exchange_code(
        self,
        conn_settings: Mapping[str, Any],
        ctx: CheckContext,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        *,
        credentials: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """Swap an authorization code for a token set (credentials; `expires_at` a string).

        `credentials` may carry the connection's own `client_secret`. A token set without
        a refresh token is refused unless this provider's access tokens last.
        """
        plan = self.plan(conn_settings, credentials or {}, ctx)
        secrets = {code, code_verifier, plan.client_secret}
        try:
            if not plan.token_url:
                raise AuthFailed(INVALID_SETTINGS, "the connection has no token_url")
            if not plan.client_id:
                raise not_configured(plan)
            async with self.client(plan, ctx) as client:
                token = await _http(
                    client.fetch_token(
                        plan.token_url,
                        grant_type="authorization_code",
                        code=code,
                        redirect_uri=redirect_uri,
                        code_verifier=code_verifier,
                    ),
                    f"the token endpoint ({where(plan.token_url)})",
                    ctx,
                    plan,
                    "the authorization code",
                )
            creds = token_credentials({}, token, ctx.now)
            if not creds.get("refresh_token") and not self.access_tokens_last:
                raise AuthFailed(
                    NO_REFRESH_TOKEN,
                    "the provider granted no refresh token; for this provider ask for "
                    "offline access (the connection would stop working when the access "
                    "token expires)",
                )
            return creds
        except CheckError as err:
            raise safe_error(err, secrets) from None


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

for _type, (_name, _endpoints) in PROVIDERS.items():
    register(OAuth2Connector(_type, _name, _endpoints))
