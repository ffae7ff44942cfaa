"""The web pages' follow-up of a reconnect or a "Check again" (`relink.followup`): written
to the followups table first; then, with a Prefect API configured
(`Settings.effective_prefect_api_url`), a reconnect-connection flow run (`run_deployment`,
timeout 0: the page does not wait for it), otherwise the same follow-up in this process,
which the page waits for up to a few seconds. Follow-ups a stopped web process left
unfinished are started again when it starts (`resume`)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from relink.app import Relink
from relink.followup import pending
from relink.followup.run import FollowupReport
from relink.timeutil import utcnow

log = logging.getLogger("relink.web")

FOLLOWUP_WAIT = 10.0  # seconds a page waits for a follow-up run in this process
DEPLOYMENT = "reconnect-connection"


@dataclass(frozen=True)
class Started:
    """How a follow-up started: its report when it ran here and ended within the wait,
    the flow run's name when Prefect took it over, neither while it goes on here."""

    report: FollowupReport | None = None
    flow_run: str | None = None


async def start(
    relink: Relink,
    connection_id: int,
    *,
    requested_by: str,
    requested_by_id: int,
    background: set[asyncio.Task[Any]],
    wait: float = FOLLOWUP_WAIT,
) -> Started:
    followup_id = await asyncio.to_thread(
        pending.submit, relink, connection_id, requested_by_id, now=utcnow()
    )
    flow_run = await _hand_over(relink, followup_id, connection_id, requested_by)
    if flow_run is not None:
        return Started(flow_run=flow_run)
    task = _run_here(relink, followup_id, background)
    finished, _ = await asyncio.wait({task}, timeout=wait)
    if not finished or task.exception() is not None:
        return Started()
    return Started(report=task.result())


async def resume(relink: Relink, background: set[asyncio.Task[Any]]) -> int:
    """Start again the follow-ups a stopped web process left unfinished; how many."""
    ids = await asyncio.to_thread(pending.unfinished, relink)
    for followup_id in ids:
        asked = await asyncio.to_thread(pending.asked, relink, followup_id)
        if asked is None:
            continue
        if await _hand_over(relink, followup_id, *asked) is None:
            _run_here(relink, followup_id, background)
    if ids:
        log.info("resumed %d reconnect follow-up(s) left unfinished", len(ids))
    return len(ids)


def _run_here(
    relink: Relink, followup_id: int, background: set[asyncio.Task[Any]]
) -> asyncio.Task[FollowupReport | None]:
    task = asyncio.create_task(pending.run_pending(relink, followup_id))
    background.add(task)
    task.add_done_callback(_forget(background, followup_id))
    return task


async def _hand_over(
    relink: Relink, followup_id: int, connection_id: int, requested_by: str
) -> str | None:
    """Start a reconnect-connection flow run for the follow-up; its name, or None when no
    Prefect API is configured or it could not be started (then it runs here)."""
    api_url = relink.settings.effective_prefect_api_url
    if not api_url:
        return None
    from prefect.deployments.flow_runs import arun_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.definitions import by_name

    try:
        with temporary_settings({PREFECT_API_URL: api_url}):
            run = await arun_deployment(
                by_name(DEPLOYMENT).full_name,
                parameters={"connection_id": connection_id, "requested_by": requested_by},
                flow_run_name=f"reconnect connection {connection_id}",  # as the flow names it
                timeout=0,
                idempotency_key=f"relink-followup-{followup_id}",
                as_subflow=False,
            )
    except Exception as exc:  # noqa: BLE001 - no Prefect server is no reason to lose it
        log.warning(
            "follow-up %d of connection %d runs in the web process: the reconnect-connection "
            "deployment could not be started (%s)",
            followup_id,
            connection_id,
            type(exc).__name__,
        )
        return None
    await asyncio.to_thread(pending.handed_over, relink, followup_id, str(run.id))
    return run.name


def _forget(background: set[asyncio.Task[Any]], followup_id: int) -> Any:
    def done(task: asyncio.Task[Any]) -> None:
        background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "follow-up %d failed: %s; it is resumed when the web pages start again",
                followup_id,
                type(task.exception()).__name__,
            )

    return done
