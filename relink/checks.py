"""The credential sweep: load connections in keyset batches, validate each batch
concurrently (a global cap and a per-provider cap, retries with backoff for
outages, or after the wait a source asks for with Retry-After, within each check's
time budget), and write the results back through the state rules, one transaction
per batch. Prefect-free: the check-connections flow and `relink check` both use it.

A sweep's summary lists the installation problems it met (`misconfigured` results by
provider and code, with the message that says what an admin fixes) apart from the
provider incidents (most connections of a provider failing alike).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError

import connectors
from connectors.base import CheckContext, CheckResult, ConnectionSpec, TokenStore
from connectors.http import SharedClients
from relink import audit
from relink.app import Relink
from relink.domain.words import Outcome
from relink.errors import VaultError
from relink.models import Connection, Disconnection, User
from relink.state import ConnState, Incident, decide, detect_incidents

ERROR = "error"  # not an outcome of the source: the connection could not be checked at all


@dataclass(frozen=True)
class CheckPolicy:
    batch_size: int = 200
    concurrency: int = 50  # checks in flight at once within a batch
    per_provider: int = 20  # of which at most this many against one provider
    attempts: int = 3  # an unreachable source is asked this many times
    backoff: float = 0.5  # seconds before the first retry, doubled after each
    timeout: float = 10.0  # seconds per request to a source
    refresh_window: float = 300.0
    # seconds one check may last in all, waits included: a source asking (Retry-After)
    # for a longer wait than is left is not asked again, and the check is unreachable
    budget: float = 30.0


Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Checked:
    connection_id: int
    provider: str
    result: CheckResult
    version: int  # the version the result was obtained against


@dataclass
class BatchSummary:
    """Plain, JSON-able counts of one batch (a Prefect task result: no secrets)."""

    checked: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    opened: int = 0
    closed: int = 0
    status_changes: int = 0
    skipped: int = 0  # changed by someone else (a reconnect) during the check
    # "provider|outcome|code" -> count, for incident detection across batches
    by_provider: dict[str, int] = field(default_factory=dict)
    # "provider|code" -> the message of a misconfigured result (what an admin fixes)
    installation: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "outcomes": self.outcomes,
            "opened": self.opened,
            "closed": self.closed,
            "status_changes": self.status_changes,
            "skipped": self.skipped,
            "by_provider": self.by_provider,
            "installation": self.installation,
        }


@dataclass(frozen=True, slots=True)
class InstallationProblem:
    """Connections of one provider that the installation fails alike (`misconfigured`)."""

    provider: str
    code: str | None
    connections: int
    fix: str  # the checks' message: what is wrong and what an admin sets (never a secret)

    def describe(self) -> str:
        return f"{self.provider}: {self.connections} connection(s), {self.code}: {self.fix}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "code": self.code,
            "connections": self.connections,
            "fix": self.fix,
        }


@dataclass
class SweepSummary:
    checked: int
    outcomes: dict[str, int]
    opened: int
    closed: int
    status_changes: int
    skipped: int
    batches: int
    incidents: list[Incident]
    installation_problems: list[InstallationProblem]
    duration_s: float

    @classmethod
    def combine(cls, batches: Sequence[dict[str, Any]], *, duration_s: float) -> SweepSummary:
        outcomes: Counter[str] = Counter()
        by_provider: Counter[str] = Counter()
        totals: Counter[str] = Counter()
        fixes: dict[str, str] = {}
        for batch in batches:
            outcomes.update(batch["outcomes"])
            by_provider.update(batch["by_provider"])
            for key, fix in batch.get("installation", {}).items():
                fixes.setdefault(key, fix)
            for key in ("checked", "opened", "closed", "status_changes", "skipped"):
                totals[key] += batch[key]
        results = []
        problems = []
        for key, count in sorted(by_provider.items()):
            provider, outcome, code = key.split("|", 2)
            results.extend([(provider, outcome, code or None)] * count)
            if outcome == Outcome.MISCONFIGURED:
                fix = fixes.get(f"{provider}|{code}", "")
                problems.append(InstallationProblem(provider, code or None, count, fix))
        return cls(
            checked=totals["checked"],
            outcomes={k: outcomes.get(k, 0) for k in (*Outcome, ERROR)},
            opened=totals["opened"],
            closed=totals["closed"],
            status_changes=totals["status_changes"],
            skipped=totals["skipped"],
            batches=len(batches),
            incidents=detect_incidents(results),
            installation_problems=problems,
            duration_s=round(duration_s, 3),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "outcomes": self.outcomes,
            "opened": self.opened,
            "closed": self.closed,
            "status_changes": self.status_changes,
            "skipped": self.skipped,
            "batches": self.batches,
            "incidents": [i.describe() for i in self.incidents],
            "installation_problems": [p.as_dict() for p in self.installation_problems],
            "duration_s": self.duration_s,
        }

    def markdown(self) -> str:
        lines = [
            f"# Connection check: {self.checked} connections in {self.duration_s:.1f} s",
            "",
            "| outcome | connections |",
            "| --- | --- |",
            *(f"| {k} | {v} |" for k, v in self.outcomes.items()),
            "",
            f"Disconnections opened: {self.opened}; closed: {self.closed}; "
            f"status changes: {self.status_changes}; skipped (changed meanwhile): {self.skipped}.",
        ]
        if self.incidents:
            lines += ["", "## Provider incidents", ""]
            lines += [f"- {i.describe()}" for i in self.incidents]
        if self.installation_problems:
            lines += ["", self.installation_markdown()]
        return "\n".join(lines) + "\n"

    def installation_markdown(self) -> str:
        """The installation problems, for the admins who fix them."""
        lines = [
            "## Installation problems",
            "",
            "Only an admin can fix these; no connection is disconnected and no owner is "
            "emailed for them.",
            "",
            "| provider | code | connections | what to fix |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {p.provider} | {p.code or ''} | {p.connections} | {_cell(p.fix)} |"
            for p in self.installation_problems
        ]
        return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


# --- planning ------------------------------------------------------------------------


def plan_ranges(
    session: Session, batch_size: int, connection_ids: Sequence[int] | None = None
) -> list[tuple[int, int | None]]:
    """(after_id, upto_id] id ranges of at most `batch_size` connections each.

    Only every batch_size-th id is read, so planning 100k connections stays small.
    """
    if connection_ids:
        ids = sorted(set(connection_ids))
        chunks = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
        return [(chunk[0] - 1, chunk[-1]) for chunk in chunks]
    numbered = sa.select(
        Connection.id, sa.func.row_number().over(order_by=Connection.id).label("n")
    ).subquery()
    bounds = list(
        session.scalars(
            sa.select(numbered.c.id).where(numbered.c.n % batch_size == 0).order_by(numbered.c.id)
        )
    )
    starts = [0, *bounds]
    ranges: list[tuple[int, int | None]] = list(zip(starts, [*bounds, None], strict=True))
    last_end = bounds[-1] if bounds else 0
    tail = session.scalar(sa.select(Connection.id).where(Connection.id > last_end).limit(1))
    return ranges if tail is not None else ranges[:-1]


# --- one batch -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unloadable:
    connection_id: int
    provider: str
    version: int
    code: str
    message: str


def load_batch(
    app: Relink, after_id: int, upto_id: int | None, only: Sequence[int] | None = None
) -> list[ConnectionSpec | Unloadable]:
    """The connections in (after_id, upto_id], decrypted; bad ones as Unloadable."""
    query = (
        sa.select(
            Connection.id,
            Connection.name,
            Connection.type,
            Connection.settings,
            Connection.credentials,
            Connection.version,
        )
        .where(Connection.id > after_id)
        .order_by(Connection.id)
    )
    if upto_id is not None:
        query = query.where(Connection.id <= upto_id)
    if only:
        query = query.where(Connection.id.in_(only))
    with app.sessions() as session:
        rows = session.execute(query).all()
    loaded: list[ConnectionSpec | Unloadable] = []
    for row in rows:
        try:
            connector = connectors.get(row.type)
        except connectors.UnknownConnector:
            loaded.append(
                Unloadable(
                    row.id,
                    row.type,
                    row.version,
                    "unknown_type",
                    f"unknown connector type {row.type!r}",
                )
            )
            continue
        try:
            credentials = app.vault.decrypt(row.credentials, connection=f"{row.id} ({row.name!r})")
        except VaultError as exc:
            loaded.append(
                Unloadable(row.id, connector.provider, row.version, "vault_error", str(exc))
            )
            continue
        loaded.append(ConnectionSpec(row.id, row.type, row.settings, credentials, row.version))
    return loaded


async def validate_all(
    specs: Sequence[ConnectionSpec],
    make_ctx: Callable[[], CheckContext],
    policy: CheckPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> list[Checked]:
    """Validate concurrently under the global and per-provider caps, the HTTP clients
    shared between the checks (`connectors.http.SharedClients`). `sleep` and `clock`
    are how a check waits between attempts and measures its budget."""
    everything = asyncio.Semaphore(policy.concurrency)
    providers: dict[str, asyncio.Semaphore] = {}

    async def one(spec: ConnectionSpec, clients: SharedClients) -> Checked:
        connector = connectors.get(spec.type)
        provider_cap = providers.setdefault(
            connector.provider, asyncio.Semaphore(policy.per_provider)
        )

        def make_shared_ctx() -> CheckContext:
            return dataclasses.replace(make_ctx(), clients=clients)

        async with provider_cap, everything:
            result = await _validate_with_retries(
                connector, spec, make_shared_ctx, policy, sleep=sleep, clock=clock
            )
        return Checked(spec.id, connector.provider, result, result.stored_version or spec.version)

    async with SharedClients() as clients:
        return list(await asyncio.gather(*(one(s, clients) for s in specs)))


async def _validate_with_retries(
    connector: connectors.Connector,
    spec: ConnectionSpec,
    make_ctx: Callable[[], CheckContext],
    policy: CheckPolicy,
    *,
    sleep: Sleep,
    clock: Clock,
) -> CheckResult:
    """Ask again while the source is unreachable: after the wait it asked for (its
    Retry-After), else after the backoff; never past the check's time budget."""
    started = clock()
    delay = policy.backoff
    result = CheckResult(Outcome.UNREACHABLE, "not_checked", "")
    stored_version: int | None = None
    for attempt in range(policy.attempts):
        if attempt:
            asked = result.retry_after
            wait = delay if asked is None else asked
            if clock() - started + wait > policy.budget:
                if asked is not None:
                    result = dataclasses.replace(
                        result,
                        message=f"{result.message}; it asked for {asked:g} s before the next "
                        f"request, more than is left of this check's {policy.budget:g} s",
                    )
                break
            await sleep(wait)
            delay *= 2
        try:
            result = await connector.validate(spec, make_ctx())
        except Exception as exc:  # noqa: BLE001 - one broken connector never stops the sweep
            return CheckResult(
                Outcome.UNREACHABLE,
                ERROR,
                f"the {spec.type} connector failed: {type(exc).__name__}",
            )
        stored_version = result.stored_version or stored_version
        if result.outcome is not Outcome.UNREACHABLE:
            break
    if stored_version and not result.stored_version:
        result = dataclasses.replace(result, stored_version=stored_version)
    return result


