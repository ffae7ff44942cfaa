"""Sending: `send_batch` loads a batch of due emails and delivers them `concurrency` at a
time; `Sender.deliver` claims one email in the ledger, sends it (retrying only what
SendGrid certainly did not take: 429, 5xx, unreachable) and marks its result; an email
whose delivery raises is recorded on it and the others go on. The `Breaker` stops a run
that keeps failing to deliver or whose key is refused. `email_disconnection` sends one
connection's disconnection email on request through the same ledger (the
reconnect-connection flow's `notify_owner`), so it is that disconnection's one email."""

from __future__ import annotations

import contextvars
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from relink.app import Relink
from relink.domain.words import NotificationState
from relink.emailing import ledger
from relink.emailing.due import DueEmail, load_due
from relink.emailing.headsup import HeadsUpEmail, load_heads_ups
from relink.emailing.mailer import Attempt, Mailer, OutgoingEmail, Result, mailer_for
from relink.emailing.outbox import notification_of
from relink.emailing.policy import NotifyPolicy
from relink.emailing.render import render_disconnection_email, render_heads_up_email
from relink.models import Disconnection

State = NotificationState


@dataclass
class SendHooks:
    """Callbacks at the two points where a crash leaves an ambiguous claim.

    `after_claim` runs once the claim is committed and before the request goes out;
    `after_send` once the request has been answered (or not) and before the result is
    recorded. Tests use them to crash a run at exactly these points.
    """

    after_claim: Callable[[DueEmail], None] | None = None
    after_send: Callable[[DueEmail, Attempt], None] | None = None


class Breaker:
    """Stops a run that keeps failing to deliver: the rest waits for the next run."""

    def __init__(self, threshold: int) -> None:
        self.threshold = max(1, threshold)
        self._lock = threading.Lock()
        self._bad_in_a_row = 0
        self.reason: str | None = None

    @property
    def is_open(self) -> bool:
        return self.reason is not None

    def record(self, attempt: Attempt) -> None:
        with self._lock:
            if attempt.result is Result.REJECTED_KEY:
                self.reason = (
                    self.reason or f"SendGrid refused our API key or sender ({attempt.error})"
                )
            elif attempt.result in (Result.RETRY, Result.UNKNOWN):
                self._bad_in_a_row += 1
                if self._bad_in_a_row >= self.threshold and self.reason is None:
                    self.reason = (
                        f"{self._bad_in_a_row} emails in a row not delivered "
                        f"(last: {attempt.error})"
                    )
            else:
                self._bad_in_a_row = 0


_STATE_OF = {
    Result.RETRY: State.RELEASED,
    Result.REJECTED_KEY: State.RELEASED,
    Result.FAILED: State.FAILED,
    Result.UNKNOWN: State.UNKNOWN,
}


@dataclass
class _Progress:
    """How far one email got, for recording an error on the way."""

    held: ledger.HeldClaim | None = None
    requested: bool = False  # the request may have gone out
    attempt: Attempt | None = None
    requests: int = 0
    in_hook: bool = False

    def hook(self, call: Callable[..., None], *args: Any) -> None:
        self.in_hook = True
        call(*args)
        self.in_hook = False


