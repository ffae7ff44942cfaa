"""Sweeps that fan out over a pool of workers, and the record of the last sweep.

A large `check-connections` sweep is cut into shards (id ranges of `shard_size`
connections). The sweep writes one `sweep_shards` row per shard, then starts one
`check-connections-shard` flow run per shard. A shard run CLAIMS its row with a
conditional UPDATE (`claimed_by IS NULL`): exactly one claimant wins, so a shard
started twice (a retry, a duplicated run) is checked once. Prefect-free.
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from relink import audit
from relink.app import Relink
from relink.models import AuditEvent, Connection, SweepShard

SWEEP_FINISHED = "sweep.finished"
COUNT_KEYS = ("checked", "opened", "closed", "status_changes", "skipped")


def worker_identity() -> str:
    """Who is checking: `RELINK_WORKER_NAME` (or the host) and this process's parent and
    own pid. A process worker runs each flow run in a child process, so the parent pid
    names the worker."""
    name = os.environ.get("RELINK_WORKER_NAME") or socket.gethostname()
    return f"{name}:{os.getppid()}:{os.getpid()}"[:200]


def plan_window(
    session: Session, size: int, after_id: int = 0, upto_id: int | None = None
) -> list[tuple[int, int | None]]:
    """(after, upto] id ranges of at most `size` connections inside (after_id, upto_id].

    Only every size-th id is read. The last range ends at `upto_id` (None: open-ended).
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
    ranges: list[tuple[int, int | None]] = list(zip(starts, [*bounds, upto_id], strict=True))
    if not has_tail:
        ranges = ranges[:-1]
        if ranges and upto_id is None:
            # keep the last range open-ended: connections added meanwhile are checked too
            ranges[-1] = (ranges[-1][0], None)
    return ranges


def create_shards(
    session: Session, sweep_id: str, ranges: Sequence[tuple[int, int | None]], *, now: datetime
) -> list[int]:
    """The shard rows of a sweep (idempotent: a rerun of the same sweep adds nothing)."""
    existing = set(
        session.scalars(sa.select(SweepShard.shard).where(SweepShard.sweep_id == sweep_id))
    )
    for number, (after_id, upto_id) in enumerate(ranges, start=1):
        if number not in existing:
            session.add(
                SweepShard(
                    sweep_id=sweep_id,
                    shard=number,
                    after_id=after_id,
                    upto_id=upto_id,
                    created_at=now,
                )
            )
    session.flush()
    return list(range(1, len(ranges) + 1))


@dataclass(frozen=True)
class Claim:
    sweep_id: str
    shard: int
    after_id: int
    upto_id: int | None
    claimed_by: str


def claim_shard(
    app: Relink, sweep_id: str, shard: int, *, claimant: str, now: datetime
) -> Claim | None:
    """Claim a shard (conditional UPDATE); None when someone already has it."""
    with app.transaction() as session:
        result = session.execute(
            sa.update(SweepShard)
            .where(
                SweepShard.sweep_id == sweep_id,
                SweepShard.shard == shard,
                SweepShard.claimed_by.is_(None),
            )
            .values(claimed_by=claimant, claimed_at=now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return None
        row = session.execute(
            sa.select(SweepShard.after_id, SweepShard.upto_id).where(
                SweepShard.sweep_id == sweep_id, SweepShard.shard == shard
            )
        ).one()
    return Claim(sweep_id, shard, row.after_id, row.upto_id, claimant)


def finish_shard(
    app: Relink, sweep_id: str, shard: int, summary: dict[str, Any], *, now: datetime
) -> None:
    with app.transaction() as session:
        session.execute(
            sa.update(SweepShard)
            .where(SweepShard.sweep_id == sweep_id, SweepShard.shard == shard)
            .values(finished_at=now, summary=summary)
            .execution_options(synchronize_session=False)
        )


def shards_of(session: Session, sweep_id: str) -> list[SweepShard]:
    return list(
        session.scalars(
            sa.select(SweepShard).where(SweepShard.sweep_id == sweep_id).order_by(SweepShard.shard)
        )
    )


def merge_batches(batches: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch summaries (`BatchSummary.as_dict()`) added up into one of the same shape."""
    totals: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    by_provider: Counter[str] = Counter()
    installation: dict[str, str] = {}
    for batch in batches:
        for key in COUNT_KEYS:
            totals[key] += batch.get(key, 0)
        outcomes.update(batch.get("outcomes", {}))
        by_provider.update(batch.get("by_provider", {}))
        for key, fix in batch.get("installation", {}).items():
            installation.setdefault(key, fix)
    return {
        **{key: totals[key] for key in COUNT_KEYS},
        "outcomes": dict(outcomes),
        "by_provider": dict(by_provider),
        "installation": installation,
    }


# --- the last sweep ------------------------------------------------------------------


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