def record_batch(
    session: Session,
    checked: Sequence[Checked],
    unloadable: Sequence[Unloadable],
    *,
    now: datetime,
    actor_id: int | None = None,
) -> BatchSummary:
    """Apply the state rules to every result of a batch, in the caller's transaction;
    `actor_id` is the user who asked for the check (None: the schedule)."""
    summary = BatchSummary()
    ids = [c.connection_id for c in checked] + [u.connection_id for u in unloadable]
    if not ids:
        return summary
    conns = {
        c.id: c
        for c in session.scalars(
            sa.select(Connection).where(Connection.id.in_(ids)).with_for_update()
        )
    }
    open_eps = {
        d.connection_id: d
        for d in session.scalars(
            sa.select(Disconnection).where(
                Disconnection.connection_id.in_(ids), Disconnection.ended_at.is_(None)
            )
        )
    }
    outcomes: Counter[str] = Counter()
    by_provider: Counter[str] = Counter()
    plain: list[_Bookkeeping] = []  # rows whose only change is the check's own record
    for item in checked:
        conn = conns.get(item.connection_id)
        if conn is None or conn.version != item.version:
            summary.skipped += 1
            continue
        error = item.result.code == ERROR
        outcome = ERROR if error else str(item.result.outcome)
        outcomes[outcome] += 1
        by_provider[f"{item.provider}|{outcome}|{item.result.code or ''}"] += 1
        if error:
            plain.append(_Bookkeeping.error(conn, item.result.code or ERROR, item.result.message))
            continue
        if item.result.outcome is Outcome.MISCONFIGURED:
            key = f"{item.provider}|{item.result.code or ''}"
            summary.installation.setdefault(key, item.result.message)
        row = _apply(session, conn, open_eps.get(conn.id), item.result, now, summary, actor_id)
        if row is not None:
            plain.append(row)
    for bad in unloadable:
        conn = conns.get(bad.connection_id)
        if conn is None or conn.version != bad.version:
            summary.skipped += 1
            continue
        outcomes[ERROR] += 1
        by_provider[f"{bad.provider}|{ERROR}|{bad.code}"] += 1
        plain.append(_Bookkeeping.error(conn, bad.code, bad.message))
    _write_bookkeeping(session, plain, now)
    summary.checked = sum(outcomes.values())
    summary.outcomes = dict(outcomes)
    summary.by_provider = dict(by_provider)
    return summary


