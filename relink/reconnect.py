"""Reconnect: new credentials, and new values for the settings the owner can fix, for a
broken (or any) connection, validated together before they replace the old ones.
Prefect-free: the CLI, the reconnect-connection flow and the web pages use it.

    form = reconnect_form(app, 7, actor="max@acme.test")  # what to ask, current values
    reconnect_with_secrets(app, 7, actor=..., secrets={"password": ...},
                           settings={"username": "reader"})
    start = start_oauth(app, 7, actor=..., redirect_uri=...)   # -> start.url
    finish_oauth(app, state=..., code=..., actor=..., connection_id=7)
    recheck(app, 7, requested_by=...)   # the stored credentials, checked again

What a reconnect does:

1. Access: admins, the owner and users the connection is shared with
   (`access.can_reconnect`). Someone who cannot see the connection gets NotFound (no
   hint it exists); someone who can see but not reconnect gets PermissionDenied.
2. What may change is the connector's declaration (`Connector.reconnect_fields`: for a
   database the host, port, database, username and password; for an API key the key
   and base URL; for OAuth the consent, plus the connection's own client and the
   generic provider's endpoints). Anything else, an empty required value or settings
   the connector calls unusable are `InvalidInput` before the source is asked.
3. The new settings and credentials are validated together with the connector (no
   token store: nothing is persisted by the validation, and an OAuth token that has
   not expired is not refreshed, which would spend the new refresh token). When the
   validation had to refresh anyway (the new access token was already inactive), the
   refreshed set is what is stored. Refused -> `CredentialsRefused`; the installation
   is wrong (the OAuth app refused) -> `InstallationMisconfigured`; the source could
   not be asked -> `SourceUnreachable`. Either way nothing changes but the audit trail,
   which records `connection.reconnect_failed` (who, the outcome and code, which
   settings were to change and which secrets were entered: names, never secret values).
4. One transaction: the check's state rules record an `ok` outcome
   (`checks.record_batch`: status connected, invalid_since and last error cleared, the
   open Disconnection closed, `connection.status_changed`), the settings and the
   credentials (encrypted) are replaced, the reconnecting user becomes the owner
   ("Created By") when different (the previous owner keeps it, shared with them, unless
   deactivated: `people.keep_access`), and `connection.reconnected` names who, the previous
   owner and the changed settings. The connection's version must be the one validated
   against; when someone changed it meanwhile the credentials are validated again
   once, then `Conflict`.
5. The connection's datasets are refreshed (`relink.refresh`).

OAuth: `start_oauth` takes the proposed changes (a new client, endpoints ...), builds
the provider's authorization URL with them and stores a pending state (only its
SHA-256; the PKCE code_verifier and the proposed changes encrypted; bound to the
connection and the user; 10 minutes; single use). `finish_oauth` refuses an unknown,
foreign (another user or connection), used or expired state before anything else,
claims it with a conditional UPDATE (the row count decides), exchanges the code (a
token set without a refresh token is refused unless the provider's access tokens
last) and goes on at step 3 with the new token set and the proposed changes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import secrets as secrets_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

import connectors
from connectors.base import CheckError, CheckResult, ConnectionSpec, Connector, Field
from relink import audit
from relink.access import can_reconnect
from relink.app import Relink
from relink.checks import check_range, record_batch
from relink.connections import get_visible, ref_of
from relink.directory import get_actor, get_user, viewer_of
from relink.domain.broken import is_broken
from relink.domain.words import AuthKind, Outcome, Status
from relink.emailing.sender import DisconnectionEmailed, email_disconnection
from relink.errors import Conflict, InvalidInput, PermissionDenied, RelinkError, VaultError
from relink.models import AuditEvent, Connection, Dataset, OAuthState, User
from relink.people import keep_access
from relink.refresh import RefreshPolicy, RefreshSummary, refresh_many
from relink.sweep.validate import Checked, CheckPolicy, make_context_factory
from relink.timeutil import utcnow

OAUTH_STATE_TTL = timedelta(minutes=10)
OAUTH_STATE_KEEP = timedelta(days=1)  # used or expired states are purged after this
# An authorization-code exchange replaces the whole token set; only these stored
# secrets are kept (a per-connection client secret is not part of the token set).
OAUTH_KEPT_SECRETS = frozenset({"client_secret"})
KIND_LABELS = {
    AuthKind.PASSWORD: "a password",
    AuthKind.API_KEY: "an API key",
    AuthKind.OAUTH2: "OAuth",
}
NOTHING_CHANGED = "nothing was changed"


# --- errors ---------------------------------------------------------------------------


class ReconnectFailed(RelinkError):
    """The new credentials did not work; nothing was changed."""

    outcome: Outcome

    def __init__(self, message: str, *, code: str | None) -> None:
        super().__init__(message)
        self.code = code


class CredentialsRefused(ReconnectFailed):
    """The source refused the new credentials (wrong password, revoked key, invalid_grant)."""

    outcome = Outcome.AUTH_FAILED


class SourceUnreachable(ReconnectFailed):
    """The source could not be asked whether the new credentials work (an outage)."""

    outcome = Outcome.UNREACHABLE


class InstallationMisconfigured(ReconnectFailed):
    """The installation is wrong (the OAuth app refused): no credentials can help."""

    outcome = Outcome.MISCONFIGURED


class OAuthStateRefused(RelinkError):
    """An OAuth callback whose state is unknown, foreign, already used or expired."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _failed(error: CheckError | CheckResult, connection_id: int) -> ReconnectFailed:
    code = error.code
    if error.outcome is Outcome.AUTH_FAILED:
        return CredentialsRefused(
            f"connection {connection_id}: the source refused the new credentials "
            f"({error.message}); nothing was changed",
            code=code,
        )
    if error.outcome is Outcome.MISCONFIGURED:
        return InstallationMisconfigured(
            f"connection {connection_id}: Relink's own setup for this source is wrong "
            f"({error.message}); nothing was changed",
            code=code,
        )
    return SourceUnreachable(
        f"connection {connection_id}: could not reach the source to validate the new "
        f"credentials ({error.message}); nothing was changed, try again later",
        code=code,
    )