def describe_error(exc: BaseException) -> str:
    """One line for a run's summary and the ledger: the exception's class and the first
    line of its message (the database driver's own for a database error: SQLAlchemy's
    text adds the statement and its parameters, addresses among them)."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"[:300]


def advancing_clock(start: datetime) -> Callable[[], datetime]:
    """`start`, advancing with the time this process spends (monotonic)."""
    origin = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - origin)


@dataclass
class Sender:
    """Everything one run needs to deliver emails.

    `now` is the run's time: the rule decides what is due at `now`. `clock` stamps
    claims and results; it starts at `now` and advances while the run works, so that a
    long run's claims do not look older than they are to the lease of another run.
    """

    app: Relink
    mailer: Mailer
    now: datetime
    policy: NotifyPolicy = field(default_factory=NotifyPolicy)
    sleep: Callable[[float], None] = time.sleep
    hooks: SendHooks = field(default_factory=SendHooks)
    breaker: Breaker | None = None
    clock: Callable[[], datetime] | None = None

    failures: list[dict[str, Any]] = field(default_factory=list)
    """One entry per email whose delivery raised (ids, its state now, the error)."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        if self.breaker is None:
            self.breaker = Breaker(self.policy.breaker_threshold)
        if self.clock is None:
            self.clock = advancing_clock(self.now)

    def _time(self) -> datetime:
        assert self.clock is not None
        return max(self.now, self.clock())

    def deliver(
        self, item: DueEmail | HeadsUpEmail, group: ledger.GroupCommit | None = None
    ) -> str:
        """Claim, send and mark one email; the counter it adds to. An error on the way
        (the database, a bug) is recorded on this email, in the ledger as far as the
        ledger can still be written and in `failures`, and counts as `error`: the other
        emails go on. A hook that raises stops the run there, as the crash it stands for.
        `group`: the batch's `ledger.GroupCommit`, which writes its claim and mark
        together with those of the batch's other senders."""
        progress = _Progress()
        try:
            return self._deliver(item, progress, group)
        except Exception as exc:
            if progress.in_hook:
                raise
            return self._failed(item, progress, exc)

    def _deliver(
        self,
        item: DueEmail | HeadsUpEmail,
        progress: _Progress,
        group: ledger.GroupCommit | None,
    ) -> str:
        assert self.breaker is not None
        if self.breaker.is_open:
            return "deferred"
        if item.recipients.nobody:
            held = ledger.claim(
                self.app,
                item,
                now=self._time(),
                state=State.NO_RECIPIENT,
                reason=item.recipients.why,
                group=group,
            )
            return "no_recipient" if held else "skipped"
        settings = self.app.settings
        email = build_email(item, sender=settings.email_from, base_url=settings.base_url)
        progress.held = ledger.claim(
            self.app, item, now=self._time(), subject=email.subject[:500], group=group
        )
        if progress.held is None:
            return "skipped"
        if self.hooks.after_claim:
            progress.hook(self.hooks.after_claim, item)
        progress.requested = True
        attempt, requests = self._send_with_retries(email)
        progress.attempt, progress.requests = attempt, requests
        if self.hooks.after_send:
            progress.hook(self.hooks.after_send, item, attempt)
        self.breaker.record(attempt)
        state = (
            self.mailer.delivered_state
            if attempt.result is Result.SENT
            else _STATE_OF[attempt.result]
        )
        ledger.mark(
            self.app,
            progress.held,
            state,
            now=self._time(),
            attempts=requests,
            message_id=attempt.message_id,
            error=attempt.error,
            group=group,
        )
        return str(state)

    def _failed(self, item: DueEmail | HeadsUpEmail, progress: _Progress, exc: Exception) -> str:
        """Record what is known of one email whose delivery raised: not claimed (the claim
        rolled back: due again for the next run), claimed but certainly not sent
        (released), or possibly sent (unknown, never resent automatically)."""
        error = describe_error(exc)
        if progress.held is None:
            state = "due"
        else:
            maybe_delivered = progress.requested and (
                progress.attempt is None or progress.attempt.result in (Result.SENT, Result.UNKNOWN)
            )
            final = State.UNKNOWN if maybe_delivered else State.RELEASED
            try:
                recorded = ledger.mark(
                    self.app,
                    progress.held,
                    final,
                    now=self._time(),
                    attempts=progress.requests,
                    message_id=progress.attempt and progress.attempt.message_id,
                    error=error,
                )
                state = str(final) if recorded else "taken over by another run"
            except Exception:  # noqa: BLE001 - the lease turns the claim unknown later
                state = "claimed (becomes unknown after the lease: it may have been sent)"
        with self._lock:
            self.failures.append(
                {
                    "disconnection_id": item.disconnection_id,
                    "connection_id": item.connection_id,
                    "state": state,
                    "error": error,
                }
            )
        return "error"

    def _send_with_retries(self, email: OutgoingEmail) -> tuple[Attempt, int]:
        """Retries only what certainly did not go out (429, 5xx, unreachable)."""
        assert self.breaker is not None
        requests = 0
        while True:
            attempt = self.mailer.send(email)
            requests += 1
            if (
                attempt.result is not Result.RETRY
                or requests >= self.policy.attempts
                or self.breaker.is_open
            ):
                return attempt, requests
            self.sleep(self._delay(attempt, requests))

    def _delay(self, attempt: Attempt, requests: int) -> float:
        backoff = self.policy.backoff * 2 ** (requests - 1)
        wanted = attempt.retry_after if attempt.retry_after is not None else backoff
        return min(wanted, self.policy.retry_after_cap)


def build_email(item: DueEmail | HeadsUpEmail, *, sender: str, base_url: str) -> OutgoingEmail:
    if isinstance(item, HeadsUpEmail):
        heads_up = render_heads_up_email(item.facts(), base_url=base_url)
        return OutgoingEmail(
            reference=item.reference,
            sender=sender,
            to=item.recipients.to,
            subject=heads_up.subject,
            text=heads_up.text,
            html=heads_up.html,
            custom_args={"heads_up": item.reference, "connection_id": str(item.connection_id)},
        )
    rendered = render_disconnection_email(item.facts(), base_url=base_url)
    return OutgoingEmail(
        reference=item.reference,
        sender=sender,
        to=item.recipients.to,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        custom_args={
            "disconnection_id": str(item.disconnection_id),
            "connection_id": str(item.connection_id),
        },
    )


