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

import contextlib
import threading
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
_INSERT_CLAIM_RETURNING = _INSERT_CLAIM.returning(
    _NOTIFICATIONS.c.id, _NOTIFICATIONS.c.disconnection_id
)
_GROUP_LOCK_TIMEOUT = sa.text("SET LOCAL lock_timeout = '200ms'")
_KEPT_ON_RETAKE = ("disconnection_id", "attempts")  # a released one keeps its count
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
            # = per state, not IN: an IN list cannot go out in one executemany
            sa.or_(*(n.state == str(s) for s in allowed)),
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
    group: GroupCommit | None = None,
) -> HeldClaim | HeldHeadsUp | None:
    """Commit this run's claim of `item`'s one notification; None when someone else has it
    (or the disconnection closed meanwhile). With `group`, the claim may share its
    transaction with other claims and marks of the run (`GroupCommit`); it is committed
    when this returns, either way.

    A new notification is an INSERT that the unique constraint arbitrates; a released one
    is taken back with `UPDATE ... WHERE state = 'released'`, whose row count decides.
    Either way the same transaction clears `awaiting_email`, and only while the
    disconnection is open (that UPDATE locks its row until the commit, so a concurrent
    close waits for it or is seen).
    """
    if isinstance(item, HeadsUpEmail):  # its own record, the same protocol
        return headsup.claim(app, item, now=now, state=state, subject=subject, reason=reason)
    values = _claim_values(item, now=now, state=state, subject=subject, reason=reason)
    if group is not None and item.notification_state is None:
        return group.submit(_Claim(item, state, values))
    return _claim_once(app, item, state, values)


def _claim_values(
    item: DueEmail, *, now: datetime, state: State, subject: str | None, reason: str | None
) -> dict[str, Any]:
    return {
        "disconnection_id": item.disconnection_id,
        "attempts": 0,
        "state": str(state),
        "recipients": list(item.recipients.to),
        "subject": subject,
        "last_error": reason,
        "claimed_at": now,
        "sent_at": None,
        "provider_message_id": None,
        "updated_at": now,
    }


def _claim_once(
    app: Relink, item: DueEmail, state: State, values: dict[str, Any]
) -> HeldClaim | None:
    now = values["claimed_at"]
    if item.notification_state is None:
        try:
            with _writes(app) as session:
                inserted = session.execute(_INSERT_CLAIM, values)
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
                .values({k: v for k, v in values.items() if k not in _KEPT_ON_RETAKE})
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
    group: GroupCommit | None = None,
) -> bool:
    """Record the end of this run's claim. False when the row is no longer ours (our claim
    outlived its lease and another run marked it unknown): it keeps that state, except
    that a delivery is always recorded (`sent` is the truth).

    A database connection dropped under it (a restart, a killed backend) is tried again
    on a new one (`MARK_TRIES`): giving up would leave an email SendGrid accepted
    `claimed`, then `unknown`. Trying again is harmless: the UPDATE is fenced by this
    claim, so after a commit whose reply was lost it matches nothing.

    With `group`, the mark may share its transaction with other claims and marks of the
    run (`GroupCommit`); it is committed when this returns, either way."""
    if isinstance(held, HeldHeadsUp):
        return headsup.mark(
            app, held, state, now=now, attempts=attempts, message_id=message_id, error=error
        )
    if group is not None:
        return group.submit(_Mark(held, state, now, attempts, message_id, error))
    return _mark_with_tries(app, held, state, now, attempts, message_id, error)


def _mark_with_tries(
    app: Relink,
    held: HeldClaim,
    state: State,
    now: datetime,
    attempts: int,
    message_id: str | None,
    error: str | None,
) -> bool:
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
    delivered, params = _mark_params(held, state, now, attempts, message_id, error)
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


def _mark_params(
    held: HeldClaim,
    state: State,
    now: datetime,
    attempts: int,
    message_id: str | None,
    error: str | None,
) -> tuple[bool, dict[str, Any]]:
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
    return delivered, params


# --- group commit ---------------------------------------------------------------------------


class _Write:
    """One claim or mark handed to a `GroupCommit`, and what became of it."""

    def __init__(self) -> None:
        self.done = False
        self.by_itself = False  # the group failed: the sender makes it alone
        self.result: Any = None
        self.error: BaseException | None = None  # raised in the sender thread that asked

    def alone(self, app: Relink) -> Any:
        """The write in a transaction of its own (as without a group)."""
        raise NotImplementedError


class _Claim(_Write):
    def __init__(self, item: DueEmail, state: State, values: dict[str, Any]) -> None:
        super().__init__()
        self.item, self.state, self.values = item, state, values

    def alone(self, app: Relink) -> HeldClaim | None:
        return _claim_once(app, self.item, self.state, self.values)


class _Mark(_Write):
    def __init__(
        self,
        held: HeldClaim,
        state: State,
        now: datetime,
        attempts: int,
        message_id: str | None,
        error: str | None,
    ) -> None:
        super().__init__()
        self.held, self.state, self.now, self.attempts = held, state, now, attempts
        self.message_id, self.why = message_id, error
        self.delivered, self.params = _mark_params(held, state, now, attempts, message_id, error)

    def alone(self, app: Relink) -> bool:
        return _mark_with_tries(
            app, self.held, self.state, self.now, self.attempts, self.message_id, self.why
        )


