"""Tasks of the check-connections flow: one task run per batch, never per connection."""

from __future__ import annotations

from typing import Any

from prefect import task

from relink.app import get_app
from relink.checks import CheckPolicy, check_range
from relink.timeutil import utcnow


@task(name="check-batch", task_run_name="check connections ({after_id}, {upto_id}]", retries=1)
async def check_batch(
    after_id: int,
    upto_id: int | None,
    policy: dict[str, Any],
    connection_ids: list[int] | None = None,
) -> dict[str, Any]:
    """Validate the connections with after_id < id <= upto_id and record the outcomes.

    Safe to retry: a second pass re-checks and the state rules are idempotent
    (a still-failing connection keeps its first failure time).
    """
    summary = await check_range(
        get_app(),
        after_id,
        upto_id,
        now=utcnow(),
        policy=CheckPolicy(**policy),
        only=connection_ids,
    )
    return summary.as_dict()
