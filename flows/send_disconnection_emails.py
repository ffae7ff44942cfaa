"""send-disconnection-emails: the daily 07:00 MST run. Every disconnection that has been
open for 24 hours and was never emailed gets its one email, sent to the connection's
owner (or the account's admins); every hard credentials expiry within
RELINK_HEADS_UP_DAYS gets its one heads-up the same way."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_markdown_artifact

from flows.logical_time import logical_now
from relink.app import get_app
from relink.emailing.policy import NotifyPolicy
from relink.emailing.run import run_emails
from tasks.emails import STEPS


def _run_name() -> str:
    return f"disconnection emails at {logical_now():%Y-%m-%d %H:%M} UTC"


@flow(name="send-disconnection-emails", flow_run_name=_run_name, log_prints=False)
async def send_disconnection_emails(limit: int | None = None) -> dict[str, Any]:
    """Email every due disconnection (at most `limit`) and publish a summary.

    The rule is evaluated at the run's scheduled start (its logical time), however late
    it starts: open, started at least 24 hours before, never emailed. A run that was
    missed is caught up by the next one.

    Args:
        limit: At most this many emails in this run (empty: every due one); the rest
            stay due and go out with the next run.
    """
    now = logical_now()
    app = get_app()
    app.ensure_schema()
    summary = await run_emails(
        app, now=now, steps=STEPS, policy=NotifyPolicy.from_settings(app.settings), limit=limit
    )
    logger = get_run_logger()
    logger.info("disconnection emails: %s", summary.counts)
    logger.info("expiry heads-ups: %s", summary.heads_ups)
    if summary.stopped:
        logger.warning("stopped early: %s", summary.stopped)
    if summary.failures:
        logger.warning(
            "%d email(s) failed on the way, each recorded on it; the run went on: %s",
            len(summary.failures),
            "; ".join(
                f"disconnection {f['disconnection_id']} now {f['state']} ({f['error']})"
                for f in summary.failures
            ),
        )
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
