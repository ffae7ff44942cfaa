"""check-connections: validate every connection's credentials and record what broke.

Installation problems (misconfigured results: the OAuth app's client refused, a missing
app setting) are logged at WARNING and published as an artifact of their own naming the
providers and the fix; they break no connection, and the run still completes.

A small sweep runs here, batch by batch. A large one (more than one shard of
`shard_size` connections, run as a deployment) fans out: one check-connections-shard
flow run per shard, so the work pool's workers share the sweep; each shard is claimed
in the database, so no two workers check the same connections. A shard run not started
within RELINK_SHARD_START_TIMEOUT is cancelled: its connections are reported not
checked, the run fails saying so, and the next sweep checks them. The sweep itself is
`relink.sweep.run.run_sweep`; this flow hands it Prefect tasks and publishes its summary.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact

from deployments.definitions import SHARD_SIZE
from flows.logical_time import logical_now
from relink.app import get_app
from relink.sweep.plan import connections_in
from relink.sweep.run import SweepPolicy, run_sweep
from relink.sweep.validate import CheckPolicy
from tasks.checks import STEPS

PARALLEL_BATCHES = 2


def _run_name() -> str:
    from prefect.runtime import flow_run

    ids = flow_run.parameters.get("connection_ids")
    if ids:
        return f"check {len(ids):,} connection(s)"
    with get_app().sessions() as session:
        count = connections_in(session, after_id=0, upto_id=None)  # ids start at 1
    return f"check {count:,} connections"


def sweep_policy(
    batch_size: int, concurrency: int, per_provider: int, **options: Any
) -> SweepPolicy:
    """The policy of a sweep or shard run: its caps, split over PARALLEL_BATCHES batches."""
    check = CheckPolicy(
        batch_size=batch_size,
        concurrency=concurrency,
        per_provider=per_provider,
        timeout=get_app().settings.check_timeout,
    )
    return SweepPolicy(check=check, parallel_batches=PARALLEL_BATCHES, **options)


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
    its connections concurrently. Every check is recorded at the run's scheduled start
    (its logical time), however late the run starts or long it takes.

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
    if fan_out is None and deployment.id is None:
        fan_out = False
    policy = sweep_policy(
        batch_size,
        concurrency,
        per_provider,
        fan_out=fan_out,
        shard_size=shard_size,
        shard_start_timeout=app.settings.shard_start_timeout,
    )
    report = await run_sweep(
        app,
        now=logical_now(),
        steps=STEPS,
        policy=policy,
        source="check-connections",
        sweep_id=str(flow_run.id or uuid.uuid4()),
        connection_ids=connection_ids,
        details={"flow_run_id": str(flow_run.id) if flow_run.id else None},
    )
    summary = report.summary
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
    await acreate_markdown_artifact(
        report.markdown(shard_size), key="check-connections-summary", description="Connection check"
    )
    if report.failed:
        raise RuntimeError(report.failure())
    return report.as_dict()