@dataclass(frozen=True, slots=True)
class _Bookkeeping:
    """What a check changes on a connection whose status and episode stay as they are."""

    conn: Connection
    error_code: str | None
    error_message: str | None
    invalid_since: datetime | None
    last_outcome: str
    last_outcome_code: str | None

    @classmethod
    def error(cls, conn: Connection, code: str, message: str) -> _Bookkeeping:
        return cls(conn, code, message[:1000], conn.invalid_since, ERROR, code)


_CONNECTIONS = Connection.__table__
# One statement for the whole batch (executemany) instead of an ORM UPDATE per row: the
# same version check and bump the ORM's version counter makes.
_BOOKKEEPING_UPDATE = (
    sa.update(_CONNECTIONS)
    .where(
        _CONNECTIONS.c.id == sa.bindparam("b_id"),
        _CONNECTIONS.c.version == sa.bindparam("b_version"),
    )
    .values(
        last_checked_at=sa.bindparam("b_checked_at"),
        last_error_code=sa.bindparam("b_error_code"),
        last_error_message=sa.bindparam("b_error_message"),
        invalid_since=sa.bindparam("b_invalid_since"),
        last_outcome=sa.bindparam("b_last_outcome"),
        last_outcome_code=sa.bindparam("b_last_outcome_code"),
        version=_CONNECTIONS.c.version + 1,
    )
)


