"""reconnect-connection: the follow-up of a reconnect (`relink.followup.run`) as a flow
run: the re-check and the email are Prefect tasks, the refresh a refresh-datasets
subflow; the report is the run's result and a markdown artifact."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact

from flows.refresh_datasets import refresh_datasets
from relink.followup.run import FollowupSteps, run_followup
from tasks.refresh import email_link, recheck_connection


@flow(
    name="reconnect-connection",
    flow_run_name="reconnect connection {connection_id}",
    log_prints=False,
)
async def reconnect_connection(
    connection_id: int, requested_by: str, notify_owner: bool = False
) -> dict[str, Any]:
    """Re-check connection `connection_id` for `requested_by` (an email; they must be
    allowed to reconnect it). The problem may have been fixed at the source: then the
    disconnection closes and the datasets are refreshed. Otherwise the reconnect link
    for the owner is logged and published, and emailed when `notify_owner`: that is the
    disconnection's one email, through the same ledger as the 07:00 run, which then
    sends no other.

    Takes ids, never credentials: new credentials are entered by a person, on the
    connection's page or with `relink reconnect`.

    Args:
        connection_id: The id of the connection to re-check (see `relink connections list`).
        requested_by: The email of the person asking; they must be allowed to reconnect it.
        notify_owner: Also email the reconnect link to the connection's owner.
    """
    steps = FollowupSteps(recheck=recheck_connection, refresh=_refresh, email_link=email_link)
    report = await run_followup(connection_id, requested_by, steps=steps, notify_owner=notify_owner)
    get_run_logger().log(*report.log_line())
    await acreate_markdown_artifact(
        report.markdown(),
        key="reconnect-connection",
        description=f"Reconnect connection {connection_id}",
    )
    return report.as_dict()


async def _refresh(connection_id: int, requested_by: str) -> dict[str, Any]:
    """The datasets refreshed as a refresh-datasets subflow run."""
    return await refresh_datasets(connection_id=connection_id, requested_by=requested_by)
