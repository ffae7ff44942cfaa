"""The disconnection emails, exactly once: due query, claim, send, mark, release, dry run.

Prefect-free: the send-disconnection-emails flow, `relink notify` and the tests all use
these functions. Time is an input (`now`); nothing here reads the clock to decide.

One email's life::

    due ──claim (INSERT, committed)──▶ claimed ──202──▶ sent (X-Message-Id)
                                          │ ──4xx──▶ failed (SendGrid's text; never retried)
                                          │ ──429/5xx/refused, retries exhausted──▶ released
                                          │ ──timeout / dropped after the request──▶ unknown
                                          └ run died (older than the lease) ──▶ unknown
    released ──next run, conditional UPDATE ... WHERE state='released'──▶ claimed
    unknown ──`relink outbox release` (an admin's decision)──▶ released

The claim is committed BEFORE the request goes out and the unique constraint on
`notifications.disconnection_id` arbitrates between runs, so two runs at once never
send the same email twice. Whatever may have been delivered (`unknown`) is never sent
again automatically.

`disconnections.awaiting_email` mirrors the notification (true: none, or `released`)
so that the due query reads one small partial index. Every notification change here
writes it in the same transaction, notification first, then the disconnection (one lock
order for every path). It only finds candidates; the claim above still decides.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

import connectors
from relink import audit
from relink.app import Relink
from relink.domain.due import DUE_AFTER, NOT_YET, awaiting_email, cutoff
from relink.domain.recipients import Person, Recipients, choose_recipients
from relink.emails import DisconnectionFacts, render_disconnection_email
from relink.errors import Conflict, NotFound, VaultError
from relink.mailer import Attempt, Mailer, OutgoingEmail, Result, mailer_for
from relink.models import Connection, Disconnection, Notification, NotificationState, Role, User

State = NotificationState

CLAIM_LEASE = timedelta(minutes=15)
"""A `claimed` notification older than this belongs to a run that died: it may have
been sent, so the next run marks it `unknown` (never resends it automatically)."""

# Counters of a run, in the order the summary shows them.
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


@dataclass(frozen=True)
class NotifyPolicy:
    due_after: timedelta = DUE_AFTER
    lease: timedelta = CLAIM_LEASE
    batch_size: int = 100  # due disconnections per batch (one Prefect task run each)
    concurrency: int = 4  # emails in flight at once within a batch
    attempts: int = 3  # requests per email in one run while SendGrid says "not now"
    backoff: float = 1.0  # seconds before the 2nd request, doubled after each
    retry_after_cap: float = 60.0  # never wait longer than this, whatever Retry-After says
    breaker_threshold: int = 3  # consecutive undelivered emails that stop the run

    def as_params(self) -> dict[str, Any]:
        """Plain JSON values (a Prefect task parameter)."""
        params = asdict(self)
        params["due_after"] = self.due_after.total_seconds()
        params["lease"] = self.lease.total_seconds()
        return params

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> NotifyPolicy:
        values = dict(params)
        values["due_after"] = timedelta(seconds=values["due_after"])
        values["lease"] = timedelta(seconds=values["lease"])
        return cls(**values)


@dataclass
class SendHooks:
    """Callbacks at the two points where a crash leaves an ambiguous claim.

    `after_claim` runs once the claim is committed and before the request goes out;
    `after_send` once the request has been answered (or not) and before the result is
    recorded. Tests use them to crash a run at exactly these points.
    """

    after_claim: Callable[[DueEmail], None] | None = None
    after_send: Callable[[DueEmail, Attempt], None] | None = None


# --- what is due -------------------------------------------------------------------------


def _not_notified() -> sa.ColumnElement[bool]:
    """No notification other than a released one (released = handed back to the next run).

    The truth that `Disconnection.awaiting_email` mirrors; the due query reads the flag.
    """
    taken = (
        sa.select(Notification.id)
        .where(
            Notification.disconnection_id == Disconnection.id,
            Notification.state.not_in([str(s) for s in NOT_YET]),
        )
        .exists()
    )
    return ~taken


def due_query(now: datetime, due_after: timedelta = DUE_AFTER) -> sa.Select[tuple[int]]:
    """Ids of the disconnections due at `now`.

    `ended_at IS NULL AND awaiting_email` is the predicate of the partial index
    `ix_disconnections_due` (on started_at): only the open episodes still waiting for
    their email are read, not the emailed ones nor the history of closed ones, and
    `notifications` is not read at all.

    The flag is an index helper, not the arbiter: an id returned here may be claimed by
    another run before this one gets to it. `claim` decides (the unique notification
    row, or `UPDATE ... WHERE state = 'released'`) and re-checks that the episode is
    still open; a lost race counts as `skipped`.
    """
    return sa.select(Disconnection.id).where(
        Disconnection.ended_at.is_(None),
        Disconnection.awaiting_email,  # SQLite: `= 1`, as in the index's sqlite_where
        Disconnection.started_at <= cutoff(now, due_after),
    )


def due_ids(
    session: Session,
    *,
    now: datetime,
    due_after: timedelta = DUE_AFTER,
    limit: int | None = None,
) -> list[int]:
    """The ids due at `now`, ascending: one pass through the partial index.

    With `limit`, the longest-open ones (the index's order). The run then works through
    the ids in batches of consecutive ids. Re-querying a keyset page per batch instead
    re-reads the open episodes (or scans the primary key) at every page; measured in
    docs/benchmarks.md.
    """
    query = due_query(now, due_after)
    if limit is not None:
        query = query.order_by(Disconnection.started_at, Disconnection.id).limit(limit)
    return sorted(session.scalars(query))


@dataclass(frozen=True, slots=True)
class DueEmail:
    """A due disconnection with everything its email needs (no credential)."""

    disconnection_id: int
    connection_id: int
    connection_name: str
    source_type: str
    account_id: int
    started_at: datetime
    last_error: str | None
    recipients: Recipients
    notification_state: str | None  # None, or "released"

    @property
    def reference(self) -> str:
        return f"disconnection-{self.disconnection_id}"

    def facts(self) -> DisconnectionFacts:
        return DisconnectionFacts(
            connection_id=self.connection_id,
            connection_name=self.connection_name,
            source_type=self.source_type,
            invalid_since=self.started_at,
            last_error=self.last_error,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "disconnection_id": self.disconnection_id,
            "connection_id": self.connection_id,
            "connection": self.connection_name,
            "type": self.source_type,
            "invalid_since": self.started_at.isoformat(),
            "to": list(self.recipients.to),
            "why": self.recipients.why,
            "again": self.notification_state is not None,
        }


def load_due(app: Relink, ids: Sequence[int]) -> list[DueEmail]:
    """The facts and recipients of these disconnections, by id."""
    if not ids:
        return []
    owner = aliased(User)
    query = (
        sa.select(
            Disconnection.id,
            Disconnection.started_at,
            Connection.id.label("connection_id"),
            Connection.name,
            Connection.type,
            Connection.account_id,
            Connection.credentials,
            Connection.last_error_code,
            Connection.last_error_message,
            owner.email,
            owner.active,
            owner.role,
            Notification.state,
        )
        .join(Connection, Connection.id == Disconnection.connection_id)
        .join(owner, owner.id == Connection.owner_id)
        .outerjoin(Notification, Notification.disconnection_id == Disconnection.id)
        .where(Disconnection.id.in_(ids))
        .order_by(Disconnection.id)
    )
    with app.sessions() as session:
        rows = session.execute(query).all()
        accounts = {row.account_id for row in rows}
        admins: dict[int, list[Person]] = {}
        for user in session.execute(
            sa.select(User.account_id, User.email, User.active, User.role).where(
                User.account_id.in_(accounts), User.role == Role.ADMIN
            )
        ):
            admins.setdefault(user.account_id, []).append(
                Person(user.email, user.active, user.role)
            )
    due: list[DueEmail] = []
    for row in rows:
        recipients = choose_recipients(
            Person(row.email, row.active, row.role), admins.get(row.account_id, [])
        )
        due.append(
            DueEmail(
                disconnection_id=row.id,
                connection_id=row.connection_id,
                connection_name=row.name,
                source_type=_display_name(row.type),
                account_id=row.account_id,
                started_at=row.started_at,
                last_error=_last_error(app, row),
                recipients=recipients,
                notification_state=row.state,
            )
        )
    return due


def _display_name(type_: str) -> str:
    try:
        return connectors.get(type_).display_name
    except connectors.UnknownConnector:
        return type_


def _last_error(app: Relink, row: Any) -> str | None:
    """The connection's last error, with any credential value blanked out.

    Connectors do not put secrets in messages; this is the second line of defence, as
    an email leaves our hands for good.
    """
    message = row.last_error_message
    if not message:
        return row.last_error_code
    try:
        secrets = app.vault.decrypt(row.credentials, connection=str(row.connection_id))
    except VaultError:
        secrets = {}
    for value in sorted((v for v in secrets.values() if isinstance(v, str)), key=len, reverse=True):
        if len(value) >= 4:
            message = message.replace(value, "[redacted]")
    code = row.last_error_code
    return f"{message} ({code})" if code and code not in message else message


def build_email(item: DueEmail, *, sender: str, base_url: str) -> OutgoingEmail:
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


# --- claim and mark ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    notification_id: int
    claimed_at: datetime  # with the state, the fence of every later write of this run
    disconnection_id: int


MARK_TRIES = 3
"""Transactions recording a result, when the database connection keeps dropping."""


class _Lost(Exception):
    """Rolls back a claim or mark that did not apply (and its write of the flag)."""


def _set_awaiting(
    session: Session, disconnection_id: int, state: State | str, *, open_only: bool = False
) -> bool:
    """Write `awaiting_email` for the notification state just written, in the same
    transaction and after it (one lock order: notification, then disconnection).

    With `open_only`, False when the disconnection is closed (or gone): the caller
    rolls back.
    """
    update = sa.update(Disconnection).where(Disconnection.id == disconnection_id)
    if open_only:
        update = update.where(Disconnection.ended_at.is_(None))
    result = session.execute(
        update.values(awaiting_email=awaiting_email(state)).execution_options(
            synchronize_session=False
        )
    )
    return result.rowcount == 1


def claim(
    app: Relink,
    item: DueEmail,
    *,
    now: datetime,
    state: State = State.CLAIMED,
    subject: str | None = None,
    reason: str | None = None,
) -> Claim | None:
    """Commit this run's claim of `item`'s one notification; None when someone else has it
    (or the disconnection closed meanwhile).

    A new notification is an INSERT that the unique constraint arbitrates; a released one
    is taken back with `UPDATE ... WHERE state = 'released'`, whose row count decides.
    Either way the same transaction clears `awaiting_email`, and only while the
    disconnection is open (that UPDATE locks its row until the commit, so a concurrent
    close waits for it or is seen).
    """
    values = {
        "state": str(state),
        "recipients": list(item.recipients.to),
        "subject": subject,
        "last_error": reason,
        "claimed_at": now,
        "sent_at": None,
        "provider_message_id": None,
        "updated_at": now,
    }
    if item.notification_state is None:
        try:
            with app.transaction() as session:
                row = Notification(disconnection_id=item.disconnection_id, attempts=0, **values)
                session.add(row)
                session.flush()
                if not _set_awaiting(session, item.disconnection_id, state, open_only=True):
                    raise _Lost  # closed meanwhile
                return Claim(row.id, now, item.disconnection_id)
        except IntegrityError:
            pass  # another run inserted it first; it may have released it since
        except _Lost:
            return None
    try:
        with app.transaction() as session:
            result = session.execute(
                sa.update(Notification)
                .where(
                    Notification.disconnection_id == item.disconnection_id,
                    Notification.state == State.RELEASED,
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                raise _Lost  # another run took it back first
            if not _set_awaiting(session, item.disconnection_id, state, open_only=True):
                raise _Lost  # closed meanwhile
            notification_id = session.scalar(
                sa.select(Notification.id).where(
                    Notification.disconnection_id == item.disconnection_id
                )
            )
    except _Lost:
        return None
    assert notification_id is not None
    return Claim(notification_id, now, item.disconnection_id)


def mark(
    app: Relink,
    held: Claim,
    state: State,
    *,
    now: datetime,
    attempts: int,
    message_id: str | None = None,
    error: str | None = None,
) -> bool:
    """Record the end of this run's claim. False when the row is no longer ours (our claim
    outlived its lease and another run marked it unknown): it keeps that state, except
    that a delivery is always recorded (`sent` is the truth).

    A database connection dropped under it (a restart, a killed backend) is tried again
    on a new one (`MARK_TRIES`): giving up would leave an email SendGrid accepted
    `claimed`, then `unknown`. Trying again is harmless: the UPDATE is fenced by this
    claim, so after a commit whose reply was lost it matches nothing."""
    tries = 1
    while True:
        try:
            return _mark_once(app, held, state, now, attempts, message_id, error)
        except sa.exc.DBAPIError as exc:
            if not exc.connection_invalidated or tries == MARK_TRIES:
                raise
            tries += 1


def _mark_once(
    app: Relink,
    held: Claim,
    state: State,
    now: datetime,
    attempts: int,
    message_id: str | None,
    error: str | None,
) -> bool:
    delivered = state in (State.SENT, State.OUTBOX)
    allowed = [State.CLAIMED, State.UNKNOWN, State.RELEASED] if delivered else [State.CLAIMED]
    values: dict[str, Any] = {
        "state": str(state),
        "attempts": Notification.attempts + attempts,
        "last_error": (error or None) and error[:1000],
        "updated_at": now,
    }
    if delivered:
        values["sent_at"] = now
        values["provider_message_id"] = message_id and message_id[:200]
    with app.transaction() as session:
        result = session.execute(
            sa.update(Notification)
            .where(
                Notification.id == held.notification_id,
                Notification.claimed_at == held.claimed_at,
                Notification.state.in_([str(s) for s in allowed]),
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            return False
        # released: true again; any other final state (including a delivery recorded
        # over a row an admin had released meanwhile): false
        _set_awaiting(session, held.disconnection_id, state)
        return True


def expire_stale_claims(app: Relink, *, now: datetime, lease: timedelta = CLAIM_LEASE) -> int:
    """Claims older than the lease belong to a run that died between claim and mark: the
    email may have gone out, so they become `unknown` (never resent automatically).

    `awaiting_email` stays false (claimed and unknown are both "not due"): no write."""
    with app.transaction() as session:
        result = session.execute(
            sa.update(Notification)
            .where(Notification.state == State.CLAIMED, Notification.claimed_at <= now - lease)
            .values(
                state=str(State.UNKNOWN),
                last_error="the run that claimed it stopped before recording the result; "
                "it may have been sent (check SendGrid's activity, then "
                "`relink outbox release` it to send it again)",
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        return result.rowcount


# --- sending -----------------------------------------------------------------------------


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

    def __post_init__(self) -> None:
        if self.breaker is None:
            self.breaker = Breaker(self.policy.breaker_threshold)
        if self.clock is None:
            self.clock = advancing_clock(self.now)

    def _time(self) -> datetime:
        assert self.clock is not None
        return max(self.now, self.clock())

    def deliver(self, item: DueEmail) -> str:
        """Claim, send and mark one email; the counter it adds to."""
        assert self.breaker is not None
        if self.breaker.is_open:
            return "deferred"
        if item.recipients.nobody:
            held = claim(
                self.app,
                item,
                now=self._time(),
                state=State.NO_RECIPIENT,
                reason=item.recipients.why,
            )
            return "no_recipient" if held else "skipped"
        settings = self.app.settings
        email = build_email(item, sender=settings.email_from, base_url=settings.base_url)
        held = claim(self.app, item, now=self._time(), subject=email.subject[:500])
        if held is None:
            return "skipped"
        if self.hooks.after_claim:
            self.hooks.after_claim(item)
        attempt, requests = self._send_with_retries(email)
        if self.hooks.after_send:
            self.hooks.after_send(item, attempt)
        self.breaker.record(attempt)
        state = (
            self.mailer.delivered_state
            if attempt.result is Result.SENT
            else _STATE_OF[attempt.result]
        )
        mark(
            self.app,
            held,
            state,
            now=self._time(),
            attempts=requests,
            message_id=attempt.message_id,
            error=attempt.error,
        )
        return str(state)

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


@dataclass
class BatchResult:
    """Plain, JSON-able counts of one batch (a Prefect task result: no secrets)."""

    counts: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None  # why the run should stop (SendGrid unavailable, key refused)

    def as_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, "stopped": self.stopped}


def batches_of(ids: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive runs of at most `size` ids, in order."""
    return [list(ids[i : i + size]) for i in range(0, len(ids), max(1, size))]


