"""send-disconnection-emails: the daily 07:00 MST run. Every disconnection that has been
open for 24 hours and was never emailed gets its one email, sent to the connection's
owner (or the account's admins)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact

from relink.app import get_app
from relink.emailing.policy import NotifyPolicy
from relink.emailing.run import batches_of, finish_run
from relink.timeutil import utcnow
from tasks.emails import expire_claims, find_due, send_email_batch


def _run_name() -> str:
    return f"disconnection emails at {utcnow():%Y-%m-%d %H:%M} UTC"


@flow(name="send-disconnection-emails", flow_run_name=_run_name, log_prints=False)
async def send_disconnection_emails(limit: int | None = None) -> dict[str, Any]:
    """Email every due disconnection (at most `limit`) and publish a summary.

    The rule is evaluated at the time the run starts: open, started at least 24 hours
    before, never emailed. A run that was missed is caught up by the next one.
    """
    now = utcnow()
    started = time.perf_counter()
    app = get_app()
    app.ensure_schema()
    policy = NotifyPolicy()
    expired = await expire_claims(now, policy.lease.total_seconds())
    due = await find_due(now, policy.due_after.total_seconds(), limit)
    chunks = batches_of(due, policy.batch_size)
    batches: list[dict[str, Any]] = []
    deferred = 0
    for number, chunk in enumerate(chunks, start=1):
        batch = await send_email_batch(now, number, chunk, policy.as_params())
        batches.append(batch)
        if batch["stopped"]:  # SendGrid unavailable or refusing us: the rest waits
            deferred = sum(len(rest) for rest in chunks[number:])
            break
    summary = await asyncio.to_thread(
        finish_run, app, batches, expired_claims=expired, deferred=deferred, started=started
    )
    logger = get_run_logger()
    logger.info("disconnection emails: %s", summary.counts)
    if summary.stopped:
        logger.warning("stopped early: %s", summary.stopped)
    if summary.awaiting_decision:
        logger.warning(
            "%d email(s) in state unknown await an admin's decision "
            "(`relink outbox list --state unknown`)",
            len(summary.awaiting_decision),
        )
    await acreate_markdown_artifact(
        summary.markdown(),
        key="send-disconnection-emails-summary",
        description="Disconnection emails",
    )
    return summary.as_dict()
