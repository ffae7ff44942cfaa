"""check-connections: validate every connection's credentials and record what broke."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from typing import Any

import sqlalchemy as sa
from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact

from relink.app import get_app
from relink.checks import CheckPolicy, SweepSummary, plan_ranges
from relink.models import Connection
from tasks.checks import check_batch

PARALLEL_BATCHES = 2


def _run_name() -> str:
    from prefect.runtime import flow_run

    ids = flow_run.parameters.get("connection_ids")
    if ids:
        return f"check {len(ids):,} connection(s)"
    with get_app().sessions() as session:
        count = session.scalar(sa.select(sa.func.count(Connection.id)))
    return f"check {count:,} connections"


@flow(name="check-connections", flow_run_name=_run_name, log_prints=False)
async def check_connections(
    connection_ids: list[int] | None = None,
    batch_size: int = 200,
    concurrency: int = 50,
    per_provider: int = 20,
) -> dict[str, Any]:
    """Check every connection (or only `connection_ids`) and publish a summary.

    Connections are read in keyset batches; each batch is one task run that checks
    its connections concurrently. At most `concurrency` checks are in flight, at
    most `per_provider` against one provider.
    """
    app = get_app()
    app.ensure_schema()
    policy = CheckPolicy(
        batch_size=batch_size,
        concurrency=max(1, math.ceil(concurrency / PARALLEL_BATCHES)),
        per_provider=max(1, math.ceil(per_provider / PARALLEL_BATCHES)),
        timeout=app.settings.check_timeout,
    )
    started = time.perf_counter()
    with app.sessions() as session:
        ranges = plan_ranges(session, batch_size, connection_ids)
    in_flight = asyncio.Semaphore(PARALLEL_BATCHES)
    policy_params = dataclasses.asdict(policy)

    async def run(after_id: int, upto_id: int | None) -> dict[str, Any]:
        async with in_flight:
            return await check_batch(after_id, upto_id, policy_params, connection_ids)

    batches = await asyncio.gather(*(run(a, b) for a, b in ranges))
    summary = SweepSummary.combine(batches, duration_s=time.perf_counter() - started)
    logger = get_run_logger()
    logger.info("checked %d connections: %s", summary.checked, summary.outcomes)
    for incident in summary.incidents:
        logger.warning("provider incident: %s", incident.describe())
    await acreate_markdown_artifact(
        summary.markdown(), key="check-connections-summary", description="Connection check"
    )
    return summary.as_dict()
