"""The OAuth 2.0 connector: one `OAuth2Connector` per provider of the catalogue. `validate`
refreshes the access token when needed (`tokens`) and verifies it (`check`), returning a
`CheckResult` and never raising for a source problem; `fetch` runs a dataset's query
through the same authenticated GET; `authorization_url` and `exchange_code` are the two
halves of a reconnect's consent (authorization code with PKCE S256; `grant_code` also
tells whose account consented, from a verified ID token: `identity`). A token set without
a refresh token is refused unless the provider's access tokens last."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

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
)
from connectors.http import json_body, safe_error, where
from connectors.http_query import parse_query, records_to_result, resolve_url
from connectors.oauth2.check import Check
from connectors.oauth2.errors import not_configured, require_token_client
from connectors.oauth2.identity import grant_identity
from connectors.oauth2.plan import (
    CLIENT_FIELDS,
    GENERIC_RECONNECT_FIELDS,
    TOKEN_FIELDS,
    OAuthPlan,
    make_plan,
    settings_problem,
    text,
)
from connectors.oauth2.providers import ProviderEndpoints, refresh_lifetime
from connectors.oauth2.session import (
    AsyncOAuth2Client,
    ProtocolClient,
    exchange,
    make_client,
    token_endpoint,
)
from connectors.oauth2.tokens import refresh_expires_in, token_credentials
from connectors.outcomes import INVALID_SETTINGS, NO_REFRESH_TOKEN
from relink.domain.expiry import UNKNOWN, Expiry, credentials_expiry
from relink.domain.identity import Identity
from relink.domain.words import AuthKind


@dataclass(frozen=True)
class CodeGrant:
    """What an authorization code bought: the token set (as credentials) and whose
    account it is, when the provider said in a form we could verify."""

    credentials: dict[str, str] = field(repr=False)
    identity: Identity | None = None


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
        self.needs, self.checked = _summary(display_name, endpoints)
        self.breaks = "invalid_grant; an invalid token"

    # -- configuration --

    def reconnect_fields(self, settings: Mapping[str, Any]) -> tuple[Field, ...]:
        """Besides the consent: the client only when the connection carries its own."""
        own_client = text(settings.get("client_id")) is not None
        return tuple(
            f
            for f in super().reconnect_fields(settings)
            if own_client or f.name not in CLIENT_FIELDS
        )

    def settings_problem(self, settings: Mapping[str, Any]) -> str | None:
        return settings_problem(settings)

    def credentials_expiry(
        self,
        settings: Mapping[str, Any],
        credentials: Credentials,
        *,
        now: datetime,
        new_refresh_token: bool = True,
        previous: Expiry = UNKNOWN,
    ) -> Expiry:
        """The refresh token's end: what the token response said, else the catalogue's
        lifetime (`refresh_lifetime`) from `now`, else unknown (and without a refresh
        token, nothing to expire)."""
        if not credentials.get("refresh_token"):
            return UNKNOWN
        return credentials_expiry(
            refresh_lifetime(self.type, settings),
            granted_at=now,
            response_seconds=refresh_expires_in(credentials, now),
            new_refresh_token=new_refresh_token,
            previous=previous,
        )

    def plan(
        self, settings: Mapping[str, Any], credentials: Mapping[str, str], ctx: CheckContext
    ) -> OAuthPlan:
        """Endpoints and client of a connection: its settings over the provider's defaults."""
        return make_plan(self.provider, self.endpoints, settings, credentials, ctx)

    def client(self, plan: OAuthPlan, ctx: CheckContext) -> AsyncOAuth2Client:
        """Authlib's client for `plan` (see `session.make_client`)."""
        return make_client(plan, ctx)

    @property
    def access_tokens_last(self) -> bool:
        return self.endpoints is not None and self.endpoints.access_tokens_last

    # -- Connector --

    async def validate(self, conn: ConnectionSpec, ctx: CheckContext) -> CheckResult:
        run = Check(self, conn, ctx)
        try:
            async with run:
                await run.ensure_fresh()
                await run.verify()
        except CheckError as err:
            return CheckResult.from_error(run.safe(err), stored_version=run.version)
        return CheckResult.ok(
            stored_version=run.version,
            credentials=dict(run.creds) if run.unstored else None,
            identity=run.identity,
        )

    async def fetch(self, conn: ConnectionSpec, query: str, ctx: CheckContext) -> FetchResult:
        run = Check(self, conn, ctx)
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
        client = ProtocolClient(
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
        """Swap an authorization code for a token set (credentials; `expires_at` a string):
        `grant_code`'s credentials."""
        grant = await self.grant_code(
            conn_settings, ctx, code, redirect_uri, code_verifier, credentials=credentials
        )
        return grant.credentials

    async def grant_code(
        self,
        conn_settings: Mapping[str, Any],
        ctx: CheckContext,
        code: str,
        redirect_uri: str,
        code_verifier: str,
        *,
        credentials: Mapping[str, str] | None = None,
    ) -> CodeGrant:
        """Swap an authorization code for a token set and the identity it names.

        `credentials` may carry the connection's own `client_secret`. A token set without
        a refresh token is refused unless this provider's access tokens last; one whose
        ID token fails verification is refused (`invalid_id_token`).
        """
        plan = self.plan(conn_settings, credentials or {}, ctx)
        secrets = {code, code_verifier, plan.client_secret}
        try:
            token_url = require_token_client(plan)
            async with self.client(plan, ctx) as client:
                token = await exchange(
                    client.fetch_token(
                        token_url,
                        grant_type="authorization_code",
                        code=code,
                        redirect_uri=redirect_uri,
                        code_verifier=code_verifier,
                    ),
                    token_endpoint(plan),
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
            return CodeGrant(creds, await grant_identity(token, plan, ctx))
        except CheckError as err:
            raise safe_error(err, secrets) from None


def _summary(display_name: str, endpoints: ProviderEndpoints | None) -> tuple[str, str]:
    """What a connection of this provider needs, and how its check verifies the token (as
    `connectors.oauth2.check` does with the provider's defaults)."""
    if endpoints is None:
        return (
            "its own authorize and token URLs, an OAuth client, and consent",
            "refresh the token when due, then introspect it or GET the probe URL, as the "
            "connection sets",
        )
    if endpoints.introspection_url:
        verify = f"introspect it at {urlsplit(endpoints.introspection_url).netloc}"
    elif endpoints.probe_url:
        probe = urlsplit(endpoints.probe_url)
        verify = f"GET {probe.netloc}{probe.path}"
    else:
        verify = "nothing more (the refresh grant is the check)"
    needs = f"consent at {display_name} and the installation's OAuth app"
    return needs, f"refresh the token when due, then {verify}"
