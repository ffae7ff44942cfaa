"""The email run, written once as it reads: expire the claims of runs that died, find
the emails due at `now`, send them batch by batch until done or SendGrid stops the run,
then the same for the expiry heads-ups due at `now` (relink/emailing/headsup.py), and
summarise it (`EmailRunSummary`: the counts, the emails whose delivery raised and
what each is left as, the emails awaiting an admin's decision, a markdown artifact). One
email's error never stops the run. Its I/O steps come in as `EmailRunSteps`: `send_due`
(`relink notify`, the tests, the benchmark) passes the step functions below as plain
calls; the send-disconnection-emails flow passes Prefect tasks wrapping the same
functions (tasks/emails.py)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from relink.app import Relink
from relink.emailing import headsup
from relink.emailing.due import due_ids
from relink.emailing.ledger import expire_stale_claims
from relink.emailing.mailer import Mailer, mailer_for
from relink.emailing.outbox import awaiting_decision
from relink.emailing.policy import NotifyPolicy
from relink.emailing.sender import Sender, SendHooks, send_batch

COUNTS = (
    "sent",  # accepted by SendGrid
    "outbox",  # written to the outbox (no API key)
    "failed",  # refused by SendGrid (4xx): never retried
    "unknown",  # the request went out, the reply was lost: never resent automatically
    "released",  # not delivered (429/5xx/unreachable): the next run tries again
    "no_recipient",  # nobody to email: the notification says why
    "skipped",  # claimed by another run meanwhile, or the disconnection closed meanwhile
    "deferred",  # not attempted: the run stopped early (SendGrid unavailable or refusing us)
    "error",  # its delivery raised (the database, a bug): recorded on it in `failures`
    "expired_claims",  # claims of a run that died, marked unknown (they may have been sent)
)


HEADS_UP_COUNTS = tuple(c for c in COUNTS if c != "expired_claims")


def batches_of(ids: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive runs of at most `size` ids, in order."""
    return [list(ids[i : i + size]) for i in range(0, len(ids), max(1, size))]


@dataclass(frozen=True)
class EmailRunSteps:
    """The run's I/O steps. They take and return times, ids and counts: no name, address
    or secret (a Prefect task's inputs and result are stored)."""

    expire_claims: Callable[[datetime, float], Awaitable[int]]
    """(now, lease in seconds) -> how many claims of dead runs became `unknown`."""
    find_due: Callable[[datetime, float, int | None], Awaitable[list[int]]]
    """(now, due-after in seconds, limit) -> the due disconnection ids, ascending."""
    send_batch: Callable[[datetime, int, list[int], dict[str, Any]], Awaitable[dict[str, Any]]]
    """(now, batch number from 1, ids, `NotifyPolicy.as_params()`) -> `BatchResult.as_dict()`."""
    find_heads_ups: Callable[[datetime, float, int | None], Awaitable[list[int]]] | None = None
    """(now, heads-up days in seconds, limit) -> ids of the connections whose expiry
    heads-up is due, ascending."""
    send_heads_ups: (
        Callable[[datetime, int, list[int], dict[str, Any]], Awaitable[dict[str, Any]]] | None
    ) = None
    """(now, batch number from 1, connection ids, policy) -> `BatchResult.as_dict()`."""


