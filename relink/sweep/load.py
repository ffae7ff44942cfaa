"""Reading one batch of connections for a check: the rows of an id range, their
credentials decrypted. A row that cannot be checked at all (an unknown connector type,
credentials that do not decrypt) comes back as `Unloadable`, to be recorded as an
error without stopping the sweep."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

import connectors
from connectors.base import ConnectionSpec
from relink.app import Relink
from relink.domain.expiry import KEEP_ALIVE_MARGIN, Expiry, ExpiryKind, keep_alive_due
from relink.errors import VaultError
from relink.models import Connection


@dataclass(frozen=True, slots=True)
class Unloadable:
    connection_id: int
    provider: str
    version: int
    code: str
    message: str


def load_batch(
    app: Relink,
    after_id: int,
    upto_id: int | None,
    only: Sequence[int] | None = None,
    *,
    now: datetime | None = None,
    keep_alive: timedelta = KEEP_ALIVE_MARGIN,
) -> list[ConnectionSpec | Unloadable]:
    """The connections in (after_id, upto_id], decrypted; bad ones as Unloadable. With
    `now`, a connection whose refresh token lapses unused within `keep_alive` of it is
    marked to be refreshed by its check (`ConnectionSpec.keep_alive`)."""
    query = (
        sa.select(
            Connection.id,
            Connection.name,
            Connection.type,
            Connection.settings,
            Connection.credentials,
            Connection.version,
            Connection.credentials_expire_at,
            Connection.credentials_expiry_kind,
        )
        .where(Connection.id > after_id)
        .order_by(Connection.id)
    )
    if upto_id is not None:
        query = query.where(Connection.id <= upto_id)
    if only:
        query = query.where(Connection.id.in_(only))
    with app.sessions() as session:
        rows = session.execute(query).all()
    loaded: list[ConnectionSpec | Unloadable] = []
    for row in rows:
        try:
            connector = connectors.get(row.type)
        except connectors.UnknownConnector:
            loaded.append(
                Unloadable(
                    row.id,
                    row.type,
                    row.version,
                    "unknown_type",
                    f"unknown connector type {row.type!r}",
                )
            )
            continue
        try:
            credentials = app.vault.decrypt(row.credentials, connection=f"{row.id} ({row.name!r})")
        except VaultError as exc:
            loaded.append(
                Unloadable(row.id, connector.provider, row.version, "vault_error", str(exc))
            )
            continue
        kind = row.credentials_expiry_kind
        expiry = Expiry(row.credentials_expire_at, ExpiryKind(kind) if kind else None)
        due = now is not None and keep_alive_due(expiry, now, keep_alive)
        loaded.append(ConnectionSpec(row.id, row.type, row.settings, credentials, row.version, due))
    return loaded
