"""The email run: expire the claims of runs that died, find the emails due at `now`,
send them batch by batch until done or SendGrid stops the run, and summarise it
(`EmailRunSummary`: the counts, the emails awaiting an admin's decision, a markdown
artifact)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relink.app import Relink
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
    "expired_claims",  # claims of a run that died, marked unknown (they may have been sent)
)


def batches_of(ids: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive runs of at most `size` ids, in order."""
    return [list(ids[i : i + size]) for i in range(0, len(ids), max(1, size))]


@dataclass
class EmailRunSummary:
    counts: dict[str, int]
    batches: int
    stopped: str | None
    awaiting_decision: list[dict[str, Any]]
    duration_s: float

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
        n = 0
        for batch in batches:
            n += 1
            totals.update(batch["counts"])
            stopped = stopped or batch["stopped"]
        totals["expired_claims"] += expired_claims
        totals["deferred"] += deferred
        return cls(
            counts={k: totals.get(k, 0) for k in COUNTS},
            batches=n,
            stopped=stopped,
            awaiting_decision=awaiting_decision,
            duration_s=round(duration_s, 3),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.counts,
            "batches": self.batches,
            "stopped": self.stopped,
            "awaiting_decision": self.awaiting_decision,
            "duration_s": self.duration_s,
        }

    def markdown(self) -> str:
        delivered = self.counts["sent"] + self.counts["outbox"]
        lines = [
            f"# Disconnection emails: {delivered} delivered in {self.duration_s:.1f} s",
            "",
            "| result | emails |",
            "| --- | --- |",
            *(f"| {k} | {v} |" for k, v in self.counts.items()),
        ]
        if self.stopped:
            lines += ["", f"**Stopped early**: {self.stopped}. The rest waits for the next run."]
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
    """One whole run in this process: expire stale claims, then email every due
    disconnection (at most `limit`), batch by batch."""
    started = time.perf_counter()
    policy = policy or NotifyPolicy()
    sender = Sender(
        app,
        mailer or mailer_for(app.settings),
        now,
        policy,
        sleep=sleep,
        hooks=hooks or SendHooks(),
    )
    expired = expire_stale_claims(app, now=now, lease=policy.lease)
    with app.sessions() as session:
        ids = due_ids(session, now=now, due_after=policy.due_after, limit=limit)
    batches: list[dict[str, Any]] = []
    deferred = 0
    chunks = batches_of(ids, policy.batch_size)
    for number, chunk in enumerate(chunks):
        result = send_batch(sender, chunk).as_dict()
        batches.append(result)
        if result["stopped"]:
            deferred = sum(len(rest) for rest in chunks[number + 1 :])
            break
    return finish_run(app, batches, expired_claims=expired, deferred=deferred, started=started)


def finish_run(
    app: Relink,
    batches: Sequence[dict[str, Any]],
    *,
    expired_claims: int,
    deferred: int,
    started: float,
) -> EmailRunSummary:
    """The run's summary; `deferred`: due ones left for the next run by a stopped run."""
    return EmailRunSummary.combine(
        batches,
        expired_claims=expired_claims,
        deferred=deferred,
        awaiting_decision=awaiting_decision(app),
        duration_s=time.perf_counter() - started,
    )
