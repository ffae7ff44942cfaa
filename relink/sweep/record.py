"""The record of a sweep: an audit event `sweep.finished` holding its summary (counts
only, no secrets), and the newest one for `relink status` and `relink run`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from relink import audit
from relink.models import AuditEvent

SWEEP_FINISHED = "sweep.finished"


def record_sweep(
    session: Session, summary: dict[str, Any], *, now: datetime, source: str, **extra: Any
) -> None:
    """An audit event `sweep.finished` holding the summary (counts only, no secrets)."""
    audit.record(session, SWEEP_FINISHED, at=now, source=source, **extra, summary=summary)


def last_sweep(session: Session) -> dict[str, Any] | None:
    """The newest `sweep.finished` event: when, from where, and its summary."""
    event = session.scalar(
        sa.select(AuditEvent)
        .where(AuditEvent.action == SWEEP_FINISHED)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .limit(1)
    )
    if event is None:
        return None
    return {"at": event.at.isoformat(), **event.details}