# --- results --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reconnected:
    connection_id: int
    connection: str
    by: str  # the reconnecting user's email
    previous_owner: str
    owner: str
    status_before: str
    disconnection_closed: bool
    changed: tuple[str, ...] = ()  # the settings the reconnect changed
    refresh: RefreshSummary | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "connection_id": self.connection_id,
            "connection": self.connection,
            "by": self.by,
            "previous_owner": self.previous_owner,
            "owner": self.owner,
            "status_before": self.status_before,
            "disconnection_closed": self.disconnection_closed,
            "changed": list(self.changed),
            "refresh": self.refresh.as_dict() if self.refresh else None,
        }


@dataclass(frozen=True)
class OAuthStart:
    connection_id: int
    url: str
    redirect_uri: str
    expires_at: datetime
    # the state in `url`, so a local callback listener can tell its callback from others
    state: str = field(repr=False, default="")


@dataclass(frozen=True)
class Rechecked:
    """The stored credentials checked again (the reconnect-connection flow's first step)."""

    connection_id: int
    connection: str
    outcome: str  # ok | auth_failed | unreachable | error | skipped
    code: str | None
    message: str | None
    status: str
    owner: str
    owner_name: str
    reconnect_url: str | None  # where the owner reconnects, when still broken
    disconnection_closed: bool
    requested_by_id: int | None = None  # who asked: the actor of what follows (a refresh)

    @property
    def connected(self) -> bool:
        return self.status == Status.CONNECTED

    def as_dict(self) -> dict[str, Any]:
        return {
            "connection_id": self.connection_id,
            "connection": self.connection,
            "outcome": self.outcome,
            "code": self.code,
            "message": self.message,
            "status": self.status,
            "owner": self.owner,
            "reconnect_url": self.reconnect_url,
            "disconnection_closed": self.disconnection_closed,
        }


def reconnect_url(app: Relink, connection_id: int) -> str:
    """The connection's page, where its owner reconnects it."""
    return f"{app.settings.base_url.rstrip('/')}/connections/{connection_id}"


# --- access ---------------------------------------------------------------------------


def authorize(session: Session, actor_email: str, connection_id: int) -> tuple[User, Connection]:
    """The actor and the connection they may reconnect (NotFound / PermissionDenied)."""
    actor = get_actor(session, actor_email)
    viewer = viewer_of(actor)
    conn = get_visible(session, viewer, connection_id)
    if not can_reconnect(viewer, ref_of(conn)):
        raise PermissionDenied(
            f"you may see connection {conn.id} ({conn.name!r}) but not reconnect it; ask its "
            "owner or an admin"
        )
    return actor, conn


