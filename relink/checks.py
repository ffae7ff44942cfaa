"""Checking one batch of connections: load it, validate it (`relink.sweep`), and record
every outcome through the state rules in one transaction (`record_batch`): a change of
status or disconnection is made on the connection's object with its audit event, the
rest (the check's time and last error) is one UPDATE for the whole batch. The account a
successful check saw is recorded when it tells something new (`domain.identity.observed`:
the first time, or a new label). A connection changed by someone else during the check
(a reconnect) is skipped, not overwritten."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError

from connectors.base import CheckResult, ConnectionSpec
from relink import audit, events
from relink.app import Relink
from relink.domain.identity import observed
from relink.domain.state import ConnState, decide
from relink.domain.words import Outcome
from relink.models import Connection, Disconnection, User
from relink.sweep.load import Unloadable, load_batch
from relink.sweep.summary import BatchSummary, ResultKey
from relink.sweep.validate import (
    ERROR,
    Checked,
    CheckPolicy,
    make_context_factory,
    validate_all,
)


async def check_range(
    app: Relink,
    after_id: int,
    upto_id: int | None,
    *,
    now: datetime,
    policy: CheckPolicy,
    only: Sequence[int] | None = None,
    actor_id: int | None = None,
) -> BatchSummary:
    """Load, validate and record one batch, checked as of `now` (refreshing the tokens
    that would lapse unused within RELINK_KEEP_ALIVE_DAYS); returns its counts.
    `actor_id`: who asked (None: the schedule)."""
    from relink.tokens import DbTokenStore

    loaded = await asyncio.to_thread(
        load_batch,
        app,
        after_id,
        upto_id,
        only,
        now=now,
        keep_alive=app.settings.keep_alive_margin,
    )
    specs = [s for s in loaded if isinstance(s, ConnectionSpec)]
    unloadable = [s for s in loaded if isinstance(s, Unloadable)]
    make_ctx = make_context_factory(app, policy, now=now, token_store=DbTokenStore(app))
    checked = await validate_all(specs, make_ctx, policy)
    return await asyncio.to_thread(_record_with_retry, app, checked, unloadable, now, actor_id)


def _record_with_retry(
    app: Relink,
    checked: Sequence[Checked],
    unloadable: Sequence[Unloadable],
    now: datetime,
    actor_id: int | None = None,
) -> BatchSummary:
    try:
        with app.transaction() as session:
            return record_batch(session, checked, unloadable, now=now, actor_id=actor_id)
    except StaleDataError:
        # someone changed a connection between our read and write: the version
        # check in record_batch skips it on the second pass
        with app.transaction() as session:
            return record_batch(session, checked, unloadable, now=now, actor_id=actor_id)


def record_batch(
    session: Session,
    checked: Sequence[Checked],
    unloadable: Sequence[Unloadable],
    *,
    now: datetime,
    actor_id: int | None = None,
) -> BatchSummary:
    """Apply the state rules to every result of a batch, in the caller's transaction;
    `actor_id` is the user who asked for the check (None: the schedule)."""
    summary = BatchSummary()
    ids = [c.connection_id for c in checked] + [u.connection_id for u in unloadable]
    if not ids:
        return summary
    conns = {
        c.id: c
        for c in session.scalars(
            sa.select(Connection).where(Connection.id.in_(ids)).with_for_update()
        )
    }
    open_eps = {
        d.connection_id: d
        for d in session.scalars(
            sa.select(Disconnection).where(
                Disconnection.connection_id.in_(ids), Disconnection.ended_at.is_(None)
            )
        )
    }
    outcomes: Counter[str] = Counter()
    by_provider: Counter[str] = Counter()
    plain: list[_Bookkeeping] = []  # rows whose only change is the check's own record
    seen: list[tuple[Connection, CheckResult]] = []  # ok checks that named an account
    for item in checked:
        conn = conns.get(item.connection_id)
        if conn is None or conn.version != item.version:
            summary.skipped += 1
            continue
        error = item.result.code == ERROR
        outcome = ERROR if error else str(item.result.outcome)
        outcomes[outcome] += 1
        key = ResultKey(item.provider, outcome, item.result.code)
        by_provider[key.key()] += 1
        if error:
            plain.append(_Bookkeeping.error(conn, item.result.code or ERROR, item.result.message))
            continue
        if item.result.outcome is Outcome.MISCONFIGURED:
            summary.installation.setdefault(key.installation_key(), item.result.message)
        row = _apply(session, conn, open_eps.get(conn.id), item, now, summary, actor_id)
        if row is not None:
            plain.append(row)
        if item.result.outcome is Outcome.OK and item.result.identity is not None:
            seen.append((conn, item.result))
    for bad in unloadable:
        conn = conns.get(bad.connection_id)
        if conn is None or conn.version != bad.version:
            summary.skipped += 1
            continue
        outcomes[ERROR] += 1
        by_provider[ResultKey(bad.provider, ERROR, bad.code).key()] += 1
        plain.append(_Bookkeeping.error(conn, bad.code, bad.message))
    _write_bookkeeping(session, plain, now)
    for conn, result in seen:  # after the batch UPDATE: it compares the versions it read
        _record_identity(session, conn, result, now, actor_id)
    summary.checked = sum(outcomes.values())
    summary.outcomes = dict(outcomes)
    summary.by_provider = dict(by_provider)
    return summary


@dataclass(frozen=True, slots=True)
class _Bookkeeping:
    """What a check changes on a connection whose status and episode stay as they are."""

    conn: Connection
    error_code: str | None
    error_message: str | None
    invalid_since: datetime | None
    last_outcome: str
    last_outcome_code: str | None

    @classmethod
    def error(cls, conn: Connection, code: str, message: str) -> _Bookkeeping:
        return cls(conn, code, message[:1000], conn.invalid_since, ERROR, code)


_CONNECTIONS = Connection.__table__
# One statement for the whole batch (executemany) instead of an ORM UPDATE per row: the
# same version check and bump the ORM's version counter makes.
_BOOKKEEPING_UPDATE = (
    sa.update(_CONNECTIONS)
    .where(
        _CONNECTIONS.c.id == sa.bindparam("b_id"),
        _CONNECTIONS.c.version == sa.bindparam("b_version"),
    )
    .values(
        last_checked_at=sa.bindparam("b_checked_at"),
        last_error_code=sa.bindparam("b_error_code"),
        last_error_message=sa.bindparam("b_error_message"),
        invalid_since=sa.bindparam("b_invalid_since"),
        last_outcome=sa.bindparam("b_last_outcome"),
        last_outcome_code=sa.bindparam("b_last_outcome_code"),
        version=_CONNECTIONS.c.version + 1,
    )
)


def _write_bookkeeping(session: Session, rows: Sequence[_Bookkeeping], now: datetime) -> None:
    if not rows:
        return
    params = [
        {
            "b_id": r.conn.id,
            "b_version": r.conn.version,
            "b_checked_at": now,
            "b_error_code": r.error_code,
            "b_error_message": r.error_message,
            "b_invalid_since": r.invalid_since,
            "b_last_outcome": r.last_outcome,
            "b_last_outcome_code": r.last_outcome_code,
        }
        for r in rows
    ]
    connection = session.connection()
    updated = connection.execute(_BOOKKEEPING_UPDATE, params).rowcount
    if connection.dialect.supports_sane_multi_rowcount and updated != len(rows):
        raise StaleDataError(f"{len(rows) - updated} connection(s) changed while being recorded")
    for r in rows:  # the session's objects as the database now has them
        for name, value in (
            ("last_checked_at", now),
            ("last_error_code", r.error_code),
            ("last_error_message", r.error_message),
            ("invalid_since", r.invalid_since),
            ("last_outcome", r.last_outcome),
            ("last_outcome_code", r.last_outcome_code),
            ("version", r.conn.version + 1),
        ):
            set_committed_value(r.conn, name, value)


def _record_identity(
    session: Session,
    conn: Connection,
    result: CheckResult,
    now: datetime,
    actor_id: int | None,
) -> None:
    """The account the check saw, when it tells something new (rare: one write per
    connection when first learnt, not one per check)."""
    before = conn.identity
    new = observed(before, result.identity)
    if new is None:
        return
    conn.identity = new
    audit.record(
        session,
        "connection.account_seen",
        at=now,
        connection=conn,
        actor=session.get(User, actor_id) if actor_id is not None else None,
        account=new.label,
        account_before=before.label if before else None,
    )


def _apply(
    session: Session,
    conn: Connection,
    open_ep: Disconnection | None,
    item: Checked,
    now: datetime,
    summary: BatchSummary,
    actor_id: int | None = None,
) -> _Bookkeeping | None:
    """Apply the state rules to one result; a change of status or episode is made on the
    session's object, anything less is returned for the batch's one bookkeeping UPDATE.
    A change that is an event (`Decision.change`) is queued for after the commit."""
    result = item.result
    before = ConnState(
        conn.status,
        conn.invalid_since,
        open_ep is not None,
        conn.last_error_code,
        conn.last_error_message,
    )
    decision = decide(before, result.outcome, result.code, result.message, now=now)
    message = (decision.error_message or None) and decision.error_message[:1000]
    opens = decision.open_disconnection
    closes = decision.close_disconnection and open_ep is not None
    if not (opens or closes or decision.changes_status(before)):
        return _Bookkeeping(
            conn,
            decision.error_code,
            message,
            decision.invalid_since,
            decision.last_outcome,
            decision.last_outcome_code,
        )
    conn.last_checked_at = now
    conn.last_outcome = decision.last_outcome
    conn.last_outcome_code = decision.last_outcome_code
    conn.last_error_code = decision.error_code
    conn.last_error_message = message
    conn.invalid_since = decision.invalid_since
    if opens:
        session.add(Disconnection(connection_id=conn.id, started_at=now, reason_code=result.code))
        summary.opened += 1
    if closes:
        assert open_ep is not None
        open_ep.ended_at = now
        summary.closed += 1
    if decision.changes_status(before):
        summary.status_changes += 1
        conn.status = decision.status
        conn.updated_at = now
        audit.record(
            session,
            "connection.status_changed",
            at=now,
            connection=conn,
            actor=session.get(User, actor_id) if actor_id is not None else None,
            before=before.status,
            after=decision.status,
            code=result.code,
            message=result.message,
        )
    change = decision.change(before)
    if change is not None:
        events.connection_changed(
            session,
            change,
            conn,
            provider=item.provider,
            at=now,
            status_before=before.status,
            status=decision.status,
            code=result.code,
            message=result.message,
            invalid_since=decision.invalid_since and decision.invalid_since.isoformat(),
        )
    return None
