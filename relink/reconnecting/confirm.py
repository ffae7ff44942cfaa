"""A reconnect that replaces the connection's account waits for its user: "This replaces
max@acme.test with ann@acme.test". The web pages cannot ask before the provider's consent
(only the new tokens tell whose they are) and an authorization code cannot be exchanged
twice, so the validated reconnect is held (`hold_replacement`): the new credentials and
proposed changes encrypted with the vault in a pending row of `oauth_states` (only the
SHA-256 of its confirmation token is stored; bound to the connection and the user; 10
minutes; single use). `confirm_replacement` claims it with a conditional UPDATE and commits
through `replace.replace` (validated again; the source must still name the account shown).
Nothing is stored for a confirmation that never comes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets as secrets_module
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from relink.app import Relink
from relink.directory import get_user
from relink.domain.identity import Identity
from relink.errors import InvalidInput, VaultError
from relink.models import OAuthState
from relink.reconnecting.errors import NOTHING_CHANGED, AccountReplacement
from relink.reconnecting.form import Changes
from relink.reconnecting.replace import Reconnected, replace
from relink.reconnecting.target import Target, authorize
from relink.refreshing.results import RefreshPolicy
from relink.timeutil import utcnow

CONFIRM_TTL = timedelta(minutes=10)
HELD = "replacement"  # the sealed row's kind: never a sign-in's state


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hold_replacement(
    app: Relink,
    target: Target,
    credentials: Mapping[str, str],
    changes: Changes,
    account: Identity,
    *,
    now: datetime,
) -> str:
    """Keep a validated reconnect for its user's confirmation; the token that confirms it."""
    token = secrets_module.token_urlsafe(32)
    sealed = {
        "kind": HELD,
        "credentials": json.dumps(dict(credentials)),
        "changes": changes.sealed(),
        "account": json.dumps(account.as_dict()),
    }
    with app.transaction() as session:
        session.add(
            OAuthState(
                state_hash=_hash(token),
                connection_id=target.connection_id,
                user_id=target.actor_id,
                code_verifier=app.vault.encrypt(sealed),
                redirect_uri="",
                created_at=now,
                expires_at=now + CONFIRM_TTL,
            )
        )
    return token


def held_replacement(
    app: Relink, token: str, *, actor: str, connection_id: int, now: datetime | None = None
) -> AccountReplacement | None:
    """The replacement a token holds for `actor` on `connection_id`, to show again (not
    claimed); None when there is none (unknown, another's, used or expired)."""
    now = now or utcnow()
    if not token:
        return None
    with app.sessions() as session:
        user = get_user(session, actor)
        row = session.scalar(sa.select(OAuthState).where(OAuthState.state_hash == _hash(token)))
        if row is None or row.user_id != user.id or row.connection_id != connection_id:
            return None
        if row.used_at is not None or row.expires_at <= now:
            return None
        _, conn = authorize(session, actor, connection_id)
        try:
            sealed = app.vault.decrypt(row.code_verifier, connection=str(connection_id))
        except VaultError:
            return None
        before = conn.identity
        if sealed.get("kind") != HELD or before is None:
            return None
        account = json.loads(sealed["account"])
        after = Identity(account["subject"], account["label"])
        return AccountReplacement(connection_id, before, after, token=token)


@dataclass(frozen=True)
class _Held:
    credentials: dict[str, str] = field(repr=False)
    changes: Changes
    account: Identity


def _claim(app: Relink, token: str, actor: str, connection_id: int, now: datetime) -> _Held:
    """Refuse a confirmation that is unknown, another user's or connection's, used or
    expired (one line each); else mark it used and return what it holds."""
    again = f"{NOTHING_CHANGED}; reconnect again"
    with app.transaction() as session:
        user = get_user(session, actor)
        row = session.scalar(sa.select(OAuthState).where(OAuthState.state_hash == _hash(token)))
        if row is None or row.user_id != user.id or row.connection_id != connection_id:
            raise InvalidInput(f"this confirmation is not one you started here; {again}")
        if row.used_at is not None or row.expires_at <= now:
            minutes = int(CONFIRM_TTL.total_seconds() // 60)
            raise InvalidInput(
                f"this confirmation was already used or has expired (it is valid for "
                f"{minutes} minutes); {again}"
            )
        authorize(session, actor, connection_id)  # access may have changed meanwhile
        claimed = session.execute(
            sa.update(OAuthState)
            .where(OAuthState.id == row.id, OAuthState.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:
            raise InvalidInput(f"this confirmation was already used; {again}")
        try:
            sealed = app.vault.decrypt(row.code_verifier, connection=str(connection_id))
        except VaultError:
            sealed = {}
        if sealed.get("kind") != HELD:
            raise InvalidInput(f"this confirmation holds no reconnect; {again}")
        account = json.loads(sealed["account"])
        return _Held(
            json.loads(sealed["credentials"]),
            Changes.unsealed(sealed.get("changes")),
            Identity(account["subject"], account["label"]),
        )


async def confirm_replacement(
    app: Relink,
    token: str,
    *,
    actor: str,
    connection_id: int,
    now: datetime | None = None,
    refresh: bool = True,
    policy: RefreshPolicy | None = None,
) -> Reconnected:
    """The user confirmed "This replaces … with …": commit the held reconnect."""
    now = now or utcnow()
    if not token:
        raise InvalidInput(f"the confirmation has no token; {NOTHING_CHANGED}; reconnect again")
    held = await asyncio.to_thread(_claim, app, token, actor, connection_id, now)
    return await replace(
        app,
        actor,
        connection_id,
        lambda _target: dict(held.credentials),
        held.changes,
        now=now,
        refresh=refresh,
        policy=policy,
        told=held.account,
        replace_account=True,
        confirmed=held.account,
    )
