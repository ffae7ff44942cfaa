"""The expiry heads-ups: one email to a connection's owner RELINK_HEADS_UP_DAYS before its
credentials end for good (relink/domain/expiry.py's `heads_up_due`, here in SQL), once
per expiry. `due_heads_ups` finds them; `load_heads_ups` gathers what each email needs
(recipients chosen as for a disconnection email). Their exactly-once record is the
`heads_ups` table, kept by the same protocol as the disconnection emails' ledger
(relink/emailing/ledger.py dispatches here): `claim` commits the row before the request
goes out (the unique (connection, expiry) pair, or `UPDATE ... WHERE state = 'released'`,
decides between runs) and re-checks that the expiry is still the connection's and still
ahead; `mark` records the result, fenced by the claim; `expire_stale_claims` turns a
dead run's claims `unknown`. A reconnect gives the connection a new expiry, which gets
a heads-up of its own when it comes near; the old one is never emailed again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

import connectors
from relink import events
from relink.app import Relink
from relink.domain.due import NOT_YET
from relink.domain.expiry import HEADS_UP_AHEAD, ExpiryKind
from relink.domain.recipients import Person, Recipients, choose_recipients
from relink.domain.words import NotificationState, Role, Status
from relink.models import Account, Connection, HeadsUp, User

if TYPE_CHECKING:
    from relink.emailing.render import HeadsUpFacts

State = NotificationState


def heads_up_reference(connection_id: int, expires_at: datetime) -> str:
    """The one heads-up of an expiry: its outbox file name and SendGrid reference."""
    return f"heads-up-{connection_id}-{int(expires_at.timestamp())}"


def _due_where(now: datetime, ahead: timedelta) -> list[sa.ColumnElement[bool]]:
    """`heads_up_due` in SQL, for connections not broken (a broken one has its own
    email) of accounts that want heads-ups."""
    return [
        Connection.credentials_expiry_kind == str(ExpiryKind.HARD),
        Connection.credentials_expire_at > now,
        Connection.credentials_expire_at <= now + ahead,
        Connection.status != Status.DISCONNECTED,
        Connection.invalid_since.is_(None),
        sa.select(Account.expiry_heads_up)
        .where(Account.id == Connection.account_id)
        .scalar_subquery()
        == sa.true(),
    ]


def due_query(now: datetime, ahead: timedelta = HEADS_UP_AHEAD) -> sa.Select[tuple[int]]:
    """Ids of the connections whose heads-up is due at `now` and not yet taken (no row
    for their current expiry, or only a released one)."""
    taken = (
        sa.select(HeadsUp.id)
        .where(
            HeadsUp.connection_id == Connection.id,
            HeadsUp.expires_at == Connection.credentials_expire_at,
            HeadsUp.state.not_in([str(s) for s in NOT_YET]),
        )
        .exists()
    )
    return sa.select(Connection.id).where(*_due_where(now, ahead), ~taken)


def due_heads_ups(
    app: Relink, *, now: datetime, ahead: timedelta = HEADS_UP_AHEAD, limit: int | None = None
) -> list[int]:
    """`due_query`'s ids, ascending (with `limit`, the nearest expiries)."""
    query = due_query(now, ahead)
    if limit is not None:
        query = query.order_by(Connection.credentials_expire_at, Connection.id).limit(limit)
    with app.sessions() as session:
        return sorted(session.scalars(query))


@dataclass(frozen=True, slots=True)
class HeadsUpEmail:
    """A due heads-up with everything its email needs (no credential)."""

    connection_id: int
    connection_name: str
    source_type: str
    account_id: int
    expires_at: datetime
    recipients: Recipients
    notification_state: str | None  # None, or "released"
    now: datetime

    disconnection_id = None  # what a disconnection email's record names; none here

    @property
    def reference(self) -> str:
        return heads_up_reference(self.connection_id, self.expires_at)

    def facts(self) -> HeadsUpFacts:
        from relink.emailing.render import HeadsUpFacts  # Jinja2 loads only when rendering

        return HeadsUpFacts(
            connection_id=self.connection_id,
            connection_name=self.connection_name,
            source_type=self.source_type,
            expires_at=self.expires_at,
            now=self.now,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "connection_id": self.connection_id,
            "connection": self.connection_name,
            "type": self.source_type,
            "expires_at": self.expires_at.isoformat(),
            "to": list(self.recipients.to),
            "why": self.recipients.why,
            "again": self.notification_state is not None,
        }


