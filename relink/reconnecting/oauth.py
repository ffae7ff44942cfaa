"""Reconnect through the provider's sign-in page: `start_oauth` stores a pending state
(its SHA-256 only; the PKCE verifier and the proposed changes encrypted; bound to the
connection and the user; 10 minutes; single use) and returns the authorization URL;
`finish_oauth` refuses an unknown, foreign, used or expired state, claims it with a
conditional UPDATE, exchanges the code and hands the token set to `replace.replace`;
`oauth_result` tells another process how a sign-in it started ended."""

from __future__ import annotations

import asyncio
import hashlib
import secrets as secrets_module
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

import connectors
from connectors.base import CheckError
from relink.app import Relink
from relink.directory import get_user
from relink.domain.words import AuthKind
from relink.errors import InvalidInput, VaultError
from relink.models import AuditEvent, Connection, OAuthState
from relink.reconnecting.errors import (
    OAuthStateRefused,
    as_failure,
)
from relink.reconnecting.form import (
    KIND_LABELS,
    Changes,
    propose,
)
from relink.reconnecting.replace import Reconnected, record_failure, replace
from relink.reconnecting.target import Target, authorize, connector_of, load_target
from relink.refreshing.results import RefreshPolicy
from relink.sweep.validate import CheckPolicy, make_context_factory
from relink.timeutil import utcnow

OAUTH_STATE_TTL = timedelta(minutes=10)
OAUTH_STATE_KEEP = timedelta(days=1)  # used or expired states are purged after this
# An authorization-code exchange replaces the whole token set; only these stored
# secrets are kept (a per-connection client secret is not part of the token set).
OAUTH_KEPT_SECRETS = frozenset({"client_secret"})


@dataclass(frozen=True)
class OAuthStart:
    connection_id: int
    url: str
    redirect_uri: str
    expires_at: datetime
    # the state in `url`, so a local callback listener can tell its callback from others
    state: str = field(repr=False, default="")


