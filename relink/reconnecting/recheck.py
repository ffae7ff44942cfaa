"""Check a connection's stored credentials again, through the check sweep's own batch (same
state rules, same recording): the problem may have been fixed at the source. The result,
`Rechecked`, says the outcome, the status and, while it is still broken, where its owner
reconnects it (the reconnect-connection flow's first step)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relink.app import Relink
from relink.checks import check_range
from relink.domain.broken import is_broken
from relink.domain.words import Status
from relink.models import Connection
from relink.reconnecting.target import authorize, reconnect_url
from relink.sweep.validate import CheckPolicy
from relink.timeutil import utcnow


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