def _connector(conn: Connection) -> Connector:
    try:
        return connectors.get(conn.type)
    except connectors.UnknownConnector as exc:
        raise InvalidInput(f"connection {conn.id}: {exc}") from None


# --- what a reconnect asks for ------------------------------------------------------------


@dataclass(frozen=True)
class ReconnectForm:
    """What a reconnect of one connection asks for: the settings it may change with their
    current values (pre-filled), the secrets to enter anew (never shown), and the other
    settings, which only show what the connection uses."""

    connection_id: int
    connection: str
    type: str
    provider_name: str
    kind: AuthKind
    settings: tuple[tuple[Field, str], ...]
    secrets: tuple[Field, ...]
    fixed: tuple[tuple[Field, str], ...]

    @property
    def oauth(self) -> bool:
        return self.kind is AuthKind.OAUTH2


def form_of(conn: Connection) -> ReconnectForm:
    """The form of a connection the caller may reconnect (see `reconnect_form`)."""
    connector = _connector(conn)
    current = conn.settings or {}
    asked = connector.reconnect_fields(current)
    names = {f.name for f in asked}
    return ReconnectForm(
        connection_id=conn.id,
        connection=conn.name,
        type=conn.type,
        provider_name=connector.display_name,
        kind=connector.auth_kind,
        settings=tuple((f, _value(f, current.get(f.name))) for f in asked if not f.secret),
        secrets=tuple(f for f in asked if f.secret),
        fixed=tuple(
            (f, str(current[f.name]))
            for f in connector.fields
            if not f.secret and f.name not in names and current.get(f.name) not in (None, "")
        ),
    )


def reconnect_form(app: Relink, actor: str, connection_id: int) -> ReconnectForm:
    """What to ask `actor` for (after the access check), for prompts and pages."""
    with app.sessions() as session:
        _, conn = authorize(session, actor, connection_id)
        return form_of(conn)


def _value(spec: Field, value: Any) -> str:
    """A setting as the connection uses it: its default when it has none."""
    text = "" if value is None else str(value).strip()
    return text or spec.default or ""


@dataclass(frozen=True)
class Changes:
    """What a reconnect proposes besides the credentials the source hands out: new values
    of settings (unchanged ones may be included) and newly entered secrets."""

    settings: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)

    def sealed(self) -> str:
        return json.dumps({"settings": dict(self.settings), "secrets": dict(self.secrets)})

    @classmethod
    def unsealed(cls, text: str | None) -> Changes:
        data = json.loads(text) if text else {}
        return cls(data.get("settings", {}), data.get("secrets", {}))


@dataclass(frozen=True)
class _Proposal:
    """The settings after the changes, and what changed: [old, new] per setting."""

    settings: dict[str, str]
    changed: dict[str, list[str | None]]
    secrets: tuple[str, ...]  # the names of the secrets entered


def _propose(connector: Connector, current: Mapping[str, Any], changes: Changes) -> _Proposal:
    """Apply `changes` to the current settings; InvalidInput for what a reconnect may not
    change, an empty required value or settings the connector calls unusable."""
    allowed = {f.name: f for f in connector.reconnect_fields(current)}
    named = [(name, False) for name in changes.settings] + [(n, True) for n in changes.secrets]
    for name, secret in named:
        spec = allowed.get(name)
        if spec is None or spec.secret != secret:
            may = ", ".join(f.name for f in allowed.values()) or "only the credentials"
            raise InvalidInput(
                f"a reconnect of a {connector.display_name} connection cannot change "
                f"{name!r}; it may change: {may}"
            )
    settings = {k: str(v) for k, v in current.items()}
    changed: dict[str, list[str | None]] = {}
    for name, spec in allowed.items():  # in the connector's order
        if name not in changes.settings:
            continue
        value = str(changes.settings[name]).strip()
        if value == _value(spec, current.get(name)):
            continue
        if not value and spec.required and spec.default is None:
            raise InvalidInput(f"{spec.label} may not be empty; {NOTHING_CHANGED}")
        if value:
            settings[name] = value
        else:
            settings.pop(name, None)
        changed[name] = [current.get(name), value or None]
    problem = connector.settings_problem(settings) if changed else None
    if problem:
        raise InvalidInput(f"{problem}; {NOTHING_CHANGED}")
    return _Proposal(settings, changed, tuple(sorted(n for n, v in changes.secrets.items() if v)))