def load_heads_ups(app: Relink, ids: Sequence[int], *, now: datetime) -> list[HeadsUpEmail]:
    """The facts and recipients of these connections' current expiries, by id."""
    if not ids:
        return []
    owner = sa.orm.aliased(User)
    query = (
        sa.select(
            Connection.id,
            Connection.name,
            Connection.type,
            Connection.account_id,
            Connection.credentials_expire_at,
            owner.email,
            owner.active,
            owner.role,
            HeadsUp.state,
        )
        .join(owner, owner.id == Connection.owner_id)
        .outerjoin(
            HeadsUp,
            sa.and_(
                HeadsUp.connection_id == Connection.id,
                HeadsUp.expires_at == Connection.credentials_expire_at,
            ),
        )
        .where(Connection.id.in_(ids), Connection.credentials_expire_at.is_not(None))
        .order_by(Connection.id)
    )
    with app.sessions() as session:
        rows = session.execute(query).all()
        accounts = {row.account_id for row in rows}
        admins: dict[int, list[Person]] = {}
        for user in session.execute(
            sa.select(User.account_id, User.email, User.active, User.role).where(
                User.account_id.in_(accounts), User.role == Role.ADMIN
            )
        ):
            admins.setdefault(user.account_id, []).append(
                Person(user.email, user.active, user.role)
            )
    return [
        HeadsUpEmail(
            connection_id=row.id,
            connection_name=row.name,
            source_type=_display_name(row.type),
            account_id=row.account_id,
            expires_at=row.credentials_expire_at,
            recipients=choose_recipients(
                Person(row.email, row.active, row.role), admins.get(row.account_id, [])
            ),
            notification_state=row.state,
            now=now,
        )
        for row in rows
    ]


def _display_name(type_: str) -> str:
    try:
        return connectors.get(type_).display_name
    except connectors.UnknownConnector:
        return type_


# --- the ledger of heads-ups (same protocol as relink/emailing/ledger.py) --------------------


@dataclass(frozen=True, slots=True)
class HeldHeadsUp:
    """This run's hold on one heads-up, from `claim` to `mark`."""

    heads_up_id: int
    claimed_at: datetime
    connection_id: int
    disconnection_id = None


class _Lost(Exception):
    """Rolls back a claim that did not apply."""


def _still_due(session: sa.orm.Session, item: HeadsUpEmail) -> bool:
    """The expiry is still the connection's, not broken, and the account wants heads-ups
    (read in the claim's transaction: a reconnect that gave it a new end wins)."""
    found = session.scalar(
        sa.select(Connection.id).where(
            Connection.id == item.connection_id,
            Connection.credentials_expire_at == item.expires_at,
            *_due_where(item.now, timedelta(days=36500)),
        )
    )
    return found is not None


