"""Every disconnection email's record, for people: `relink outbox list / show`, and the
`unknown` ones a run's summary lists for an admin's decision."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from relink.app import Relink
from relink.errors import NotFound
from relink.models import Connection, Disconnection, Notification, NotificationState


@dataclass(frozen=True, slots=True)
class NotificationView:
    id: int
    state: str
    disconnection_id: int
    connection_id: int
    connection: str
    to: list[str]
    subject: str | None
    attempts: int
    claimed_at: datetime
    sent_at: datetime | None
    provider_message_id: str | None
    last_error: str | None
    disconnection_open: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "disconnection_id": self.disconnection_id,
            "connection_id": self.connection_id,
            "connection": self.connection,
            "to": self.to,
            "subject": self.subject,
            "attempts": self.attempts,
            "claimed_at": self.claimed_at.isoformat(),
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "provider_message_id": self.provider_message_id,
            "last_error": self.last_error,
            "disconnection_open": self.disconnection_open,
        }


def _views(
    session: Session,
    *conditions: sa.ColumnElement[bool],
    limit: int | None = None,
    newest_first: bool = False,
):
    query = (
        sa.select(Notification, Disconnection, Connection.name)
        .join(Disconnection, Disconnection.id == Notification.disconnection_id)
        .join(Connection, Connection.id == Disconnection.connection_id)
        .where(*conditions)
        .order_by(Notification.id.desc() if newest_first else Notification.id)
        .limit(limit)
    )
    return [
        NotificationView(
            id=n.id,
            state=n.state,
            disconnection_id=d.id,
            connection_id=d.connection_id,
            connection=name,
            to=list(n.recipients or []),
            subject=n.subject,
            attempts=n.attempts,
            claimed_at=n.claimed_at,
            sent_at=n.sent_at,
            provider_message_id=n.provider_message_id,
            last_error=n.last_error,
            disconnection_open=d.ended_at is None,
        )
        for n, d, name in session.execute(query)
    ]


def list_notifications(
    session: Session,
    *,
    state: str | None = None,
    limit: int | None = None,
    account_id: int | None = None,
    newest_first: bool = False,
) -> list[NotificationView]:
    """The emails (of one account's connections, with `account_id`), oldest first."""
    conditions = [] if state is None else [Notification.state == state]
    if account_id is not None:
        conditions.append(Connection.account_id == account_id)
    return _views(session, *conditions, limit=limit, newest_first=newest_first)


def get_notification(
    session: Session, notification_id: int, *, account_id: int | None = None
) -> NotificationView:
    """One email; NotFound when there is none (or it is another account's)."""
    conditions = [Notification.id == notification_id]
    if account_id is not None:
        conditions.append(Connection.account_id == account_id)
    found = _views(session, *conditions)
    if not found:
        raise NotFound(f"no notification {notification_id}; see `relink outbox list`")
    return found[0]


def awaiting_decision(app: Relink, limit: int = 100) -> list[dict[str, Any]]:
    """The `unknown` notifications (an admin decides whether to release them)."""
    with app.sessions() as session:
        views = list_notifications(session, state=NotificationState.UNKNOWN, limit=limit)
    return [
        {
            "id": v.id,
            "disconnection_id": v.disconnection_id,
            "connection": v.connection,
            "to": v.to,
            "claimed_at": v.claimed_at.isoformat(),
            "last_error": v.last_error,
        }
        for v in views
    ]


def notification_of(session: Session, disconnection_id: int) -> NotificationView | None:
    """The one email of a disconnection, if it has one."""
    found = _views(session, Notification.disconnection_id == disconnection_id)
    return found[0] if found else None
