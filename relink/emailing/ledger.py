"""The exactly-once ledger of the disconnection emails. `claim` commits a disconnection's
one `notifications` row before its request goes out (the unique constraint, or
`UPDATE ... WHERE state = 'released'`, decides between runs); `mark` records the result;
`expire_stale_claims` turns the claims of runs that died into `unknown` (they may have
been sent: never resent automatically); `release` hands an `unknown` one back to the
next run on an admin's decision. Every write also writes `disconnections.awaiting_email`
(relink/domain/due.py's `awaiting_email`, which the due query reads) in the same
transaction, notification first, then the disconnection (one lock order for every
path). An email's final state (sent or written to the outbox, failed, unknown) is also a
Prefect event after the commit (`relink.events`). docs/design.md draws the life of one email.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from relink import audit, events
from relink.app import Relink
from relink.domain.due import NOT_YET, awaiting_email
from relink.emailing import headsup
from relink.emailing.due import DueEmail
from relink.emailing.headsup import HeadsUpEmail, HeldHeadsUp
from relink.emailing.outbox import NotificationView, get_notification
from relink.errors import Conflict, NotFound
from relink.models import Disconnection, Notification, NotificationState, User

State = NotificationState

CLAIM_LEASE = timedelta(minutes=15)
"""A `claimed` notification older than this belongs to a run that died: it may have
been sent, so the next run marks it `unknown` (never resends it automatically)."""


@dataclass(frozen=True, slots=True)
class HeldClaim:
    """This run's hold on one notification, from `claim` to `mark`."""

    notification_id: int
    claimed_at: datetime  # with the state, the fence of every later write of this run
    disconnection_id: int


# The writes made for every email, built once as Core statements on the tables: built
# per email (and through the ORM's bulk-UPDATE and unit-of-work paths) they cost more
# CPU than the database itself (docs/benchmarks.md, email run).
_NOTIFICATIONS: sa.Table = Notification.__table__  # type: ignore[assignment]
_DISCONNECTIONS: sa.Table = Disconnection.__table__  # type: ignore[assignment]
_INSERT_CLAIM = sa.insert(_NOTIFICATIONS)
_SET_AWAITING = (
    sa.update(_DISCONNECTIONS)
    .where(_DISCONNECTIONS.c.id == sa.bindparam("d_id"))
    .values(awaiting_email=sa.bindparam("flag"))
)
_SET_AWAITING_OPEN = _SET_AWAITING.where(_DISCONNECTIONS.c.ended_at.is_(None))


def _mark_statement(delivered: bool) -> sa.Update:
    allowed = [State.CLAIMED, State.UNKNOWN, State.RELEASED] if delivered else [State.CLAIMED]
    n = _NOTIFICATIONS.c
    values: dict[str, Any] = {
        "state": sa.bindparam("new_state"),
        "attempts": n.attempts + sa.bindparam("tries", type_=sa.Integer),
        "last_error": sa.bindparam("error"),
        "updated_at": sa.bindparam("at"),
    }
    if delivered:
        values["sent_at"] = sa.bindparam("at")
        values["provider_message_id"] = sa.bindparam("message_id")
    return (
        sa.update(_NOTIFICATIONS)
        .where(
            n.id == sa.bindparam("n_id"),
            n.claimed_at == sa.bindparam("held_at"),
            n.state.in_([str(s) for s in allowed]),
        )
        .values(values)
    )


_MARK = {False: _mark_statement(False), True: _mark_statement(True)}


@contextmanager
def _writes(app: Relink, *, with_events: bool = False) -> Iterator[Session | sa.Connection]:
    """One transaction for a claim or a mark: a bare connection (the ORM session's own
    bookkeeping was a third of the ledger's CPU per email), or an ORM session when the
    transaction queues a Prefect event (sent after the session's commit)."""
    if with_events and events.enabled():
        with app.transaction() as session:
            yield session
    else:
        with app.engine.begin() as connection:
            yield connection


