"""What is due, read from the database: `due_query` is the SQL form of the 24-hour
rule in relink/domain/due.py (over the `awaiting_email` flag the ledger keeps, through
the partial index `ix_disconnections_due`), `due_ids` runs it, and `load_due` gathers
what each due email needs (the connection, its last error with any credential blanked
out, the recipients chosen by relink/domain/recipients.py). `plan` is the dry run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

import connectors
from relink.app import Relink
from relink.domain.due import DUE_AFTER, cutoff
from relink.domain.recipients import Person, Recipients, choose_recipients
from relink.errors import VaultError
from relink.models import Connection, Disconnection, Notification, Role, User

if TYPE_CHECKING:
    from relink.emailing.render import DisconnectionFacts


def due_query(now: datetime, due_after: timedelta = DUE_AFTER) -> sa.Select[tuple[int]]:
    """Ids of the disconnections due at `now`.

    `ended_at IS NULL AND awaiting_email` is the predicate of the partial index
    `ix_disconnections_due` (on started_at): only the open episodes still waiting for
    their email are read, not the emailed ones nor the history of closed ones, and
    `notifications` is not read at all.

    The flag is an index helper, not the arbiter: an id returned here may be claimed by
    another run before this one gets to it. `claim` decides (the unique notification
    row, or `UPDATE ... WHERE state = 'released'`) and re-checks that the episode is
    still open; a lost race counts as `skipped`.
    """
    return sa.select(Disconnection.id).where(
        Disconnection.ended_at.is_(None),
        Disconnection.awaiting_email,  # SQLite: `= 1`, as in the index's sqlite_where
        Disconnection.started_at <= cutoff(now, due_after),
    )


def due_ids(
    session: Session,
    *,
    now: datetime,
    due_after: timedelta = DUE_AFTER,
    limit: int | None = None,
) -> list[int]:
    """The ids due at `now`, ascending: one pass through the partial index.

    With `limit`, the longest-open ones (the index's order). The run then works through
    the ids in batches of consecutive ids. Re-querying a keyset page per batch instead
    re-reads the open episodes (or scans the primary key) at every page; measured in
    docs/benchmarks.md.
    """
    query = due_query(now, due_after)
    if limit is not None:
        query = query.order_by(Disconnection.started_at, Disconnection.id).limit(limit)
    return sorted(session.scalars(query))


def email_reference(disconnection_id: int) -> str:
    """The one email of a disconnection: its outbox file name and SendGrid reference."""
    return f"disconnection-{disconnection_id}"


@dataclass(frozen=True, slots=True)
class DueEmail:
    """A due disconnection with everything its email needs (no credential)."""

    disconnection_id: int
    connection_id: int
    connection_name: str
    source_type: str
    account_id: int
    started_at: datetime
    last_error: str | None
    recipients: Recipients
    notification_state: str | None  # None, or "released"

    @property
    def reference(self) -> str:
        return email_reference(self.disconnection_id)

    def facts(self) -> DisconnectionFacts:
        from relink.emailing.render import DisconnectionFacts

        return DisconnectionFacts(
            connection_id=self.connection_id,
            connection_name=self.connection_name,
            source_type=self.source_type,
            invalid_since=self.started_at,
            last_error=self.last_error,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "disconnection_id": self.disconnection_id,
            "connection_id": self.connection_id,
            "connection": self.connection_name,
            "type": self.source_type,
            "invalid_since": self.started_at.isoformat(),
            "to": list(self.recipients.to),
            "why": self.recipients.why,
            "again": self.notification_state is not None,
        }


def load_due(app: Relink, ids: Sequence[int]) -> list[DueEmail]:
    """The facts and recipients of these disconnections, by id."""
    if not ids:
        return []
    owner = aliased(User)
    query = (
        sa.select(
            Disconnection.id,
            Disconnection.started_at,
            Connection.id.label("connection_id"),
            Connection.name,
            Connection.type,
            Connection.account_id,
            Connection.credentials,
            Connection.last_error_code,
            Connection.last_error_message,
            owner.email,
            owner.active,
            owner.role,
            Notification.state,
        )
        .join(Connection, Connection.id == Disconnection.connection_id)
        .join(owner, owner.id == Connection.owner_id)
        .outerjoin(Notification, Notification.disconnection_id == Disconnection.id)
        .where(Disconnection.id.in_(ids))
        .order_by(Disconnection.id)
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
    due: list[DueEmail] = []
    for row in rows:
        recipients = choose_recipients(
            Person(row.email, row.active, row.role), admins.get(row.account_id, [])
        )
        due.append(
            DueEmail(
                disconnection_id=row.id,
                connection_id=row.connection_id,
                connection_name=row.name,
                source_type=_display_name(row.type),
                account_id=row.account_id,
                started_at=row.started_at,
                last_error=_last_error(app, row),
                recipients=recipients,
                notification_state=row.state,
            )
        )
    return due


def _display_name(type_: str) -> str:
    try:
        return connectors.get(type_).display_name
    except connectors.UnknownConnector:
        return type_


def _last_error(app: Relink, row: Any) -> str | None:
    """The connection's last error, with any credential value blanked out.

    Connectors do not put secrets in messages; this is the second line of defence, as
    an email leaves our hands for good.
    """
    message = row.last_error_message
    if not message:
        return row.last_error_code
    try:
        secrets = app.vault.decrypt(row.credentials, connection=str(row.connection_id))
    except VaultError:
        secrets = {}
    for value in sorted((v for v in secrets.values() if isinstance(v, str)), key=len, reverse=True):
        if len(value) >= 4:
            message = message.replace(value, "[redacted]")
    code = row.last_error_code
    return f"{message} ({code})" if code and code not in message else message


def plan(
    app: Relink,
    *,
    now: datetime,
    due_after: timedelta = DUE_AFTER,
    limit: int | None = None,
) -> list[DueEmail]:
    """Who would be emailed at `now` (a dry run): reads only, claims and sends nothing."""
    with app.sessions() as session:
        ids = due_ids(session, now=now, due_after=due_after, limit=limit)
    return load_due(app, ids)