async def run_emails(
    app: Relink,
    *,
    now: datetime,
    steps: EmailRunSteps,
    policy: NotifyPolicy,
    limit: int | None = None,
) -> EmailRunSummary:
    """Email every disconnection due at `now` (at most `limit`), once.

    A batch that reports `stopped` (SendGrid unavailable or refusing our key) ends the
    run: the due ones not attempted are `deferred` to the next run.
    """
    started = time.perf_counter()
    expired = await steps.expire_claims(now, policy.lease.total_seconds())
    ids = await steps.find_due(now, policy.due_after.total_seconds(), limit)
    chunks = batches_of(ids, policy.batch_size)
    params = policy.as_params()
    batches: list[dict[str, Any]] = []
    deferred = 0
    for number, chunk in enumerate(chunks, start=1):
        batch = await steps.send_batch(now, number, chunk, params)
        batches.append(batch)
        if batch["stopped"]:
            deferred = sum(len(rest) for rest in chunks[number:])
            break
    heads_ups: list[dict[str, Any]] = []
    heads_ups_deferred = 0
    if steps.find_heads_ups is not None and steps.send_heads_ups is not None:
        ahead = app.settings.heads_up_ahead.total_seconds()
        left = None if limit is None else max(0, limit - len(ids))
        found = await steps.find_heads_ups(now, ahead, left) if left != 0 else []
        groups = batches_of(found, policy.batch_size)
        if any(b["stopped"] for b in batches):
            heads_ups_deferred = len(found)  # SendGrid stopped the run: the next one sends
            groups = []
        for number, chunk in enumerate(groups, start=1):
            batch = await steps.send_heads_ups(now, number, chunk, params)
            heads_ups.append(batch)
            if batch["stopped"]:
                heads_ups_deferred = sum(len(rest) for rest in groups[number:])
                break
    summary = EmailRunSummary.combine(
        batches,
        expired_claims=expired,
        deferred=deferred,
        awaiting_decision=await asyncio.to_thread(awaiting_decision, app),
        duration_s=time.perf_counter() - started,
    )
    summary.add_heads_ups(heads_ups, deferred=heads_ups_deferred)
    return summary


# --- the steps as functions: plain calls here, Prefect tasks in tasks/emails.py -------------


def expire_claims(app: Relink, now: datetime, lease_seconds: float) -> int:
    lease = timedelta(seconds=lease_seconds)
    return expire_stale_claims(app, now=now, lease=lease) + headsup.expire_stale_claims(
        app, now=now, lease=lease
    )


def find_heads_ups(
    app: Relink, now: datetime, ahead_seconds: float, limit: int | None
) -> list[int]:
    return headsup.due_heads_ups(app, now=now, ahead=timedelta(seconds=ahead_seconds), limit=limit)


def find_due(app: Relink, now: datetime, due_after_seconds: float, limit: int | None) -> list[int]:
    with app.sessions() as session:
        return due_ids(
            session, now=now, due_after=timedelta(seconds=due_after_seconds), limit=limit
        )


def plain_steps(app: Relink, sender: Sender) -> EmailRunSteps:
    """The steps as plain calls in this process. Every batch goes through `sender`, built
    for the run's `now` and policy, so its breaker, clock and hooks span the whole run."""

    async def expire(now: datetime, lease_seconds: float) -> int:
        return expire_claims(app, now, lease_seconds)

    async def find(now: datetime, due_after_seconds: float, limit: int | None) -> list[int]:
        return find_due(app, now, due_after_seconds, limit)

    async def send(
        now: datetime, number: int, ids: list[int], policy: dict[str, Any]
    ) -> dict[str, Any]:
        return send_batch(sender, ids).as_dict()

    async def find_ahead(now: datetime, ahead_seconds: float, limit: int | None) -> list[int]:
        return find_heads_ups(app, now, ahead_seconds, limit)

    async def send_ahead(
        now: datetime, number: int, ids: list[int], policy: dict[str, Any]
    ) -> dict[str, Any]:
        return send_batch(sender, ids, heads_ups=True).as_dict()

    return EmailRunSteps(
        expire_claims=expire,
        find_due=find,
        send_batch=send,
        find_heads_ups=find_ahead,
        send_heads_ups=send_ahead,
    )


def send_due(
    app: Relink,
    *,
    now: datetime,
    mailer: Mailer | None = None,
    policy: NotifyPolicy | None = None,
    limit: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    hooks: SendHooks | None = None,
) -> EmailRunSummary:
    """One whole run in this process, with the plain steps (`relink notify`, the tests,
    the benchmark). `sleep` waits between retries; `hooks` let tests stop a run at the
    points where a crash leaves an ambiguous claim."""
    policy = policy or NotifyPolicy.from_settings(app.settings)
    sender = Sender(
        app,
        mailer or mailer_for(app.settings),
        now,
        policy,
        sleep=sleep,
        hooks=hooks or SendHooks(),
    )
    return asyncio.run(
        run_emails(app, now=now, steps=plain_steps(app, sender), policy=policy, limit=limit)
    )


