"""refresh-datasets: refresh a connection's datasets (or the given ones, or all)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact

from relink.app import get_app
from relink.refreshing.results import RefreshPolicy
from relink.refreshing.run import RefreshSteps, run_refresh
from relink.refreshing.selection import plan_refresh
from tasks.refresh import refresh_dataset


def _run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    if params.get("connection_id") is not None:
        return f"refresh datasets of connection {params['connection_id']}"
    if params.get("dataset_ids"):
        return f"refresh {len(params['dataset_ids'])} dataset(s)"
    return "refresh all datasets"


@flow(name="refresh-datasets", flow_run_name=_run_name, log_prints=False)
async def refresh_datasets(
    connection_id: int | None = None,
    dataset_ids: list[int] | None = None,
    concurrency: int = 4,
    attempts: int = 3,
    backoff: float = 1.0,
    requested_by: str | None = None,
) -> dict[str, Any]:
    """Refresh datasets, at most `concurrency` at once; an unreachable source is asked
    `attempts` times with exponential backoff. One failing dataset never stops the
    others; the summary is the run's result and a markdown artifact.

    Args:
        connection_id: Refresh every dataset built on this connection.
        dataset_ids: Refresh these datasets (with neither: every dataset).
        concurrency: Datasets refreshed at once.
        attempts: Times an unreachable source is asked before the dataset fails.
        backoff: Seconds before the first retry, doubled after each.
        requested_by: The email of the person asking, recorded as the actor of each
            refresh in the audit trail (none: Relink itself).
    """
    app = get_app()
    app.ensure_schema()
    ids, actor_id = plan_refresh(
        app, connection_id=connection_id, dataset_ids=dataset_ids, requested_by=requested_by
    )
    policy = RefreshPolicy(concurrency=concurrency, attempts=attempts, backoff=backoff)
    steps = RefreshSteps(refresh_dataset=refresh_dataset)
    summary = await run_refresh(ids, steps=steps, policy=policy, actor_id=actor_id)
    data = summary.as_dict()
    get_run_logger().info(
        "refreshed %d dataset(s): %d ok, %d failed, %d skipped",
        data["datasets"],
        data["ok"],
        data["error"],
        data["skipped"],
    )
    await acreate_markdown_artifact(
        summary.markdown(), key="refresh-datasets-summary", description="Dataset refresh"
    )
    return data