@dataclass
class BatchResult:
    """Plain, JSON-able counts of one batch (a Prefect task result: ids, states and
    errors, no address and no secret)."""

    counts: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None  # why the run should stop (SendGrid unavailable, key refused)
    failures: list[dict[str, Any]] = field(default_factory=list)  # `Sender.failures`

    def as_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "stopped": self.stopped, "failures": self.failures}


def send_batch(sender: Sender, ids: Sequence[int], *, heads_ups: bool = False) -> BatchResult:
    """Claim, send and record the emails of these due disconnections (with `heads_ups`:
    the expiry heads-ups of these connections), `concurrency` at a time. Each claim
    re-checks that the email is still due and unclaimed; an email whose delivery raised
    is recorded on it and the others go on."""
    counts: Counter[str] = Counter()
    before = len(sender.failures)
    try:
        items: Sequence[DueEmail | HeadsUpEmail] = (
            load_heads_ups(sender.app, ids, now=sender.now)
            if heads_ups
            else load_due(sender.app, ids)
        )
    except Exception as exc:  # noqa: BLE001 - nothing claimed: all of them stay due
        error = describe_error(exc)
        items = []
        counts["error"] += len(ids)
        sender.failures.extend(
            {"disconnection_id": None, "connection_id": i, "state": "due", "error": error}
            if heads_ups
            else {"disconnection_id": i, "connection_id": None, "state": "due", "error": error}
            for i in ids
        )
    else:
        counts["skipped"] += len(ids) - len(items)  # deleted meanwhile
    if items:
        workers = max(1, min(sender.policy.concurrency, len(items)))
        # each email in this thread's context (Prefect's settings and run: where its event goes)
        contexts = [contextvars.copy_context() for _ in items]
        with (
            ledger.GroupCommit(sender.app) as group,
            ThreadPoolExecutor(workers, thread_name_prefix="relink-email") as pool,
        ):
            counts.update(pool.map(lambda c, i: c.run(sender.deliver, i, group), contexts, items))
    assert sender.breaker is not None
    return BatchResult(
        {k: v for k, v in counts.items() if v},
        stopped=sender.breaker.reason,
        failures=sender.failures[before:],
    )


@dataclass(frozen=True)
class DisconnectionEmailed:
    """What became of the email about a connection's open disconnection, asked for now
    (the reconnect-connection flow's `notify_owner`): the ledger's state of that one email."""

    to: tuple[str, ...]
    why: str  # "owner", "admins: <reason>", or why nobody was emailed
    result: str  # the ledger's state (sent, outbox, unknown, failed, released, ...) or "none"
    notification_id: int | None = None
    earlier: bool = False  # emailed before this request (by the 07:00 run or another request)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "to": list(self.to),
            "why": self.why,
            "result": self.result,
            "notification_id": self.notification_id,
            "earlier": self.earlier,
            "error": self.error,
        }


def email_disconnection(
    app: Relink,
    connection_id: int,
    *,
    now: datetime,
    mailer: Mailer | None = None,
    policy: NotifyPolicy | None = None,
) -> DisconnectionEmailed:
    """Email the connection's open disconnection now, through the ledger exactly as the
    07:00 run does (claim, send with its retries, mark; the same recipients and redacted
    last error): it is that disconnection's one email, so no run sends another. When it
    has been emailed already, nothing is sent and its state is told."""
    with app.sessions() as session:
        disconnection_id = session.scalar(
            sa.select(Disconnection.id).where(
                Disconnection.connection_id == connection_id, Disconnection.ended_at.is_(None)
            )
        )
    if disconnection_id is None:
        return DisconnectionEmailed((), "no open disconnection: nothing to email", "none")
    items = load_due(app, [disconnection_id])
    if not items:
        return DisconnectionEmailed((), "no open disconnection: nothing to email", "none")
    sender = Sender(app, mailer or mailer_for(app.settings), now, policy or NotifyPolicy())
    outcome = sender.deliver(items[0])
    with app.sessions() as session:
        view = notification_of(session, disconnection_id)
    if view is None:  # closed meanwhile, or the claim itself failed
        error = sender.failures[0]["error"] if sender.failures else None
        why = "the disconnection closed meanwhile" if error is None else "not claimed"
        return DisconnectionEmailed((), why, "error" if error else "none", error=error)
    return DisconnectionEmailed(
        tuple(view.to),
        items[0].recipients.why,
        view.state,
        view.id,
        earlier=outcome == "skipped",
        error=view.last_error,
    )
