"""Where an OAuth refresh token is spent: the token set as stored credentials
(`token_credentials`, `expires_at` from the caller's clock), when it needs a refresh
(`needs_refresh`), and `TokenRun`, which runs the refresh-token grant through the core's
token store (`relink.tokens`: one refresh per connection at a time, persisted before use)
and, after an ``invalid_grant``, takes the set another run rotated first."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from connectors.base import (
    AuthFailed,
    CheckContext,
    CheckError,
    ConnectionSpec,
    Credentials,
    Unreachable,
)
from connectors.http import safe_error
from connectors.oauth2.errors import TokenEndpointError, require_token_client
from connectors.oauth2.plan import OAuthPlan
from connectors.oauth2.session import AsyncOAuth2Client, exchange, make_client, token_endpoint
from connectors.outcomes import BAD_RESPONSE, NO_REFRESH_TOKEN

if TYPE_CHECKING:
    from connectors.oauth2.connector import OAuth2Connector

TOKEN_SET = ("access_token", "refresh_token", "expires_at", "refresh_expires_at")
# Where a token response tells the refresh token's lifetime in seconds: RFC-less but
# common (`refresh_token_expires_in`: Microsoft B2C, GitHub apps), Intuit's
# `x_refresh_token_expires_in`, Airtable's `refresh_expires_in`.
REFRESH_LIFETIME_KEYS = (
    "refresh_token_expires_in",
    "x_refresh_token_expires_in",
    "refresh_expires_in",
)


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
    creds = {k: v for k, v in base.items() if k not in TOKEN_SET}
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
    refresh_expiry = _refresh_expires_at(token, now)
    if refresh_expiry is not None:
        creds["refresh_expires_at"] = refresh_expiry
    elif not token.get("refresh_token") and base.get("refresh_expires_at"):
        creds["refresh_expires_at"] = str(base["refresh_expires_at"])  # the same token's end
    if token.get("instance_url"):
        creds["instance_url"] = str(token["instance_url"])
    return creds


def _refresh_expires_at(token: Mapping[str, Any], now: datetime) -> str | None:
    """The refresh token's end (epoch seconds) when the response tells it, else None."""
    for key in REFRESH_LIFETIME_KEYS:
        raw = token.get(key)
        if raw in (None, ""):
            continue
        try:
            seconds = float(raw)
        except (TypeError, ValueError):
            return None  # unreadable: unknown, never a reason to refuse the tokens
        return str(int(now.timestamp() + seconds)) if seconds > 0 else None
    return None


def refresh_expires_in(credentials: Credentials, now: datetime) -> float | None:
    """Seconds from `now` to the refresh token's end as its provider said, or None."""
    raw = credentials.get("refresh_expires_at")
    try:
        return float(raw) - now.timestamp() if raw not in (None, "") else None
    except ValueError:
        return None


class TokenRun:
    """The tokens of one validate/fetch: the current credentials, the refresh that spends
    a refresh token (through the token store, under its lock), what was stored, and
    every secret seen (for scrubbing). Used as ``async with``: it holds the client."""

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
        self._plan: OAuthPlan | None = None
        self._client: AsyncOAuth2Client | None = None
        self._owned: AsyncOAuth2Client | None = None  # made for this run, closed after it

    # -- lifecycle --

    async def __aenter__(self) -> Self:
        plan = self._plan = self.connector.plan(self.conn.settings, self.creds, self.ctx)
        if plan.client_secret:
            self.secrets.add(plan.client_secret)
        shared = self.ctx.clients
        if shared is None:
            self._client = self._owned = make_client(plan, self.ctx)
        else:
            key = (AsyncOAuth2Client, plan.client_key, self.ctx.timeout)
            self._client = shared.get(key, lambda: make_client(plan, self.ctx))
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

    @property
    def plan(self) -> OAuthPlan:
        """The connection's endpoints and client (set on entering)."""
        assert self._plan is not None
        return self._plan

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
        p = self.plan
        return bool(self.creds.get("refresh_token") and p.token_url and p.client_id)

    async def grant(self, stored: Credentials) -> Credentials:
        """The refresh-token grant on `stored` (called by the token store, under its lock)."""
        p = self.plan
        refresh_token = stored.get("refresh_token")
        if not refresh_token:
            raise AuthFailed(
                NO_REFRESH_TOKEN,
                "the access token is missing or expired and there is no refresh token",
            )
        token_url = require_token_client(p)
        self._remember(stored)
        self.spent_refresh = refresh_token
        token = await exchange(
            self.client.refresh_token(token_url, refresh_token=refresh_token),
            token_endpoint(p),
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
            if err.code != TokenEndpointError.INVALID_GRANT:
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
        """Refresh an access token that is missing or about to expire, and a refresh
        token the sweep keeps alive (`ConnectionSpec.keep_alive`)."""
        if needs_refresh(self.creds, self.ctx.now, self.ctx.refresh_window) or (
            self.conn.keep_alive and self.can_refresh()
        ):
            await self.refresh()

    def may_retry(self) -> bool:
        """One refresh after a rejected token, unless the token is already our own."""
        return not self.retried and not self.minted and self.can_refresh()
