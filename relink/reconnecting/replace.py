"""The commit of new credentials: validate the new settings and credentials together with
the connector (storing nothing, spending no refresh token), then, in one transaction, record
an `ok` check through the state rules (`checks.record_batch`: the disconnection closes),
replace the settings and the encrypted credentials, make the reconnecting user the owner
("Created By") when different, record whose account the new credentials use (what the grant
told, else what the validation saw) and audit `connection.reconnected` with that account and
the one before; a refused or unreachable validation is audited as
`connection.reconnect_failed` and changes nothing else. New credentials of another account
than the connection's (`domain.identity.replaces`) are committed only when the replacement
is confirmed (`replace_account`); otherwise `AccountReplacement` says "This replaces … with
…", nothing changes, and, when asked to `hold` it, the validated reconnect waits for the
confirmation (`confirm`). A version
moved meanwhile is validated once more, then `Conflict`. Afterwards the connection's
datasets are refreshed. `reconnect_with_secrets` is the entry for passwords and API keys;
`oauth.finish_oauth` the one for OAuth. docs/reconnect.md has the steps in full."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm.exc import StaleDataError

import connectors
from connectors.base import CheckResult, ConnectionSpec
from relink import audit, events
from relink.app import Relink
from relink.checks import record_batch
from relink.connections import note_expiry
from relink.domain.identity import Identity, merged, replaces
from relink.domain.words import Outcome
from relink.errors import Conflict, InvalidInput
from relink.models import Connection, User
from relink.people import keep_access
from relink.reconnecting.errors import (
    NOTHING_CHANGED,
    AccountReplacement,
    ReconnectFailed,
    as_failure,
)
from relink.reconnecting.form import (
    Changes,
    Proposal,
    ReconnectForm,
    propose,
    reconnect_form,
)
from relink.reconnecting.target import Target, load_target
from relink.refreshing.results import RefreshPolicy, RefreshSummary
from relink.refreshing.run import refresh_connection
from relink.sweep.validate import Checked, CheckPolicy, make_context_factory
from relink.timeutil import utcnow


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
    account: str | None = None  # whose account the new credentials use, when known
    account_before: str | None = None

    @property
    def account_replaced(self) -> bool:
        return None not in (self.account, self.account_before) and (
            self.account != self.account_before
        )

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
            "account": self.account,
            "account_before": self.account_before,
            "refresh": self.refresh.as_dict() if self.refresh else None,
        }


class _Stale(Exception):
    pass


async def _validate(
    app: Relink,
    target: Target,
    settings: Mapping[str, Any],
    credentials: Mapping[str, str],
    now: datetime,
) -> tuple[Mapping[str, str], Identity | None]:
    """The credentials to store (`credentials`, or the set their validation refreshed) and
    whose account the validation saw."""
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
        raise as_failure(result, target.connection_id)
    return result.credentials or credentials, result.identity


def _commit(
    app: Relink,
    target: Target,
    proposal: Proposal,
    credentials: Mapping[str, str],
    *,
    now: datetime,
    account: Identity | None,
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
        note_expiry(conn, credentials, now=now)  # a new grant: its own end (issue 19)
        before = conn.identity  # what the version compared above guarantees we read
        conn.identity = account  # new credentials: what they tell, or nothing known
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
            account=account.label if account else None,
            account_before=before.label if before else None,
            account_replaced=replaces(before, account),
        )
        events.connection_changed(  # in place of the check's `recovered`
            session,
            events.CONNECTION_RECONNECTED,
            conn,
            provider=target.provider,
            at=now,
            method=method,
            status_before=target.status,
            status=conn.status,
            disconnection_closed=summary.closed > 0,
            owner_changed=previous_owner != actor.email,
            changed=list(proposal.changed),
            account_replaced=replaces(before, account),  # the accounts: the audit trail
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
            account=account.label if account else None,
            account_before=before.label if before else None,
        )


def record_failure(
    app: Relink,
    target: Target,
    failed: ReconnectFailed,
    proposal: Proposal,
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


async def replace(
    app: Relink,
    actor: str,
    connection_id: int,
    new_credentials: Callable[[Target], dict[str, str]],
    changes: Changes,
    *,
    now: datetime,
    refresh: bool,
    policy: RefreshPolicy | None,
    told: Identity | None = None,
    replace_account: bool = False,
    hold: bool = False,
    confirmed: Identity | None = None,
) -> Reconnected:
    """Validate, write (once more on a version conflict), refresh.

    `new_credentials(target)` builds the credentials from what is stored now; `changes`
    apply to the settings stored now. A refused or unreachable validation is recorded.
    `told`: whose account the grant named (a verified ID token). Another account than the
    connection's needs `replace_account`; else `AccountReplacement`, held for a later
    confirmation when `hold`. `confirmed`: the account the user confirmed (a held
    replacement): the validation must still see that one.
    """
    validated: Mapping[str, str] = {}  # after a conflict: the set validated (maybe refreshed)
    for attempt in range(2):
        target = await asyncio.to_thread(load_target, app, actor, connection_id)
        proposal = propose(connectors.get(target.type), target.settings, changes)
        credentials = {**new_credentials(target), **validated}
        try:
            validated, seen = await _validate(app, target, proposal.settings, credentials, now)
        except ReconnectFailed as failed:
            await asyncio.to_thread(record_failure, app, target, failed, proposal, now=now)
            raise
        account = merged(told, seen)
        if confirmed is not None and (account is None or account.subject != confirmed.subject):
            raise Conflict(
                f"connection {connection_id}: the source no longer names the account you "
                f"confirmed ({confirmed.label}); {NOTHING_CHANGED}, reconnect again"
            )
        if replaces(target.identity, account) and not replace_account:
            assert target.identity is not None and account is not None
            token = None
            if hold:
                from relink.reconnecting.confirm import hold_replacement

                token = await asyncio.to_thread(
                    hold_replacement, app, target, validated, changes, account, now=now
                )
            raise AccountReplacement(connection_id, target.identity, account, token=token)
        try:
            done = await asyncio.to_thread(
                _commit, app, target, proposal, validated, now=now, account=account
            )
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
    replace_account: bool = False,
    hold: bool = False,
) -> Reconnected:
    """Reconnect a password or API-key connection with new secret values and, optionally,
    new values of the settings a reconnect may change. Credentials of another account
    need `replace_account` (see `replace`)."""
    now = now or utcnow()
    # access and kind, before anything else
    form = await asyncio.to_thread(_typed_secrets_form, app, actor, connection_id)
    for spec in form.secrets:
        if spec.required and not secrets.get(spec.name):
            raise InvalidInput(f"Enter the new {spec.label.lower()}; {NOTHING_CHANGED}.")
    changes = Changes(dict(settings or {}), {k: v for k, v in secrets.items() if v})
    return await replace(
        app,
        actor,
        connection_id,
        lambda _target: dict(changes.secrets),
        changes,
        now=now,
        refresh=refresh,
        policy=policy,
        replace_account=replace_account,
        hold=hold,
    )