MARK_TRIES = 3
"""Transactions recording a result, when the database connection keeps dropping."""


class _Lost(Exception):
    """Rolls back a claim or mark that did not apply (and its write of the flag)."""


def not_notified() -> sa.ColumnElement[bool]:
    """No notification other than a released one (released = handed back to the next run).

    The truth that `Disconnection.awaiting_email` mirrors; the due query reads the flag.
    """
    taken = (
        sa.select(Notification.id)
        .where(
            Notification.disconnection_id == Disconnection.id,
            Notification.state.not_in([str(s) for s in NOT_YET]),
        )
        .exists()
    )
    return ~taken


def _set_awaiting(
    session: Session | sa.Connection,
    disconnection_id: int,
    state: State | str,
    *,
    open_only: bool = False,
) -> bool:
    """Write `awaiting_email` for the notification state just written, in the same
    transaction and after it (one lock order: notification, then disconnection).

    With `open_only`, False when the disconnection is closed (or gone): the caller
    rolls back.
    """
    result = session.execute(
        _SET_AWAITING_OPEN if open_only else _SET_AWAITING,
        {"d_id": disconnection_id, "flag": awaiting_email(state)},
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def claim(
    app: Relink,
    item: DueEmail | HeadsUpEmail,
    *,
    now: datetime,
    state: State = State.CLAIMED,
    subject: str | None = None,
    reason: str | None = None,
) -> HeldClaim | HeldHeadsUp | None:
    """Commit this run's claim of `item`'s one notification; None when someone else has it
    (or the disconnection closed meanwhile).

    A new notification is an INSERT that the unique constraint arbitrates; a released one
    is taken back with `UPDATE ... WHERE state = 'released'`, whose row count decides.
    Either way the same transaction clears `awaiting_email`, and only while the
    disconnection is open (that UPDATE locks its row until the commit, so a concurrent
    close waits for it or is seen).
    """
    if isinstance(item, HeadsUpEmail):  # its own record, the same protocol
        return headsup.claim(app, item, now=now, state=state, subject=subject, reason=reason)
    values = {
        "state": str(state),
        "recipients": list(item.recipients.to),
        "subject": subject,
        "last_error": reason,
        "claimed_at": now,
        "sent_at": None,
        "provider_message_id": None,
        "updated_at": now,
    }
    if item.notification_state is None:
        try:
            with _writes(app) as session:
                inserted = session.execute(
                    _INSERT_CLAIM,
                    {"disconnection_id": item.disconnection_id, "attempts": 0, **values},
                )
                (notification_id,) = inserted.inserted_primary_key  # type: ignore[attr-defined]
                if not _set_awaiting(session, item.disconnection_id, state, open_only=True):
                    raise _Lost  # closed meanwhile
                return HeldClaim(notification_id, now, item.disconnection_id)
        except IntegrityError:
            pass  # another run inserted it first; it may have released it since
        except _Lost:
            return None
    try:
        with app.transaction() as session:
            result = session.execute(
                sa.update(Notification)
                .where(
                    Notification.disconnection_id == item.disconnection_id,
                    Notification.state == State.RELEASED,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                raise _Lost  # another run took it back first
            if not _set_awaiting(session, item.disconnection_id, state, open_only=True):
                raise _Lost  # closed meanwhile
            notification_id = session.scalar(
                sa.select(Notification.id).where(
                    Notification.disconnection_id == item.disconnection_id
                )
            )
    except _Lost:
        return None
    assert notification_id is not None
    return HeldClaim(notification_id, now, item.disconnection_id)


def mark(
    app: Relink,
    held: HeldClaim | HeldHeadsUp,
    state: State,
    *,
    now: datetime,
    attempts: int,
    message_id: str | None = None,
    error: str | None = None,
) -> bool:
    """Record the end of this run's claim. False when the row is no longer ours (our claim
    outlived its lease and another run marked it unknown): it keeps that state, except
    that a delivery is always recorded (`sent` is the truth).

    A database connection dropped under it (a restart, a killed backend) is tried again
    on a new one (`MARK_TRIES`): giving up would leave an email SendGrid accepted
    `claimed`, then `unknown`. Trying again is harmless: the UPDATE is fenced by this
    claim, so after a commit whose reply was lost it matches nothing."""
    if isinstance(held, HeldHeadsUp):
        return headsup.mark(
            app, held, state, now=now, attempts=attempts, message_id=message_id, error=error
        )
    tries = 1
    while True:
        try:
            return _mark_once(app, held, state, now, attempts, message_id, error)
        except sa.exc.DBAPIError as exc:
            if not exc.connection_invalidated or tries == MARK_TRIES:
                raise
            tries += 1


def _mark_once(
    app: Relink,
    held: HeldClaim,
    state: State,
    now: datetime,
    attempts: int,
    message_id: str | None,
    error: str | None,
) -> bool:
    delivered = state in (State.SENT, State.OUTBOX)
    params: dict[str, Any] = {
        "n_id": held.notification_id,
        "held_at": held.claimed_at,
        "new_state": str(state),
        "tries": attempts,
        "error": (error or None) and error[:1000],
        "at": now,
    }
    if delivered:
        params["message_id"] = message_id and message_id[:200]
    with _writes(app, with_events=True) as session:
        result = session.execute(_MARK[delivered], params)
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        # released: true again; any other final state (including a delivery recorded
        # over a row an admin had released meanwhile): false
        _set_awaiting(session, held.disconnection_id, state)
        if isinstance(session, Session):  # events are on (`_writes`)
            events.email_changed(
                session,
                held.notification_id,
                held.disconnection_id,
                state,
                at=now,
                attempts=attempts,
                error=(error or None) and error[:1000],
            )
        return True


def expire_stale_claims(app: Relink, *, now: datetime, lease: timedelta = CLAIM_LEASE) -> int:
    """Claims older than the lease belong to a run that died between claim and mark: the
    email may have gone out, so they become `unknown` (never resent automatically).

    `awaiting_email` stays false (claimed and unknown are both "not due"): no write."""
    stale = (Notification.state == State.CLAIMED, Notification.claimed_at <= now - lease)
    why = (
        "the run that claimed it stopped before recording the result; it may have been "
        "sent (check SendGrid's activity, then `relink outbox release` it to send it again)"
    )
    with app.transaction() as session:
        rows = session.execute(
            sa.select(Notification.id, Notification.disconnection_id)
            .where(*stale)
            .with_for_update()
        ).all()
        if not rows:
            return 0
        result = session.execute(
            sa.update(Notification)
            .where(Notification.id.in_([r.id for r in rows]), *stale)
            .values(state=str(State.UNKNOWN), last_error=why, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        for row in rows:
            events.email_changed(
                session, row.id, row.disconnection_id, State.UNKNOWN, at=now, error=why
            )
        return result.rowcount


def release(
    session: Session, notification_id: int, *, now: datetime, actor: User | None = None
) -> NotificationView:
    """An admin's decision on an `unknown` email: hand it back to the next run."""
    row = session.get(Notification, notification_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no notification {notification_id}; see `relink outbox list`")
    if row.state != State.UNKNOWN:
        raise Conflict(
            f"notification {notification_id} is {row.state}: only an unknown one can be "
            "released (see `relink outbox list --state unknown`)"
        )
    row.state = State.RELEASED
    row.updated_at = now
    disconnection = session.get(Disconnection, row.disconnection_id)
    assert disconnection is not None
    disconnection.awaiting_email = True  # due again for the next run (same transaction)
    audit.record(
        session,
        "notification.released",
        at=now,
        connection=disconnection.connection,
        actor=actor,
        notification_id=row.id,
        disconnection_id=row.disconnection_id,
    )
    session.flush()
    return get_notification(session, notification_id)