# --- the summary ------------------------------------------------------------------------------


@dataclass
class EmailRunSummary:
    counts: dict[str, int]
    batches: int
    stopped: str | None
    failures: list[dict[str, Any]]
    awaiting_decision: list[dict[str, Any]]
    duration_s: float
    heads_ups: dict[str, int] = field(default_factory=lambda: {k: 0 for k in HEADS_UP_COUNTS})
    """The expiry heads-ups' results, counted as the disconnection emails' are."""

    def add_heads_ups(self, batches: Iterable[dict[str, Any]], *, deferred: int = 0) -> None:
        totals: Counter[str] = Counter()
        for batch in batches:
            totals.update(batch["counts"])
            self.failures += batch.get("failures", [])
            self.stopped = self.stopped or batch["stopped"]
        totals["deferred"] += deferred
        self.heads_ups = {k: totals.get(k, 0) for k in HEADS_UP_COUNTS}

    @classmethod
    def combine(
        cls,
        batches: Iterable[dict[str, Any]],
        *,
        expired_claims: int,
        deferred: int = 0,
        awaiting_decision: list[dict[str, Any]],
        duration_s: float,
    ) -> EmailRunSummary:
        totals: Counter[str] = Counter()
        stopped = None
        failures: list[dict[str, Any]] = []
        n = 0
        for batch in batches:
            n += 1
            totals.update(batch["counts"])
            stopped = stopped or batch["stopped"]
            failures += batch.get("failures", [])
        totals["expired_claims"] += expired_claims
        totals["deferred"] += deferred
        return cls(
            counts={k: totals.get(k, 0) for k in COUNTS},
            batches=n,
            stopped=stopped,
            failures=failures,
            awaiting_decision=awaiting_decision,
            duration_s=round(duration_s, 3),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.counts,
            "batches": self.batches,
            "stopped": self.stopped,
            "failures": self.failures,
            "awaiting_decision": self.awaiting_decision,
            "duration_s": self.duration_s,
            "heads_ups": self.heads_ups,
        }

    def markdown(self) -> str:
        delivered = self.counts["sent"] + self.counts["outbox"]
        ahead = self.heads_ups["sent"] + self.heads_ups["outbox"]
        lines = [
            f"# Disconnection emails: {delivered} delivered in {self.duration_s:.1f} s",
            "",
            f"Expiry heads-ups: {ahead} delivered.",
            "",
            "| result | disconnection emails | expiry heads-ups |",
            "| --- | --- | --- |",
            *(f"| {k} | {v} | {self.heads_ups.get(k, '')} |" for k, v in self.counts.items()),
        ]
        if self.stopped:
            lines += ["", f"**Stopped early**: {self.stopped}. The rest waits for the next run."]
        if self.failures:
            lines += [
                "",
                f"## {len(self.failures)} email(s) failed on the way; the run went on",
                "",
                "| disconnection | connection | now | error |",
                "| --- | --- | --- | --- |",
            ]
            lines += [
                f"| {f['disconnection_id']} | {f['connection_id'] or ''} | {_md(f['state'])} "
                f"| {_md(f['error'])} |"
                for f in self.failures
            ]
        if self.awaiting_decision:
            lines += [
                "",
                f"## {len(self.awaiting_decision)} email(s) in state unknown: may have been sent",
                "",
                "Never resent automatically. Check SendGrid's activity feed (custom arg "
                "`disconnection_id`); if it was not delivered, `relink outbox release ID` "
                "hands it to the next run.",
                "",
                "| notification | disconnection | connection | to | claimed at | why |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            lines += [
                f"| {u['id']} | {u['disconnection_id']} | {_md(u['connection'])} "
                f"| {_md(', '.join(u['to']))} | {u['claimed_at']} | {_md(u['last_error'] or '')} |"
                for u in self.awaiting_decision
            ]
        return "\n".join(lines) + "\n"


def _md(value: str) -> str:
    return " ".join(value.split()).replace("|", "\\|")
