"""The steps of the check-connections flow for Prefect: one check-batch task run per
batch of connections (never per connection), and the shard runs of a sweep that fans
out over the pool's workers. `STEPS` is what the flows hand to `run_sweep` and
`run_shard` (relink/sweep/run.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

from prefect import get_client, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import State
from prefect.states import Cancelled

from deployments.definitions import by_name
from relink.app import get_app
from relink.checks import check_range
from relink.sweep.run import ShardRuns, SweepSteps
from relink.sweep.shards import withdraw_shard
from relink.sweep.validate import CheckPolicy
from relink.timeutil import utcnow

SHARD_POLL_SECONDS = 1.0


@task(
    name="check-batch",
    task_run_name="check connections ({after_id}, {upto_id}]",
    retries=1,
    cache_policy=NO_CACHE,
)
async def check_batch(
    now: datetime,
    after_id: int,
    upto_id: int | None,
    policy: dict[str, Any],
    connection_ids: list[int] | None = None,
) -> dict[str, Any]:
    """Validate the connections with after_id < id <= upto_id and record the outcomes as
    checked at `now`, the sweep's time.

    Safe to retry: a second pass re-checks and the state rules are idempotent
    (a still-failing connection keeps its first failure time).
    """
    summary = await check_range(
        get_app(),
        after_id,
        upto_id,
        now=now,
        policy=CheckPolicy(**policy),
        only=connection_ids,
    )
    return summary.as_dict()


async def run_shard_flows(
    now: datetime,
    sweep_id: str,
    numbers: list[int],
    parameters: dict[str, Any],
    start_timeout: float,
) -> ShardRuns:
    """One check-connections-shard flow run per shard, each checking as of `now`; waits
    until every run has ended. A run not started within `start_timeout` seconds is
    withdrawn: its shard is claimed for the sweep, so no worker checks it, and the run
    is set Cancelled."""
    from prefect.deployments.flow_runs import arun_deployment

    spec = by_name("check-connections-shard")
    runs = await asyncio.gather(
        *(
            arun_deployment(
                spec.full_name,
                parameters={**parameters, "sweep_id": sweep_id, "shard": number, "as_of": now},
                timeout=0,
                idempotency_key=f"{sweep_id}:shard-{number}",
            )
            for number in numbers
        )
    )
    get_run_logger().info("sweep %s: started %d shard run(s)", sweep_id, len(runs))
    shard_of = {run.id: number for run, number in zip(runs, numbers, strict=True)}
    pending = set(shard_of)
    withdrawn: set[uuid.UUID] = set()
    started = time.monotonic()
    async with get_client() as client:
        while pending:
            await asyncio.sleep(SHARD_POLL_SECONDS)
            too_late = time.monotonic() - started >= start_timeout
            for run_id in list(pending):
                state = (await client.read_flow_run(run_id)).state
                if state is not None and state.is_final():
                    pending.discard(run_id)
                    if not state.is_completed():  # the sweep fails if its shard is unfinished
                        get_run_logger().warning(
                            "sweep %s: shard %d's run ended %s: %s",
                            sweep_id,
                            shard_of[run_id],
                            state.type.value,
                            state.message,
                        )
                elif (
                    too_late
                    and _not_started(state)
                    and await _withdraw(client, run_id, sweep_id, shard_of[run_id], start_timeout)
                ):
                    pending.discard(run_id)
                    withdrawn.add(run_id)
    return ShardRuns(not_started=sorted(shard_of[r] for r in withdrawn))


def _not_started(state: State | None) -> bool:
    return state is None or state.is_scheduled() or state.is_pending()


async def _withdraw(
    client: PrefectClient, run_id: uuid.UUID, sweep_id: str, shard: int, timeout: float
) -> bool:
    """Claim the shard for the sweep, then cancel its run; False when the run claimed
    it first (it has started after all, and is waited for)."""
    if not await asyncio.to_thread(withdraw_shard, get_app(), sweep_id, shard, now=utcnow()):
        return False
    message = f"not started within {timeout:g} s: cancelled by its sweep, the next sweep checks it"
    await client.set_flow_run_state(run_id, Cancelled(message=message), force=True)
    get_run_logger().warning("sweep %s: shard %d %s", sweep_id, shard, message)
    return True


STEPS = SweepSteps(check_batch=check_batch, run_shards=run_shard_flows)
