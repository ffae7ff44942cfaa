"""Tasks of the send-disconnection-emails flow: each wraps one step of the email run
(relink/emailing/run.py) for Prefect, with retries where a retry is safe, and runs once
per batch of due disconnections or expiry heads-ups (`NotifyPolicy.batch_size`), never
once per email.
`STEPS` is what the flow hands to `run_emails`."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from relink.app import get_app
from relink.emailing import run
from relink.emailing.mailer import mailer_for
from relink.emailing.policy import NotifyPolicy
from relink.emailing.sender import Sender, send_batch
from relink.timeutil import utcnow


@task(name="expire-stale-claims", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
async def expire_claims(now: datetime, lease_seconds: float) -> int:
    """Mark claims of runs that died as unknown. One conditional UPDATE: safe to retry."""
    return await asyncio.to_thread(run.expire_claims, get_app(), now, lease_seconds)


@task(name="find-due-disconnections", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
async def find_due(now: datetime, due_after_seconds: float, limit: int | None) -> list[int]:
    """The ids due at `now` (ids only: no name, address or secret). Read-only: safe to retry."""
    return await asyncio.to_thread(run.find_due, get_app(), now, due_after_seconds, limit)


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


@task(name="find-due-heads-ups", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
async def find_heads_ups(now: datetime, ahead_seconds: float, limit: int | None) -> list[int]:
    """Ids of the connections whose expiry heads-up is due at `now`. Read-only: safe to
    retry."""
    return await asyncio.to_thread(run.find_heads_ups, get_app(), now, ahead_seconds, limit)


# retries=0 for the same reason as send-email-batch: it commits claims and sends emails.
@task(
    name="send-heads-up-batch",
    task_run_name="heads-up batch {number}",
    retries=0,
    cache_policy=NO_CACHE,
)
async def send_heads_up_batch(
    now: datetime, number: int, connection_ids: list[int], policy: dict[str, Any]
) -> dict[str, Any]:
    """Claim, send and record the expiry heads-ups of these connections."""
    app = get_app()
    sender = Sender(
        app, mailer_for(app.settings), now, NotifyPolicy.from_params(policy), clock=utcnow
    )
    result = await asyncio.to_thread(send_batch, sender, connection_ids, heads_ups=True)
    return result.as_dict()


STEPS = run.EmailRunSteps(
    expire_claims=expire_claims,
    find_due=find_due,
    send_batch=send_email_batch,
    find_heads_ups=find_heads_ups,
    send_heads_ups=send_heads_up_batch,
)
