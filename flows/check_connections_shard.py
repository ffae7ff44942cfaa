"""check-connections-shard: one id range of a fanned-out check-connections sweep.

Started by check-connections (one run per shard), checking as of the sweep's time. The
shard is claimed in the database first (`relink.sweep.run.run_shard`): a run that finds
it already claimed (by another run, or by its sweep after it waited too long for this
one to start) exits without checking.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact

from flows.check_connections import sweep_policy
from flows.logical_time import logical_now
from relink.app import get_app
from relink.sweep.run import run_shard
from relink.sweep.shards import worker_identity
from tasks.checks import STEPS


@flow(
    name="check-connections-shard",
    flow_run_name="check shard {shard} of sweep {sweep_id}",
    log_prints=False,
)
async def check_connections_shard(
    sweep_id: str,
    shard: int,
    batch_size: int = 200,
    concurrency: int = 50,
    per_provider: int = 20,
    as_of: datetime | None = None,
) -> dict[str, Any]:
    """Claim shard `shard` of sweep `sweep_id` and check its connections.

    Args:
        sweep_id: The sweep (the check-connections flow run id) the shard belongs to.
        shard: The shard's number within the sweep (1, 2, ...).
        batch_size: Connections per task run (one database transaction each).
        concurrency: Checks in flight at once in this run.
        per_provider: Of those, at most this many against one provider.
        as_of: The sweep's time, recorded as the time of every check. Empty: this run's.
    """
    app = get_app()
    app.ensure_schema()
    logger = get_run_logger()
    me = worker_identity()
    done = await run_shard(
        app,
        now=as_of or logical_now(),
        steps=STEPS,
        policy=sweep_policy(batch_size, concurrency, per_provider),
        sweep_id=sweep_id,
        shard=shard,
        claimant=me,
    )
    if done is None:
        logger.info("shard %d of sweep %s is already claimed: nothing to do", shard, sweep_id)
        return {"sweep_id": sweep_id, "shard": shard, "claimed": False}
    after_id, summary = done.after_id, done.summary
    upto = "end" if done.upto_id is None else done.upto_id
    logger.info(
        "shard %d (ids %d..%s] by %s: %d checked", shard, after_id, upto, me, summary["checked"]
    )
    outcomes = "\n".join(f"| {k} | {v} |" for k, v in sorted(summary["outcomes"].items()))
    await acreate_markdown_artifact(
        f"# Shard {shard} of sweep {sweep_id}\n\n"
        f"Connection ids ({after_id}, {upto}], checked by `{me}`: "
        f"{summary['checked']} connection(s) in {done.batches} batch(es).\n\n"
        f"| outcome | connections |\n| --- | --- |\n{outcomes}\n\n"
        f"Disconnections opened: {summary['opened']}; closed: {summary['closed']}.\n",
        key="check-connections-shard",
        description=f"Shard {shard} of a connection check",
    )
    return {"sweep_id": sweep_id, "shard": shard, "claimed": True, "claimed_by": me, **summary}
