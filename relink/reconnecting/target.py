"""Who may reconnect which connection (`authorize`: NotFound for a connection the actor
cannot see, PermissionDenied for one they may see but not reconnect), the connector of a
connection, the page where its owner reconnects it, and the stored state a validation
starts from (`load_target`: read in one session, used outside it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

import connectors
from connectors.base import Connector
from relink.app import Relink
from relink.connections import get_visible, ref_of
from relink.directory import get_actor, viewer_of
from relink.domain.access import can_reconnect
from relink.domain.identity import Identity
from relink.errors import InvalidInput, PermissionDenied
from relink.models import Connection, User


def reconnect_url(app: Relink, connection_id: int) -> str:
    """The connection's page, where its owner reconnects it."""
    return f"{app.settings.base_url.rstrip('/')}/connections/{connection_id}"


def authorize(session: Session, actor_email: str, connection_id: int) -> tuple[User, Connection]:
    """The actor and the connection they may reconnect (NotFound / PermissionDenied)."""
    actor = get_actor(session, actor_email)
    viewer = viewer_of(actor)
    conn = get_visible(session, viewer, connection_id)
    if not can_reconnect(viewer, ref_of(conn)):
        raise PermissionDenied(
            f"you may see connection {conn.id} ({conn.name!r}) but not reconnect it; ask its "
            "owner or an admin"
        )
    return actor, conn


def connector_of(conn: Connection) -> Connector:
    try:
        return connectors.get(conn.type)
    except connectors.UnknownConnector as exc:
        raise InvalidInput(f"connection {conn.id}: {exc}") from None


@dataclass(frozen=True)
class Target:
    """What the validation needs: read in one session, used outside it."""

    actor_id: int
    actor_email: str
    connection_id: int
    connection: str
    type: str
    provider: str
    settings: Mapping[str, Any]
    credentials: Mapping[str, str]  # the stored ones
    version: int
    status: str
    identity: Identity | None = None  # whose account the stored credentials use


def load_target(app: Relink, actor_email: str, connection_id: int) -> Target:
    with app.sessions() as session:
        actor, conn = authorize(session, actor_email, connection_id)
        connector = connector_of(conn)
        credentials = app.vault.decrypt(conn.credentials, connection=f"{conn.id} ({conn.name!r})")
        return Target(
            actor_id=actor.id,
            actor_email=actor.email,
            connection_id=conn.id,
            connection=conn.name,
            type=conn.type,
            provider=connector.provider,
            settings=dict(conn.settings),
            credentials=credentials,
            version=conn.version,
            status=conn.status,
            identity=conn.identity,
        )