def _write_bookkeeping(session: Session, rows: Sequence[_Bookkeeping], now: datetime) -> None:
    if not rows:
        return
    params = [
        {
            "b_id": r.conn.id,
            "b_version": r.conn.version,
            "b_checked_at": now,
            "b_error_code": r.error_code,
            "b_error_message": r.error_message,
            "b_invalid_since": r.invalid_since,
            "b_last_outcome": r.last_outcome,
            "b_last_outcome_code": r.last_outcome_code,
        }
        for r in rows
    ]
    connection = session.connection()
    updated = connection.execute(_BOOKKEEPING_UPDATE, params).rowcount
    if connection.dialect.supports_sane_multi_rowcount and updated != len(rows):
        raise StaleDataError(f"{len(rows) - updated} connection(s) changed while being recorded")
    for r in rows:  # the session's objects as the database now has them
        for name, value in (
            ("last_checked_at", now),
            ("last_error_code", r.error_code),
            ("last_error_message", r.error_message),
            ("invalid_since", r.invalid_since),
            ("last_outcome", r.last_outcome),
            ("last_outcome_code", r.last_outcome_code),
            ("version", r.conn.version + 1),
        ):
            set_committed_value(r.conn, name, value)


def _apply(
    session: Session,
    conn: Connection,
    open_ep: Disconnection | None,
    result: CheckResult,
    now: datetime,
    summary: BatchSummary,
    actor_id: int | None = None,
) -> _Bookkeeping | None:
    """Apply the state rules to one result; a change of status or episode is made on the
    session's object, anything less is returned for the batch's one bookkeeping UPDATE."""
    before = ConnState(
        conn.status,
        conn.invalid_since,
        open_ep is not None,
        conn.last_error_code,
        conn.last_error_message,
    )
    decision = decide(before, result.outcome, result.code, result.message, now=now)
    message = (decision.error_message or None) and decision.error_message[:1000]
    opens = decision.open_disconnection
    closes = decision.close_disconnection and open_ep is not None
    if not (opens or closes or decision.changes_status(before)):
        return _Bookkeeping(
            conn,
            decision.error_code,
            message,
            decision.invalid_since,
            decision.last_outcome,
            decision.last_outcome_code,
        )
    conn.last_checked_at = now
    conn.last_outcome = decision.last_outcome
    conn.last_outcome_code = decision.last_outcome_code
    conn.last_error_code = decision.error_code
    conn.last_error_message = message
    conn.invalid_since = decision.invalid_since
    if opens:
        session.add(Disconnection(connection_id=conn.id, started_at=now, reason_code=result.code))
        summary.opened += 1
    if closes:
        assert open_ep is not None
        open_ep.ended_at = now
        summary.closed += 1
    if decision.changes_status(before):
        summary.status_changes += 1
        conn.status = decision.status
        conn.updated_at = now
        audit.record(
            session,
            "connection.status_changed",
            at=now,
            connection=conn,
            actor=session.get(User, actor_id) if actor_id is not None else None,
            before=before.status,
            after=decision.status,
            code=result.code,
            message=result.message,
        )
    return None


