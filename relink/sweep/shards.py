"""The shards of a fanned-out sweep. A large sweep is cut into shards (id ranges of
`shard_size` connections), one `sweep_shards` row each, and one
check-connections-shard flow run per shard. A shard run CLAIMS its row with a
conditional UPDATE (`claimed_by IS NULL`): exactly one claimant wins, so a shard started
twice (a retry, a duplicated run) is checked once. The sweep claims the row of a shard
whose run never started (`withdraw_shard`), so a worker that picks the run up late
checks nothing."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from relink.app import Relink
from relink.models import SweepShard
from relink.sweep.plan import Range

WITHDRAWN = "not started: withdrawn by its sweep"
"""The claimant of a shard the sweep took back because its run never started."""


def worker_identity() -> str:
    """Who is checking: `RELINK_WORKER_NAME` (or the host) and this process's parent and
    own pid. A process worker runs each flow run in a child process, so the parent pid
    names the worker."""
    name = os.environ.get("RELINK_WORKER_NAME") or socket.gethostname()
    return f"{name}:{os.getppid()}:{os.getpid()}"[:200]


def create_shards(
    session: Session, sweep_id: str, ranges: Sequence[Range], *, now: datetime
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
class ShardClaim:
    sweep_id: str
    shard: int
    after_id: int
    upto_id: int | None
    claimed_by: str


def claim_shard(
    app: Relink, sweep_id: str, shard: int, *, claimant: str, now: datetime
) -> ShardClaim | None:
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
    return ShardClaim(sweep_id, shard, row.after_id, row.upto_id, claimant)


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


def withdraw_shard(app: Relink, sweep_id: str, shard: int, *, now: datetime) -> bool:
    """Take back a shard whose run has not claimed it yet: True when the sweep got it
    (no run will check it), False when a run claimed it first (it goes on)."""
    return claim_shard(app, sweep_id, shard, claimant=WITHDRAWN, now=now) is not None