class GroupCommit:
    """The claims and marks of one batch's sender threads, written together: the thread
    that finds no write in progress takes every claim and mark waiting at that moment
    (its own among them) and writes them in one transaction, while the others wait for
    it. Each call returns once its own write is committed, as a call alone would: a
    claim is durable before its request, a result recorded before its sender goes on,
    so a crash leaves exactly what one transaction per write would have left (a killed
    transaction takes its claims, whose requests had not gone out, and its marks, whose
    emails then stay `claimed`, then `unknown`, with it).

    Fewer commits per email, one writer at a time instead of the sender threads queueing
    for SQLite's lock, one database connection for the batch instead of a checkout (and
    PostgreSQL's ping and reset) per write, and the same statement for every row of a
    group in one executemany: docs/benchmarks.md, email run.

    In a group the notifications come first, then the disconnections by id (the lock
    order of every path). Anything unusual in a group (a claim another run took first, a
    closed disconnection, a mark no longer ours, a database error, a row lock held
    elsewhere for more than 200 ms on PostgreSQL) rolls the group back, and each of its
    writes is then made alone by its own sender thread, exactly as without a group (so
    one email waiting on a lock never holds up the others). Use it as a context manager:
    the batch's connection goes back at the end."""

    def __init__(self, app: Relink) -> None:
        self.app = app
        self._cond = threading.Condition()
        self._waiting: list[_Write] = []
        self._writing = False
        self._connection: sa.Connection | None = None

    def __enter__(self) -> GroupCommit:
        return self

    def __exit__(self, *exc: object) -> None:
        self._drop_connection()

    def submit(self, write: _Write) -> Any:
        """Write `write` (alone or with others); its result once committed."""
        with self._cond:
            self._waiting.append(write)
            while self._writing and not write.done:
                self._cond.wait()
            group: list[_Write] = []
            if not write.done:
                self._writing = True
                group, self._waiting = self._waiting, []
        if group:
            try:
                self._write(group)
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()
        if write.by_itself:
            return write.alone(self.app)
        if write.error is not None:
            raise write.error
        return write.result

    def _write(self, group: list[_Write]) -> None:
        try:
            if self._connection is None:
                self._connection = self.app.engine.connect()
            _write_together(self.app, self._connection, group)
        except (_Lost, sa.exc.SQLAlchemyError):
            self._drop_connection()
            for write in group:  # each in its sender's thread, as without a group
                write.by_itself, write.done = True, True
        except Exception as exc:  # noqa: BLE001 - a bug: every sender in the group hears of it
            self._drop_connection()
            for write in group:
                write.error, write.done = exc, True

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):  # dead: the pool replaces it
                connection.close()


def _write_together(app: Relink, connection: sa.Connection, group: list[_Write]) -> None:
    claims = [w for w in group if isinstance(w, _Claim)]
    marks = sorted((w for w in group if isinstance(w, _Mark)), key=lambda m: m.held.notification_id)
    with contextlib.ExitStack() as stack:
        session: Session | sa.Connection = connection
        if marks and events.enabled():  # the events go out after the commit
            session = stack.enter_context(Session(bind=connection))
            stack.enter_context(session.begin())
        else:
            stack.enter_context(connection.begin())
        if connection.dialect.name == "postgresql":
            # a row lock held elsewhere (a reconnect, an admin's release) must not hold up
            # the whole group: past this, each write waits for it alone, in its own thread
            session.execute(_GROUP_LOCK_TIMEOUT)
        for delivered in (False, True):
            rows = [m.params for m in marks if m.delivered is delivered]
            if rows and _many(session, _MARK[delivered], rows) != len(rows):
                raise _Lost  # a mark no longer ours: alone, it says so
        held: dict[int, int] = {}
        if claims:
            inserted = session.execute(_INSERT_CLAIM_RETURNING, [c.values for c in claims])
            held = {d_id: n_id for n_id, d_id in inserted}
        flags = [{"d_id": c.item.disconnection_id, "flag": awaiting_email(c.state)} for c in claims]
        if flags and _many(session, _SET_AWAITING_OPEN, sorted(flags, key=_by_id)) != len(flags):
            raise _Lost  # a disconnection closed meanwhile: alone, its claim says so
        # released: true again; any other final state (including a delivery recorded over
        # a row an admin had released meanwhile): false, as `_mark_once`
        marked = [{"d_id": m.held.disconnection_id, "flag": awaiting_email(m.state)} for m in marks]
        if marked:
            _many(session, _SET_AWAITING, sorted(marked, key=_by_id))
        if isinstance(session, Session):
            for m in marks:
                events.email_changed(
                    session,
                    m.held.notification_id,
                    m.held.disconnection_id,
                    m.state,
                    at=m.now,
                    attempts=m.attempts,
                    error=m.params["error"],
                )
    for c in claims:
        d_id = c.item.disconnection_id
        c.result, c.done = HeldClaim(held[d_id], c.values["claimed_at"], d_id), True
    for m in marks:
        m.result, m.done = True, True


def _by_id(row: dict[str, Any]) -> int:
    return row["d_id"]


def _many(
    session: Session | sa.Connection, statement: sa.Update, rows: list[dict[str, Any]]
) -> int:
    """Rows matched by `statement` over `rows` (one executemany)."""
    return session.execute(statement, rows).rowcount  # type: ignore[attr-defined]


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