# --- entry points ------------------------------------------------------------------------


def make_context_factory(
    app: Relink, policy: CheckPolicy, *, now: datetime, token_store: TokenStore | None
) -> Callable[[], CheckContext]:
    oauth = {
        name: {
            "client_id": entry.client_id,
            "client_secret": entry.client_secret.get_secret_value(),
        }
        for name, entry in app.settings.oauth.items()
    }

    def make() -> CheckContext:
        return CheckContext(
            now=now,
            timeout=policy.timeout,
            app_settings={"oauth": oauth},
            token_store=token_store,
            refresh_window=policy.refresh_window,
        )

    return make


async def check_range(
    app: Relink,
    after_id: int,
    upto_id: int | None,
    *,
    now: datetime,
    policy: CheckPolicy,
    only: Sequence[int] | None = None,
    actor_id: int | None = None,
) -> BatchSummary:
    """Load, validate and record one batch; returns its counts. `actor_id`: who asked."""
    from relink.tokens import DbTokenStore

    loaded = await asyncio.to_thread(load_batch, app, after_id, upto_id, only)
    specs = [s for s in loaded if isinstance(s, ConnectionSpec)]
    unloadable = [s for s in loaded if isinstance(s, Unloadable)]
    make_ctx = make_context_factory(app, policy, now=now, token_store=DbTokenStore(app))
    checked = await validate_all(specs, make_ctx, policy)
    return await asyncio.to_thread(_record_with_retry, app, checked, unloadable, now, actor_id)


def _record_with_retry(
    app: Relink,
    checked: Sequence[Checked],
    unloadable: Sequence[Unloadable],
    now: datetime,
    actor_id: int | None = None,
) -> BatchSummary:
    try:
        with app.transaction() as session:
            return record_batch(session, checked, unloadable, now=now, actor_id=actor_id)
    except StaleDataError:
        # someone changed a connection between our read and write: the version
        # check in record_batch skips it on the second pass
        with app.transaction() as session:
            return record_batch(session, checked, unloadable, now=now, actor_id=actor_id)


async def sweep(
    app: Relink,
    *,
    now: datetime,
    policy: CheckPolicy | None = None,
    connection_ids: Sequence[int] | None = None,
) -> SweepSummary:
    """Check every connection (or the given ones) batch by batch, in this process."""
    policy = policy or CheckPolicy(timeout=app.settings.check_timeout)
    started = time.perf_counter()
    with app.sessions() as session:
        ranges = plan_ranges(session, policy.batch_size, connection_ids)
    batches = []
    for after_id, upto_id in ranges:
        summary = await check_range(
            app, after_id, upto_id, now=now, policy=policy, only=connection_ids
        )
        batches.append(summary.as_dict())
    return SweepSummary.combine(batches, duration_s=time.perf_counter() - started)
