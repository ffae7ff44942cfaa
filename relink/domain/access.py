"""Who may see and reconnect which connection. Pure rules over plain values."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from relink.domain.words import Role


@dataclass(frozen=True, slots=True)
class Viewer:
    id: int
    account_id: int
    role: str
    active: bool = True


@dataclass(frozen=True, slots=True)
class ConnectionRef:
    account_id: int
    owner_id: int
    shared_with: Collection[int] = ()


def can_view(viewer: Viewer, conn: ConnectionRef) -> bool:
    """Admins see their whole account; members their own and shared ones; nobody another's."""
    if not viewer.active or viewer.account_id != conn.account_id:
        return False
    if viewer.role == Role.ADMIN:
        return True
    return viewer.id == conn.owner_id or viewer.id in conn.shared_with


def can_reconnect(viewer: Viewer, conn: ConnectionRef) -> bool:
    """Admins, the owner and users the connection is shared with."""
    return can_view(viewer, conn)


def can_share(viewer: Viewer, conn: ConnectionRef) -> bool:
    """Sharing hands out access: only admins and the owner may do it."""
    if not can_view(viewer, conn):
        return False
    return viewer.role == Role.ADMIN or viewer.id == conn.owner_id
