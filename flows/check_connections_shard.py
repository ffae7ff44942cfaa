"""check-connections-shard: one id range of a fanned-out check-connections sweep.

Started by check-connections (one run per shard). The shard is claimed in the
database first: a run that finds it already claimed exits without checking.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact

from flows.check_connections import check_ranges, policy_for
from relink.app import get_app
from relink.sweeps import claim_shard, finish_shard, merge_batches, plan_window, worker_identity
from relink.timeutil import utcnow


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
) -> dict[str, Any]:
    """Claim shard `shard` of sweep `sweep_id` and check its connections.

    Args:
        sweep_id: The sweep (the check-connections flow run id) the shard belongs to.
        shard: The shard's number within the sweep (1, 2, ...).
        batch_size: Connections per task run (one database transaction each).
        concurrency: Checks in flight at once in this run.
        per_provider: Of those, at most this many against one provider.
    """
    app = get_app()
    app.ensure_schema()
    logger = get_run_logger()
    me = worker_identity()
    claim = await asyncio.to_thread(claim_shard, app, sweep_id, shard, claimant=me, now=utcnow())
    if claim is None:
        logger.info("shard %d of sweep %s is already claimed: nothing to do", shard, sweep_id)
        return {"sweep_id": sweep_id, "shard": shard, "claimed": False}
    with app.sessions() as session:
        ranges = plan_window(session, max(1, batch_size), claim.after_id, claim.upto_id)
    batches = await check_ranges(ranges, policy_for(batch_size, concurrency, per_provider))
    summary = merge_batches(batches)
    await asyncio.to_thread(finish_shard, app, sweep_id, shard, summary, now=utcnow())
    upto = "end" if claim.upto_id is None else claim.upto_id
    logger.info(
        "shard %d (ids %d..%s] by %s: %d checked",
        shard,
        claim.after_id,
        upto,
        me,
        summary["checked"],
    )
    outcomes = "\n".join(f"| {k} | {v} |" for k, v in sorted(summary["outcomes"].items()))
    await acreate_markdown_artifact(
        f"# Shard {shard} of sweep {sweep_id}\n\n"
        f"Connection ids ({claim.after_id}, {upto}], checked by `{me}`: "
        f"{summary['checked']} connection(s) in {len(ranges)} batch(es).\n\n"
        f"| outcome | connections |\n| --- | --- |\n{outcomes}\n\n"
        f"Disconnections opened: {summary['opened']}; closed: {summary['closed']}.\n",
        key="check-connections-shard",
        description=f"Shard {shard} of a connection check",
    )
    return {"sweep_id": sweep_id, "shard": shard, "claimed": True, "claimed_by": me, **summary}
