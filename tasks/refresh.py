"""Tasks of the refresh-datasets and reconnect-connection flows.

One task run per dataset refresh (a refresh is seconds of source I/O, and a run
refreshes a connection's datasets, not thousands). Retries for an unreachable source
happen inside the refresh (`RefreshPolicy`: attempts with backoff), so a task run
always ends with the dataset's recorded result and one failing dataset never fails
the others.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import get_run_logger, task

from relink.app import get_app
from relink.reconnecting.email_link import email_reconnect_link
from relink.reconnecting.recheck import recheck
from relink.refreshing.results import ERROR, RefreshPolicy
from relink.refreshing.run import refresh_one
from relink.timeutil import utcnow


@task(name="refresh-dataset", task_run_name="refresh dataset {dataset_id}")
async def refresh_dataset(
    dataset_id: int, policy: dict[str, Any], actor_id: int | None = None
) -> dict[str, Any]:
    """Fetch the dataset through its connector and store the rows (warehouse) or the
    shape (direct query); record ok/error on the dataset, `actor_id` as who asked."""
    result = await refresh_one(
        get_app(), dataset_id, policy=RefreshPolicy(**policy), actor_id=actor_id
    )
    if result.status == ERROR:
        get_run_logger().warning(
            "dataset %d (%s) failed after %d attempt(s): %s",
            result.dataset_id,
            result.dataset,
            result.attempts,
            result.error,
        )
    return result.as_dict()


@task(name="recheck-connection", task_run_name="re-check connection {connection_id}")
async def recheck_connection(connection_id: int, requested_by: str) -> dict[str, Any]:
    """Check the stored credentials again, through the check sweep's state rules."""
    checked = await recheck(get_app(), connection_id, requested_by=requested_by, now=utcnow())
    return checked.as_dict()


@task(name="email-reconnect-link", task_run_name="email the reconnect link of {connection_id}")
async def email_link(connection_id: int, requested_by: str) -> dict[str, Any]:
    """Email the open disconnection to its owner, through the ledger (its one email).
    Not retried: the claim makes a retry send nothing, and an ambiguous send is `unknown`."""
    sent = await asyncio.to_thread(
        email_reconnect_link, get_app(), connection_id, requested_by=requested_by, now=utcnow()
    )
    return sent.as_dict()
