"""check-connections: validate every connection's credentials and record what broke.

Installation problems (misconfigured results: the OAuth app's client refused, a missing
app setting) are logged at WARNING and published as an artifact of their own naming the
providers and the fix; they break no connection, and the run still completes.

A small sweep runs here, batch by batch. A large one (more than one shard of
`shard_size` connections, run as a deployment) fans out: one check-connections-shard
flow run per shard, so the work pool's workers share the sweep; each shard is claimed
in the database, so no two workers check the same connections.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from prefect import flow, get_client, get_run_logger
from prefect.artifacts import acreate_markdown_artifact

from deployments.definitions import SHARD_SIZE, by_name
from relink.app import get_app
from relink.checks import CheckPolicy, SweepSummary, plan_ranges
from relink.models import Connection
from relink.sweeps import create_shards, merge_batches, plan_window, record_sweep, shards_of
from relink.timeutil import utcnow
from tasks.checks import check_batch

PARALLEL_BATCHES = 2
SHARD_POLL_SECONDS = 1.0


def _run_name() -> str:
    from prefect.runtime import flow_run

    ids = flow_run.parameters.get("connection_ids")
    if ids:
        return f"check {len(ids):,} connection(s)"
    with get_app().sessions() as session:
        count = session.scalar(sa.select(sa.func.count(Connection.id)))
    return f"check {count:,} connections"


def policy_for(batch_size: int, concurrency: int, per_provider: int) -> CheckPolicy:
    """The caps of one run, split over its PARALLEL_BATCHES concurrent batches."""
    return CheckPolicy(
        batch_size=batch_size,
        concurrency=max(1, math.ceil(concurrency / PARALLEL_BATCHES)),
        per_provider=max(1, math.ceil(per_provider / PARALLEL_BATCHES)),
        timeout=get_app().settings.check_timeout,
    )


async def check_ranges(
    ranges: Sequence[tuple[int, int | None]],
    policy: CheckPolicy,
    connection_ids: list[int] | None = None,
) -> list[dict[str, Any]]:
    """One check-batch task run per range, PARALLEL_BATCHES at a time."""
    in_flight = asyncio.Semaphore(PARALLEL_BATCHES)
    params = dataclasses.asdict(policy)

    async def run(after_id: int, upto_id: int | None) -> dict[str, Any]:
        async with in_flight:
            return await check_batch(after_id, upto_id, params, connection_ids)

    return list(await asyncio.gather(*(run(a, b) for a, b in ranges)))


@flow(name="check-connections", flow_run_name=_run_name, log_prints=False)
async def check_connections(
    connection_ids: list[int] | None = None,
    batch_size: int = 200,
    concurrency: int = 50,
    per_provider: int = 20,
    shard_size: int = SHARD_SIZE,
    fan_out: bool | None = None,
) -> dict[str, Any]:
    """Check every connection (or only `connection_ids`) and publish a summary.

    Connections are read in keyset batches; each batch is one task run that checks
    its connections concurrently.

    Args:
        connection_ids: Check only these connection ids; empty checks every connection.
        batch_size: Connections per task run (one database transaction each).
        concurrency: Checks in flight at once in this run (and in each shard run).
        per_provider: Of those, at most this many against one provider.
        shard_size: Connections per shard when the sweep fans out over the workers.
        fan_out: Run each shard as a check-connections-shard flow run, so the pool's
            workers share the sweep. Empty: automatically, when this is a deployment
            run and there is more than one shard. Ignored with connection_ids.
    """
    from prefect.runtime import deployment, flow_run

    app = get_app()
    app.ensure_schema()
    logger = get_run_logger()
    started = time.perf_counter()
    policy = policy_for(batch_size, concurrency, per_provider)
    shards: list[tuple[int, int | None]] = []
    if not connection_ids:
        with app.sessions() as session:
            shards = plan_window(session, max(1, shard_size))
    if fan_out is None:
        fan_out = deployment.id is not None and len(shards) > 1
    sweep_id = str(flow_run.id or uuid.uuid4())
    failed_shards: list[int] = []
    if fan_out and shards:
        batches, failed_shards = await _fan_out(
            sweep_id,
            shards,
            batch_size=batch_size,
            concurrency=concurrency,
            per_provider=per_provider,
        )
    else:
        with app.sessions() as session:
            ranges = plan_ranges(session, batch_size, connection_ids)
        batches = await check_ranges(ranges, policy, connection_ids)
    summary = SweepSummary.combine(batches, duration_s=time.perf_counter() - started)
    result = {
        **summary.as_dict(),
        "sweep_id": sweep_id,
        "shards": len(shards) if fan_out else 0,
        "failed_shards": failed_shards,
    }
    with app.transaction() as session:
        record_sweep(
            session,
            result,
            now=utcnow(),
            source="check-connections",
            flow_run_id=str(flow_run.id) if flow_run.id else None,
            outcome="failed" if failed_shards else "completed",
        )
    logger.info(
        "checked %d connections: %s",
        summary.checked,
        {str(k): v for k, v in summary.outcomes.items()},
    )
    for incident in summary.incidents:
        logger.warning("provider incident: %s", incident.describe())
    for problem in summary.installation_problems:
        logger.warning("installation problem (an admin fixes it): %s", problem.describe())
    if summary.installation_problems:
        await acreate_markdown_artifact(
            summary.installation_markdown(),
            key="check-connections-installation",
            description="Installation problems: only an admin can fix these",
        )
    markdown = summary.markdown()
    if fan_out:
        markdown += f"\nFanned out over {len(shards)} shard(s) of {shard_size} connections.\n"
    if failed_shards:
        markdown += f"\n**Shards that did not finish:** {', '.join(map(str, failed_shards))}\n"
    await acreate_markdown_artifact(
        markdown, key="check-connections-summary", description="Connection check"
    )
    if failed_shards:
        raise RuntimeError(f"shard(s) {failed_shards} of sweep {sweep_id} did not finish")
    return result


async def _fan_out(
    sweep_id: str,
    shards: Sequence[tuple[int, int | None]],
    *,
    batch_size: int,
    concurrency: int,
    per_provider: int,
) -> tuple[list[dict[str, Any]], list[int]]:
    """Start one shard flow run per shard, wait for all; their summaries and the failures."""
    from prefect.deployments.flow_runs import arun_deployment

    app = get_app()
    with app.transaction() as session:
        numbers = create_shards(session, sweep_id, shards, now=utcnow())
    spec = by_name("check-connections-shard")
    params = {
        "sweep_id": sweep_id,
        "batch_size": batch_size,
        "concurrency": concurrency,
        "per_provider": per_provider,
    }
    runs = await asyncio.gather(
        *(
            arun_deployment(
                spec.full_name,
                parameters={**params, "shard": number},
                timeout=0,
                idempotency_key=f"{sweep_id}:shard-{number}",
            )
            for number in numbers
        )
    )
    get_run_logger().info("sweep %s: started %d shard run(s)", sweep_id, len(runs))
    pending = {run.id for run in runs}
    failed: set[uuid.UUID] = set()
    async with get_client() as client:
        while pending:
            await asyncio.sleep(SHARD_POLL_SECONDS)
            for run_id in list(pending):
                state = (await client.read_flow_run(run_id)).state
                if state is not None and state.is_final():
                    pending.discard(run_id)
                    if not state.is_completed():
                        failed.add(run_id)
    with app.sessions() as session:
        rows = shards_of(session, sweep_id)
    batches = [row.summary for row in rows if row.summary is not None]
    unfinished = [row.shard for row in rows if row.finished_at is None]
    if failed and not unfinished:
        get_run_logger().warning("%d shard run(s) failed after finishing", len(failed))
    return [merge_batches(batches)] if batches else [], unfinished