def send_batch(sender: Sender, ids: Sequence[int]) -> BatchResult:
    """Claim, send and record the emails of these due disconnections, `concurrency` at
    a time. Each claim re-checks that the disconnection is still open and unclaimed."""
    items = load_due(sender.app, ids)
    counts: Counter[str] = Counter()
    if items:
        workers = max(1, min(sender.policy.concurrency, len(items)))
        with ThreadPoolExecutor(workers, thread_name_prefix="relink-email") as pool:
            counts.update(pool.map(sender.deliver, items))
    counts["skipped"] += len(ids) - len(items)  # deleted meanwhile
    assert sender.breaker is not None
    return BatchResult({k: v for k, v in counts.items() if v}, stopped=sender.breaker.reason)


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


def plan(
    app: Relink,
    *,
    now: datetime,
    due_after: timedelta = DUE_AFTER,
    limit: int | None = None,
) -> list[DueEmail]:
    """Who would be emailed at `now` (a dry run): reads only, claims and sends nothing."""
    with app.sessions() as session:
        ids = due_ids(session, now=now, due_after=due_after, limit=limit)
    return load_due(app, ids)


# --- the outbox: list, show, release ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotificationView:
    id: int
    state: str
    disconnection_id: int
    connection_id: int
    connection: str
    to: list[str]
    subject: str | None
    attempts: int
    claimed_at: datetime
    sent_at: datetime | None
    provider_message_id: str | None
    last_error: str | None
    disconnection_open: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "disconnection_id": self.disconnection_id,
            "connection_id": self.connection_id,
            "connection": self.connection,
            "to": self.to,
            "subject": self.subject,
            "attempts": self.attempts,
            "claimed_at": self.claimed_at.isoformat(),
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "provider_message_id": self.provider_message_id,
            "last_error": self.last_error,
            "disconnection_open": self.disconnection_open,
        }