def _hash_state(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


OAUTH_RESULTS = ("connection.reconnected", "connection.reconnect_failed")


def oauth_result(app: Relink, state: str) -> tuple[str, dict[str, Any]] | None:
    """How a sign-in started here ended when another process finished it (the web pages'
    callback): the audit action (`OAUTH_RESULTS`) and its details; None while pending."""
    with app.sessions() as session:
        row = session.scalar(
            sa.select(OAuthState).where(OAuthState.state_hash == _hash_state(state))
        )
        if row is None or row.used_at is None:
            return None
        event = session.scalar(
            sa.select(AuditEvent)
            .where(
                AuditEvent.connection_id == row.connection_id,
                AuditEvent.action.in_(OAUTH_RESULTS),
                AuditEvent.at >= row.used_at,
            )
            .order_by(AuditEvent.id.desc())
            .limit(1)
        )
        return None if event is None else (event.action, dict(event.details or {}))


def _oauth_connector(conn: Connection) -> Any:
    connector = connector_of(conn)
    if connector.auth_kind is not AuthKind.OAUTH2:
        raise InvalidInput(
            f"connection {conn.id} ({conn.name!r}) uses {KIND_LABELS[connector.auth_kind]}: "
            "reconnect it "
            "with new secret values (`relink reconnect ID --as EMAIL`), not through OAuth"
        )
    return connector


def start_oauth(
    app: Relink,
    connection_id: int,
    *,
    actor: str,
    redirect_uri: str,
    now: datetime | None = None,
    settings: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
) -> OAuthStart:
    """Store a pending state for (connection, actor) and return the authorization URL.

    `settings` and `secrets` are the proposed changes (a new client, endpoints ...): the
    consent is asked with them, and they are applied when the callback succeeds."""
    now = now or utcnow()
    changes = Changes(dict(settings or {}), {k: v for k, v in (secrets or {}).items() if v})
    state = secrets_module.token_urlsafe(32)
    code_verifier = secrets_module.token_urlsafe(64)  # 86 characters, RFC 7636 allows 43-128
    with app.transaction() as session:
        user, conn = authorize(session, actor, connection_id)
        connector = _oauth_connector(conn)
        proposal = propose(connector, conn.settings or {}, changes)
        ctx = make_context_factory(
            app, CheckPolicy(timeout=app.settings.check_timeout), now=now, token_store=None
        )()
        try:
            url = connector.authorization_url(
                proposal.settings, ctx, redirect_uri, state, code_verifier
            )
        except CheckError as exc:
            raise InvalidInput(f"connection {conn.id}: {exc.message}") from None
        session.execute(sa.delete(OAuthState).where(OAuthState.expires_at < now - OAUTH_STATE_KEEP))
        expires_at = now + OAUTH_STATE_TTL
        sealed = {"code_verifier": code_verifier, "changes": changes.sealed()}
        session.add(
            OAuthState(
                state_hash=_hash_state(state),
                connection_id=conn.id,
                user_id=user.id,
                code_verifier=app.vault.encrypt(sealed),
                redirect_uri=redirect_uri,
                created_at=now,
                expires_at=expires_at,
            )
        )
    return OAuthStart(conn.id, url, redirect_uri, expires_at, state)


@dataclass(frozen=True)
class _Claimed:
    connection_id: int
    redirect_uri: str
    code_verifier: str = field(repr=False)
    changes: Changes


def _claim(
    app: Relink, state: str, actor: str, connection_id: int | None, now: datetime
) -> _Claimed:
    """Refuse a state that is unknown, foreign, used or expired; else mark it used."""
    restart = "start the reconnect again"
    with app.transaction() as session:
        user = get_user(session, actor)
        row = session.scalar(
            sa.select(OAuthState).where(OAuthState.state_hash == _hash_state(state))
        )
        if row is None:
            raise OAuthStateRefused(
                f"unknown sign-in state (not started here, or purged); {restart}", reason="unknown"
            )
        if row.user_id != user.id:
            raise OAuthStateRefused(
                f"this sign-in was started by another user; {restart} as yourself",
                reason="other_user",
            )
        if connection_id is not None and row.connection_id != connection_id:
            raise OAuthStateRefused(
                f"this sign-in was started for connection {row.connection_id}, not "
                f"{connection_id}; {restart}",
                reason="other_connection",
            )
        if row.used_at is not None:
            raise OAuthStateRefused(f"this sign-in was already used; {restart}", reason="replayed")
        if row.expires_at <= now:
            minutes = int(OAUTH_STATE_TTL.total_seconds() // 60)
            raise OAuthStateRefused(
                f"this sign-in expired (it is valid for {minutes} minutes); {restart}",
                reason="expired",
            )
        authorize(session, actor, row.connection_id)  # access may have changed meanwhile
        claimed = session.execute(
            sa.update(OAuthState)
            .where(
                OAuthState.id == row.id,
                OAuthState.used_at.is_(None),
                OAuthState.expires_at > now,
                OAuthState.user_id == user.id,
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # another callback claimed it between our read and update
            raise OAuthStateRefused(f"this sign-in was already used; {restart}", reason="replayed")
        sealed = _unseal(app, row, restart)
        return _Claimed(
            row.connection_id,
            row.redirect_uri,
            sealed["code_verifier"],
            Changes.unsealed(sealed.get("changes")),
        )


def _unseal(app: Relink, row: OAuthState, restart: str) -> dict[str, str]:
    """The stored PKCE verifier and proposed changes; a lost or undecryptable verifier (a
    key dropped without `relink keys rotate`) refuses the state: without it no provider
    gives tokens."""
    try:
        stored = app.vault.decrypt(row.code_verifier, connection=str(row.connection_id))
    except VaultError:
        stored = {}
    if not stored.get("code_verifier"):
        raise OAuthStateRefused(
            "the PKCE code verifier of this sign-in is missing or does not decrypt with the "
            f"configured keys; {restart}",
            reason="no_verifier",
        )
    return stored


async def finish_oauth(
    app: Relink,
    *,
    state: str,
    code: str,
    actor: str,
    connection_id: int | None = None,
    now: datetime | None = None,
    refresh: bool = True,
    policy: RefreshPolicy | None = None,
    replace_account: bool = False,
    hold: bool = False,
) -> Reconnected:
    """The callback: claim the state, exchange the code, then reconnect with the tokens
    and the changes proposed when the sign-in started. Tokens of another account than the
    connection's need `replace_account`, else `AccountReplacement` (held for a later
    confirmation when `hold`: the code cannot be exchanged twice).

    `connection_id` is the connection the callback is for (the page's, or the CLI's
    argument); a state started for another one is refused.
    """
    now = now or utcnow()
    if not state or not code:
        raise InvalidInput("the callback has no state or no code; start the reconnect again")
    claimed = await asyncio.to_thread(_claim, app, state, actor, connection_id, now)
    changes = claimed.changes
    target = await asyncio.to_thread(load_target, app, actor, claimed.connection_id)
    connector = connectors.get(target.type)
    proposal = propose(connector, target.settings, changes)
    ctx = make_context_factory(
        app, CheckPolicy(timeout=app.settings.check_timeout), now=now, token_store=None
    )()
    try:
        grant = await connector.grant_code(
            proposal.settings,
            ctx,
            code,
            claimed.redirect_uri,
            claimed.code_verifier,
            credentials={**target.credentials, **changes.secrets},  # the connection's client
        )
    except CheckError as exc:  # refused, misconfigured or unreachable: nothing changes
        failed = as_failure(exc, claimed.connection_id)
        await asyncio.to_thread(record_failure, app, target, failed, proposal, now=now)
        raise failed from None

    def build(current: Target) -> dict[str, str]:
        kept = {k: v for k, v in current.credentials.items() if k in OAUTH_KEPT_SECRETS}
        fresh = {k: str(v) for k, v in grant.credentials.items() if v}
        return {**kept, **changes.secrets, **fresh}

    return await replace(
        app,
        actor,
        claimed.connection_id,
        build,
        changes,
        now=now,
        refresh=refresh,
        policy=policy,
        told=grant.identity,
        replace_account=replace_account,
        hold=hold,
    )
