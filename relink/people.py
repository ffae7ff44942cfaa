"""People leave: deactivate and reactivate a user, and hand a connection to someone else.

A deactivated user cannot sign in (web pages, `--as`), and sees nothing; their
connections stay checked, and their disconnection emails go to the account's admins
(relink/domain/recipients.py) until someone reconnects the connection or an admin
transfers it. Whoever stops being a connection's owner ("Created By"), by a transfer or
because someone else reconnected it, keeps seeing it: it is shared with them (audited),
unless they are deactivated. Every refusal is one line and changes nothing.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from relink import audit
from relink.connections import get_visible
from relink.directory import get_actor, get_user, viewer_of
from relink.errors import Conflict, InvalidInput, PermissionDenied
from relink.models import Account, Connection, ConnectionShare, Role, User


def deactivate(session: Session, email: str, *, now: datetime) -> User:
    """The user can no longer sign in; refused for the last active admin of an account."""
    user = get_user(session, email)
    if not user.active:
        raise Conflict(f"{user.email} is already deactivated")
    if user.role == Role.ADMIN:
        others = session.scalar(
            sa.select(sa.func.count(User.id)).where(
                User.account_id == user.account_id,
                User.role == Role.ADMIN,
                User.active.is_(True),
                User.id != user.id,
            )
        )
        if not others:
            account = session.get(Account, user.account_id)
            raise Conflict(
                f"{user.email} is the last active admin of {account.name!r}: add or reactivate "
                "another admin first (`relink users add ... --role admin`)"
            )
    user.active = False
    audit.record(session, "user.deactivated", at=now, account_id=user.account_id, user=user.email)
    return user


def reactivate(session: Session, email: str, *, now: datetime) -> User:
    """The user can sign in again and sees what they saw before."""
    user = get_user(session, email)
    if user.active:
        raise Conflict(f"{user.email} is active already")
    user.active = True
    audit.record(session, "user.reactivated", at=now, account_id=user.account_id, user=user.email)
    return user


def keep_access(
    session: Session, conn: Connection, previous: User, *, actor: User | None, now: datetime
) -> None:
    """`previous` stops being the owner: share the connection with them (audited), unless
    they are deactivated or it is shared with them already."""
    if not previous.active or any(s.user_id == previous.id for s in conn.shares):
        return
    conn.shares.append(ConnectionShare(connection_id=conn.id, user_id=previous.id))
    audit.record(
        session,
        "connection.shared",
        at=now,
        connection=conn,
        actor=actor,
        shared_with=previous.email,
        reason="previous owner",
    )


def transfer(
    session: Session, connection_id: int, *, to_email: str, actor_email: str, now: datetime
) -> Connection:
    """An admin makes `to_email` the connection's owner ("Created By")."""
    actor = get_actor(session, actor_email)
    if actor.role != Role.ADMIN:
        raise PermissionDenied(f"only an admin may transfer a connection; {actor.email} is not")
    conn = get_visible(session, viewer_of(actor), connection_id)
    target = get_user(session, to_email)
    if target.account_id != conn.account_id:
        raise InvalidInput(f"{target.email} belongs to another account; transfer within yours")
    if not target.active:
        raise InvalidInput(
            f"{target.email} is deactivated; reactivate them first (`relink users reactivate`)"
        )
    if target.id == conn.owner_id:
        raise Conflict(f"{target.email} owns connection {conn.id} already")
    previous = conn.owner
    keep_access(session, conn, previous, actor=actor, now=now)
    conn.owner = target
    conn.updated_at = now
    audit.record(
        session,
        "connection.owner_changed",
        at=now,
        connection=conn,
        actor=actor,
        previous_owner=previous.email,
        owner=target.email,
        reason="transfer",
    )
    session.flush()
    return conn