def _views(session: Session, *conditions: sa.ColumnElement[bool], limit: int | None = None):
    query = (
        sa.select(Notification, Disconnection, Connection.name)
        .join(Disconnection, Disconnection.id == Notification.disconnection_id)
        .join(Connection, Connection.id == Disconnection.connection_id)
        .where(*conditions)
        .order_by(Notification.id)
        .limit(limit)
    )
    return [
        NotificationView(
            id=n.id,
            state=n.state,
            disconnection_id=d.id,
            connection_id=d.connection_id,
            connection=name,
            to=list(n.recipients or []),
            subject=n.subject,
            attempts=n.attempts,
            claimed_at=n.claimed_at,
            sent_at=n.sent_at,
            provider_message_id=n.provider_message_id,
            last_error=n.last_error,
            disconnection_open=d.ended_at is None,
        )
        for n, d, name in session.execute(query)
    ]


def list_notifications(
    session: Session, *, state: str | None = None, limit: int | None = None
) -> list[NotificationView]:
    conditions = [] if state is None else [Notification.state == state]
    return _views(session, *conditions, limit=limit)


def get_notification(session: Session, notification_id: int) -> NotificationView:
    found = _views(session, Notification.id == notification_id)
    if not found:
        raise NotFound(f"no notification {notification_id}; see `relink outbox list`")
    return found[0]


