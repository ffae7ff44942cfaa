"""Tasks of the send-disconnection-emails flow: one task run per batch of due
disconnections (`NotifyPolicy.batch_size`, 100 by default), never one per email."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from relink.app import get_app
from relink.emailing.due import due_ids
from relink.emailing.ledger import expire_stale_claims
from relink.emailing.mailer import mailer_for
from relink.emailing.policy import NotifyPolicy
from relink.emailing.sender import Sender, send_batch
from relink.timeutil import utcnow


@task(name="expire-stale-claims", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
async def expire_claims(now: datetime, lease_seconds: float) -> int:
    """Mark claims of runs that died as unknown. One conditional UPDATE: safe to retry."""
    return await asyncio.to_thread(
        expire_stale_claims, get_app(), now=now, lease=timedelta(seconds=lease_seconds)
    )


@task(name="find-due-disconnections", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
async def find_due(now: datetime, due_after_seconds: float, limit: int | None) -> list[int]:
    """The ids due at `now` (ids only: no name, address or secret). Read-only: safe to retry."""

    def read() -> list[int]:
        with get_app().sessions() as session:
            return due_ids(
                session, now=now, due_after=timedelta(seconds=due_after_seconds), limit=limit
            )

    return await asyncio.to_thread(read)


# retries=0, on purpose: NEVER let Prefect retry this task. It commits claims and sends
# emails; a retry would re-run the batch after requests went out, and an email whose
# reply was lost (or whose result was not recorded yet) could be sent twice. The claims
# make our re-run skip those emails rather than resend them, so a retry could not help
# either: such emails become `unknown` after the lease, for an admin to decide. The safe
# retries (429, 5xx, refused: SendGrid certainly did not take the email) happen inside,
# per email, with backoff.
@task(
    name="send-email-batch",
    task_run_name="email batch {number}",
    retries=0,
    cache_policy=NO_CACHE,
)
async def send_email_batch(
    now: datetime, number: int, disconnection_ids: list[int], policy: dict[str, Any]
) -> dict[str, Any]:
    """Claim, send and record the emails of these due disconnections."""
    app = get_app()
    # the rule was evaluated at the flow's `now`; claims are stamped with the real time
    sender = Sender(
        app, mailer_for(app.settings), now, NotifyPolicy.from_params(policy), clock=utcnow
    )
    result = await asyncio.to_thread(send_batch, sender, disconnection_ids)
    return result.as_dict()