def claim(
    app: Relink,
    item: HeadsUpEmail,
    *,
    now: datetime,
    state: State = State.CLAIMED,
    subject: str | None = None,
    reason: str | None = None,
) -> HeldHeadsUp | None:
    """Commit this run's claim of `item`'s one heads-up; None when someone else has it or
    it is no longer due (reconnected, broken, turned off)."""
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
            with app.transaction() as session:
                if not _still_due(session, item):
                    raise _Lost
                row = HeadsUp(
                    connection_id=item.connection_id,
                    expires_at=item.expires_at,
                    attempts=0,
                    **values,
                )
                session.add(row)
                session.flush()
                return HeldHeadsUp(row.id, now, item.connection_id)
        except IntegrityError:
            pass  # another run inserted it first; it may have released it since
        except _Lost:
            return None
    try:
        with app.transaction() as session:
            if not _still_due(session, item):
                raise _Lost
            mine = (HeadsUp.connection_id == item.connection_id) & (
                HeadsUp.expires_at == item.expires_at
            )
            result = session.execute(
                sa.update(HeadsUp)
                .where(mine, HeadsUp.state == State.RELEASED)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                raise _Lost
            heads_up_id = session.scalar(sa.select(HeadsUp.id).where(mine))
    except _Lost:
        return None
    assert heads_up_id is not None
    return HeldHeadsUp(heads_up_id, now, item.connection_id)


def mark(
    app: Relink,
    held: HeldHeadsUp,
    state: State,
    *,
    now: datetime,
    attempts: int,
    message_id: str | None = None,
    error: str | None = None,
) -> bool:
    """Record the end of this run's claim (fenced by it, as `ledger.mark`): a delivery is
    always recorded; any other state only over our own claim."""
    delivered = state in (State.SENT, State.OUTBOX)
    allowed = [State.CLAIMED, State.UNKNOWN, State.RELEASED] if delivered else [State.CLAIMED]
    values: dict[str, Any] = {
        "state": str(state),
        "attempts": HeadsUp.attempts + attempts,
        "last_error": (error or None) and error[:1000],
        "updated_at": now,
    }
    if delivered:
        values["sent_at"] = now
        values["provider_message_id"] = message_id and message_id[:200]
    with app.transaction() as session:
        result = session.execute(
            sa.update(HeadsUp)
            .where(
                HeadsUp.id == held.heads_up_id,
                HeadsUp.claimed_at == held.claimed_at,
                HeadsUp.state.in_([str(s) for s in allowed]),
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return False
        events.heads_up_changed(
            session,
            held.heads_up_id,
            held.connection_id,
            state,
            at=now,
            attempts=attempts,
            error=values["last_error"],
        )
        return True


def expire_stale_claims(app: Relink, *, now: datetime, lease: timedelta) -> int:
    """Heads-up claims older than the lease: `unknown` (they may have been sent)."""
    stale = (HeadsUp.state == State.CLAIMED, HeadsUp.claimed_at <= now - lease)
    why = (
        "the run that claimed it stopped before recording the result; "
        "it may have been sent (check SendGrid's activity)"
    )
    with app.transaction() as session:
        rows = session.execute(
            sa.select(HeadsUp.id, HeadsUp.connection_id).where(*stale).with_for_update()
        ).all()
        if not rows:
            return 0
        result = session.execute(
            sa.update(HeadsUp)
            .where(HeadsUp.id.in_([r.id for r in rows]), *stale)
            .values(state=str(State.UNKNOWN), last_error=why, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        for row in rows:
            events.heads_up_changed(
                session, row.id, row.connection_id, State.UNKNOWN, at=now, error=why
            )
        return result.rowcount


# --- for people: `relink outbox heads-ups` and the Emails page ------------------------------


@dataclass(frozen=True, slots=True)
class HeadsUpView:
    id: int
    state: str
    connection_id: int
    connection: str
    expires_at: datetime
    to: list[str]
    subject: str | None
    attempts: int
    claimed_at: datetime
    sent_at: datetime | None
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "connection_id": self.connection_id,
            "connection": self.connection,
            "expires_at": self.expires_at.isoformat(),
            "to": self.to,
            "subject": self.subject,
            "attempts": self.attempts,
            "claimed_at": self.claimed_at.isoformat(),
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "last_error": self.last_error,
        }


def list_heads_ups(
    session: sa.orm.Session,
    *,
    account_id: int | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[HeadsUpView]:
    """The heads-ups Relink has recorded (of one account's connections, with
    `account_id`), oldest first unless `newest_first`."""
    query = (
        sa.select(HeadsUp, Connection.name)
        .join(Connection, Connection.id == HeadsUp.connection_id)
        .order_by(HeadsUp.id.desc() if newest_first else HeadsUp.id)
        .limit(limit)
    )
    if account_id is not None:
        query = query.where(Connection.account_id == account_id)
    return [
        HeadsUpView(
            id=h.id,
            state=h.state,
            connection_id=h.connection_id,
            connection=name,
            expires_at=h.expires_at,
            to=list(h.recipients or []),
            subject=h.subject,
            attempts=h.attempts,
            claimed_at=h.claimed_at,
            sent_at=h.sent_at,
            last_error=h.last_error,
        )
        for h, name in session.execute(query)
    ]