def awaiting_decision(app: Relink, limit: int = 100) -> list[dict[str, Any]]:
    """The `unknown` notifications (an admin decides whether to release them)."""
    with app.sessions() as session:
        views = list_notifications(session, state=State.UNKNOWN, limit=limit)
    return [
        {
            "id": v.id,
            "disconnection_id": v.disconnection_id,
            "connection": v.connection,
            "to": v.to,
            "claimed_at": v.claimed_at.isoformat(),
            "last_error": v.last_error,
        }
        for v in views
    ]


def release(
    session: Session, notification_id: int, *, now: datetime, actor: User | None = None
) -> NotificationView:
    """An admin's decision on an `unknown` email: hand it back to the next run."""
    row = session.get(Notification, notification_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no notification {notification_id}; see `relink outbox list`")
    if row.state != State.UNKNOWN:
        raise Conflict(
            f"notification {notification_id} is {row.state}: only an unknown one can be "
            "released (see `relink outbox list --state unknown`)"
        )
    row.state = State.RELEASED
    row.updated_at = now
    disconnection = session.get(Disconnection, row.disconnection_id)
    assert disconnection is not None
    disconnection.awaiting_email = True  # due again for the next run (same transaction)
    audit.record(
        session,
        "notification.released",
        at=now,
        connection=disconnection.connection,
        actor=actor,
        notification_id=row.id,
        disconnection_id=row.disconnection_id,
    )
    session.flush()
    return get_notification(session, notification_id)
