"""Which datasets a refresh looks at: a connection's datasets, the given ids, or (neither)
all; an unknown id is NotFound and giving both is InvalidInput. `plan_refresh` adds who
asked, the actor of each refresh."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from relink.app import Relink
from relink.directory import get_user
from relink.errors import InvalidInput, NotFound
from relink.models import Connection, Dataset


def select_datasets(
    session: Session,
    *,
    connection_id: int | None = None,
    dataset_ids: Sequence[int] | None = None,
) -> list[int]:
    """The ids to refresh: a connection's datasets, the given ones, or (neither) all.

    Unknown ids are NotFound; giving both is InvalidInput.
    """
    if connection_id is not None and dataset_ids:
        raise InvalidInput("give a connection or dataset ids, not both")
    if connection_id is not None:
        if session.get(Connection, connection_id) is None:
            raise NotFound(f"unknown connection {connection_id}; see `relink connections list`")
        return list(
            session.scalars(
                sa.select(Dataset.id)
                .where(Dataset.connection_id == connection_id)
                .order_by(Dataset.id)
            )
        )
    if dataset_ids:
        wanted = sorted(set(dataset_ids))
        found = set(session.scalars(sa.select(Dataset.id).where(Dataset.id.in_(wanted))))
        missing = [i for i in wanted if i not in found]
        if missing:
            raise NotFound(f"unknown dataset {missing[0]}; see `relink connections show ID`")
        return wanted
    return list(session.scalars(sa.select(Dataset.id).order_by(Dataset.id)))


def plan_refresh(
    app: Relink,
    *,
    connection_id: int | None = None,
    dataset_ids: Sequence[int] | None = None,
    requested_by: str | None = None,
) -> tuple[list[int], int | None]:
    """The datasets to refresh (`select_datasets`) and the id of who asked (the actor of
    each refresh in the audit trail; None: Relink itself)."""
    with app.sessions() as session:
        actor_id = get_user(session, requested_by).id if requested_by else None
        return select_datasets(
            session, connection_id=connection_id, dataset_ids=dataset_ids
        ), actor_id