# --- validate, then write -------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """What the validation needs: read in one session, used outside it."""

    actor_id: int
    actor_email: str
    connection_id: int
    connection: str
    type: str
    provider: str
    settings: Mapping[str, Any]
    credentials: Mapping[str, str]  # the stored ones
    version: int
    status: str


def _target(app: Relink, actor_email: str, connection_id: int) -> _Target:
    with app.sessions() as session:
        actor, conn = authorize(session, actor_email, connection_id)
        connector = _connector(conn)
        credentials = app.vault.decrypt(conn.credentials, connection=f"{conn.id} ({conn.name!r})")
        return _Target(
            actor_id=actor.id,
            actor_email=actor.email,
            connection_id=conn.id,
            connection=conn.name,
            type=conn.type,
            provider=connector.provider,
            settings=dict(conn.settings),
            credentials=credentials,
            version=conn.version,
            status=conn.status,
        )


class _Stale(Exception):
    pass


async def _validate(
    app: Relink,
    target: _Target,
    settings: Mapping[str, Any],
    credentials: Mapping[str, str],
    now: datetime,
) -> Mapping[str, str]:
    """The credentials to store: `credentials`, or the set their validation refreshed."""
    connector = connectors.get(target.type)
    spec = ConnectionSpec(target.connection_id, target.type, settings, credentials, target.version)
    # No refresh ahead of expiry (window 0): the validation stores nothing, so a refresh
    # here would spend the new refresh token (providers rotate it) for nothing. A token
    # set fresh from the provider is checked as it is, even one that lives only a minute;
    # one already inactive is refreshed, and the result carries the refreshed set.
    policy = CheckPolicy(timeout=app.settings.check_timeout, refresh_window=0.0)
    make_ctx = make_context_factory(app, policy, now=now, token_store=None)
    try:
        result = await connector.validate(spec, make_ctx())
    except Exception as exc:  # noqa: BLE001 - a broken connector is reported, never a traceback
        result = CheckResult(
            Outcome.UNREACHABLE,
            "error",
            f"the {target.type} connector failed: {type(exc).__name__}",
        )
    if result.outcome is not Outcome.OK:
        raise _failed(result, target.connection_id)
    return result.credentials or credentials


def _commit(
    app: Relink,
    target: _Target,
    proposal: _Proposal,
    credentials: Mapping[str, str],
    *,
    now: datetime,
) -> Reconnected:
    method = str(connectors.get(target.type).auth_kind)
    with app.transaction() as session:
        # The check's state rules, exactly as a successful check applies them; the row
        # is locked and its version compared (skipped = changed since we read it).
        outcome = CheckResult.ok("reconnected with new credentials")
        checked = Checked(target.connection_id, target.provider, outcome, target.version)
        summary = record_batch(session, [checked], [], now=now, actor_id=target.actor_id)
        if summary.skipped:
            raise _Stale
        conn = session.get(Connection, target.connection_id)
        actor = session.get(User, target.actor_id)
        assert conn is not None and actor is not None
        previous_owner = conn.owner.email
        if proposal.changed:
            conn.settings = proposal.settings
        conn.credentials = app.vault.encrypt(credentials)
        conn.updated_at = now
        if conn.owner_id != actor.id:
            keep_access(session, conn, conn.owner, actor=actor, now=now)  # shared with them
            conn.owner = actor
        audit.record(
            session,
            "connection.reconnected",
            at=now,
            connection=conn,
            actor=actor,
            method=method,
            previous_owner=previous_owner,
            owner=actor.email,
            status_before=target.status,
            disconnection_closed=summary.closed > 0,
            changed=proposal.changed,
        )
        return Reconnected(
            connection_id=conn.id,
            connection=conn.name,
            by=actor.email,
            previous_owner=previous_owner,
            owner=actor.email,
            status_before=target.status,
            disconnection_closed=summary.closed > 0,
            changed=tuple(proposal.changed),
        )


