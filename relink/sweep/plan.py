"""Which connections a sweep checks, cut into id ranges: batches (one transaction and,
in the flow, one task run each) and shards (one flow run each). Only every size-th id
is read, so planning 100k connections stays small."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from relink.models import Connection

Range = tuple[int, int | None]
"""(after_id, upto_id]: the connections with after_id < id <= upto_id (None: no end)."""


def plan_window(
    session: Session, size: int, after_id: int = 0, upto_id: int | None = None
) -> list[Range]:
    """(after, upto] id ranges of at most `size` connections inside (after_id, upto_id].

    The last range ends at `upto_id`; when that is None it is open-ended, so connections
    added meanwhile are checked too.
    """
    where = [Connection.id > after_id]
    if upto_id is not None:
        where.append(Connection.id <= upto_id)
    numbered = (
        sa.select(Connection.id, sa.func.row_number().over(order_by=Connection.id).label("n"))
        .where(*where)
        .subquery()
    )
    bounds = list(
        session.scalars(
            sa.select(numbered.c.id).where(numbered.c.n % size == 0).order_by(numbered.c.id)
        )
    )
    last = bounds[-1] if bounds else after_id
    tail_where = [Connection.id > last]
    if upto_id is not None:
        tail_where.append(Connection.id <= upto_id)
    has_tail = session.scalar(sa.select(Connection.id).where(*tail_where).limit(1)) is not None
    starts = [after_id, *bounds]
    ranges: list[Range] = list(zip(starts, [*bounds, upto_id], strict=True))
    if not has_tail:
        ranges = ranges[:-1]
        if ranges and upto_id is None:
            ranges[-1] = (ranges[-1][0], None)
    return ranges


def plan_batches(
    session: Session, size: int, connection_ids: Sequence[int] | None = None
) -> list[Range]:
    """The batches of a sweep of every connection, or of only `connection_ids`."""
    if connection_ids:
        ids = sorted(set(connection_ids))
        chunks = [ids[i : i + size] for i in range(0, len(ids), size)]
        return [(chunk[0] - 1, chunk[-1]) for chunk in chunks]
    return plan_window(session, size)


def connections_in(session: Session, after_id: int, upto_id: int | None) -> int:
    """How many connections a range holds now."""
    query = sa.select(sa.func.count(Connection.id)).where(Connection.id > after_id)
    if upto_id is not None:
        query = query.where(Connection.id <= upto_id)
    return session.scalar(query) or 0
