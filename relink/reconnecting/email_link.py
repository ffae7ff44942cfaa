"""Tell the owner now: email a connection's open disconnection to its owner (or the
account's admins) through the exactly-once ledger, so the 07:00 run never sends a second
one, and audit `connection.reconnect_requested` with the ledger's state of the email."""

from __future__ import annotations

from datetime import datetime

from relink import audit
from relink.app import Relink
from relink.emailing.sender import DisconnectionEmailed, email_disconnection
from relink.models import Connection, User
from relink.reconnecting.target import authorize, reconnect_url
from relink.timeutil import utcnow


def email_reconnect_link(
    app: Relink, connection_id: int, *, requested_by: str, now: datetime | None = None
) -> DisconnectionEmailed:
    """Email the connection's open disconnection to its owner (or, when the owner cannot
    receive it, the account's admins) now, through the exactly-once ledger
    (`email_disconnection`): the 07:00 run never sends a second one. Audited with the
    ledger's state of the email."""
    now = now or utcnow()
    with app.sessions() as session:
        actor, _ = authorize(session, requested_by, connection_id)
    emailed = email_disconnection(app, connection_id, now=now)
    with app.transaction() as session:
        audit.record(
            session,
            "connection.reconnect_requested",
            at=now,
            connection=session.get(Connection, connection_id),
            actor=session.get(User, actor.id),
            link=reconnect_url(app, connection_id),
            emailed=list(emailed.to),
            result=emailed.result,
            notification_id=emailed.notification_id,
            earlier=emailed.earlier,
        )
    return emailed
