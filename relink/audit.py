"""The audit trail: one row per change a person or a flow made to a connection."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from relink.models import AuditEvent, Connection, User


def record(
    session: Session,
    action: str,
    *,
    at: datetime,
    connection: Connection | None = None,
    actor: User | None = None,
    account_id: int | None = None,
    **details: Any,
) -> AuditEvent:
    """Add an event; `details` must be plain, non-secret values."""
    event = AuditEvent(
        at=at,
        action=action,
        connection_id=connection.id if connection else None,
        account_id=account_id or (connection.account_id if connection else None),
        actor_id=actor.id if actor else None,
        details=details,
    )
    session.add(event)
    return event