def _record_failure(
    app: Relink,
    target: _Target,
    failed: ReconnectFailed,
    proposal: _Proposal,
    *,
    now: datetime,
) -> None:
    """`connection.reconnect_failed`: who tried, what the source said, what was to change."""
    with app.transaction() as session:
        audit.record(
            session,
            "connection.reconnect_failed",
            at=now,
            connection=session.get(Connection, target.connection_id),
            actor=session.get(User, target.actor_id),
            method=str(connectors.get(target.type).auth_kind),
            outcome=str(failed.outcome),
            code=failed.code,
            changed=proposal.changed,
            secrets_entered=list(proposal.secrets),
        )


async def _replace(
    app: Relink,
    actor: str,
    connection_id: int,
    new_credentials: Callable[[_Target], dict[str, str]],
    changes: Changes,
    *,
    now: datetime,
    refresh: bool,
    policy: RefreshPolicy | None,
) -> Reconnected:
    """Validate, write (once more on a version conflict), refresh.

    `new_credentials(target)` builds the credentials from what is stored now; `changes`
    apply to the settings stored now. A refused or unreachable validation is recorded.
    """
    validated: Mapping[str, str] = {}  # after a conflict: the set validated (maybe refreshed)
    for attempt in range(2):
        target = await asyncio.to_thread(_target, app, actor, connection_id)
        proposal = _propose(connectors.get(target.type), target.settings, changes)
        credentials = {**new_credentials(target), **validated}
        try:
            validated = await _validate(app, target, proposal.settings, credentials, now)
        except ReconnectFailed as failed:
            await asyncio.to_thread(_record_failure, app, target, failed, proposal, now=now)
            raise
        try:
            done = await asyncio.to_thread(_commit, app, target, proposal, validated, now=now)
            break
        except (_Stale, StaleDataError):  # the version moved between our check and write
            if attempt:
                raise Conflict(
                    f"connection {connection_id} changed twice while it was being reconnected "
                    f"(a check or another reconnect); {NOTHING_CHANGED}, try again"
                ) from None
    if not refresh:
        return done
    summary = await refresh_connection(app, connection_id, policy=policy, actor_id=target.actor_id)
    return dataclasses.replace(done, refresh=summary)


async def refresh_connection(
    app: Relink,
    connection_id: int,
    *,
    policy: RefreshPolicy | None = None,
    actor_id: int | None = None,
) -> RefreshSummary:
    with app.sessions() as session:
        ids = list(
            session.scalars(
                sa.select(Dataset.id)
                .where(Dataset.connection_id == connection_id)
                .order_by(Dataset.id)
            )
        )
    return await refresh_many(app, ids, policy=policy, actor_id=actor_id)


# --- password / API key ---------------------------------------------------------------------


def _typed_secrets_form(app: Relink, actor: str, connection_id: int) -> ReconnectForm:
    """The form of a connection reconnected with typed secrets (after the access check)."""
    form = reconnect_form(app, actor, connection_id)
    if form.oauth:
        raise InvalidInput(
            f"connection {form.connection_id} ({form.connection!r}) signs in with OAuth: "
            "reconnect it through the provider's sign-in page, not with typed secrets"
        )
    return form


async def reconnect_with_secrets(
    app: Relink,
    connection_id: int,
    *,
    actor: str,
    secrets: Mapping[str, str],
    settings: Mapping[str, str] | None = None,
    now: datetime | None = None,
    refresh: bool = True,
    policy: RefreshPolicy | None = None,
) -> Reconnected:
    """Reconnect a password or API-key connection with new secret values and, optionally,
    new values of the settings a reconnect may change."""
    now = now or utcnow()
    # access and kind, before anything else
    form = await asyncio.to_thread(_typed_secrets_form, app, actor, connection_id)
    for spec in form.secrets:
        if spec.required and not secrets.get(spec.name):
            raise InvalidInput(f"Enter the new {spec.label.lower()}; {NOTHING_CHANGED}.")
    changes = Changes(dict(settings or {}), {k: v for k, v in secrets.items() if v})
    return await _replace(
        app,
        actor,
        connection_id,
        lambda _target: dict(changes.secrets),
        changes,
        now=now,
        refresh=refresh,
        policy=policy,
    )


# --- OAuth ----------------------------------------------------------------------------------


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
    connector = _connector(conn)
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
        proposal = _propose(connector, conn.settings or {}, changes)
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
) -> Reconnected:
    """The callback: claim the state, exchange the code, then reconnect with the tokens
    and the changes proposed when the sign-in started.

    `connection_id` is the connection the callback is for (the page's, or the CLI's
    argument); a state started for another one is refused.
    """
    now = now or utcnow()
    if not state or not code:
        raise InvalidInput("the callback has no state or no code; start the reconnect again")
    claimed = await asyncio.to_thread(_claim, app, state, actor, connection_id, now)
    changes = claimed.changes
    target = await asyncio.to_thread(_target, app, actor, claimed.connection_id)
    connector = connectors.get(target.type)
    proposal = _propose(connector, target.settings, changes)
    ctx = make_context_factory(
        app, CheckPolicy(timeout=app.settings.check_timeout), now=now, token_store=None
    )()
    try:
        tokens = await connector.exchange_code(
            proposal.settings,
            ctx,
            code,
            claimed.redirect_uri,
            claimed.code_verifier,
            credentials={**target.credentials, **changes.secrets},  # the connection's client
        )
    except CheckError as exc:  # refused, misconfigured or unreachable: nothing changes
        failed = _failed(exc, claimed.connection_id)
        await asyncio.to_thread(_record_failure, app, target, failed, proposal, now=now)
        raise failed from None

    def build(current: _Target) -> dict[str, str]:
        kept = {k: v for k, v in current.credentials.items() if k in OAUTH_KEPT_SECRETS}
        return {**kept, **changes.secrets, **{k: str(v) for k, v in tokens.items() if v}}

    return await _replace(
        app,
        actor,
        claimed.connection_id,
        build,
        changes,
        now=now,
        refresh=refresh,
        policy=policy,
    )


# --- check the stored credentials again ------------------------------------------------------


async def recheck(
    app: Relink,
    connection_id: int,
    *,
    requested_by: str,
    now: datetime | None = None,
    policy: CheckPolicy | None = None,
) -> Rechecked:
    """Check the stored credentials through the check sweep (same state rules, same
    recording): the problem may have been fixed at the source."""
    now = now or utcnow()
    actor_id = await asyncio.to_thread(_authorized, app, requested_by, connection_id)
    policy = policy or CheckPolicy(timeout=app.settings.check_timeout, backoff=1.0)
    summary = await check_range(
        app,
        connection_id - 1,
        connection_id,
        now=now,
        policy=policy,
        only=[connection_id],
        actor_id=actor_id,
    )
    outcome = next((k for k, v in summary.outcomes.items() if v), "skipped")
    code = next((key.split("|")[2] or None for key in summary.by_provider), None)
    with app.sessions() as session:
        conn = session.get(Connection, connection_id)
        assert conn is not None
        # an outage or a misconfigured installation is no owner's to fix: no link for it
        broken = is_broken(conn.status, conn.invalid_since)
        return Rechecked(
            connection_id=conn.id,
            connection=conn.name,
            outcome=outcome,
            code=code,
            message=conn.last_error_message,
            status=conn.status,
            owner=conn.owner.email,
            owner_name=conn.owner.name,
            reconnect_url=reconnect_url(app, conn.id) if broken else None,
            disconnection_closed=summary.closed > 0,
            requested_by_id=actor_id,
        )


def _authorized(app: Relink, actor: str, connection_id: int) -> int:
    with app.sessions() as session:
        user, _ = authorize(session, actor, connection_id)
        return user.id


# --- tell the owner -----------------------------------------------------------------------


def email_reconnect_link(
    app: Relink, connection_id: int, *, requested_by: str, now: datetime | None = None
) -> DisconnectionEmailed:
    """Email the connection's open disconnection to its owner (or, when the owner cannot
    receive it, the account's admins) now, through the exactly-once ledger
    (`email_disconnection`): the 07:00 run never sends a second one. Audited with the
    ledger's state of the email."""
    now = now or utcnow()
    with app.sessions() as session:
        actor, _ = authorize(session, requested_by, connection_id)
    emailed = email_disconnection(app, connection_id, now=now)
    with app.transaction() as session:
        audit.record(
            session,
            "connection.reconnect_requested",
            at=now,
            connection=session.get(Connection, connection_id),
            actor=session.get(User, actor.id),
            link=reconnect_url(app, connection_id),
            emailed=list(emailed.to),
            result=emailed.result,
            notification_id=emailed.notification_id,
            earlier=emailed.earlier,
        )
    return emailed
