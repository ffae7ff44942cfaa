"""Refresh datasets: load each dataset and its connection's credentials (a dataset whose
connection is broken is skipped), fetch through the connector's `fetch` (an unreachable
source is asked again with backoff, a refused login is not: repeating a bad password can
lock the account), store the rows in the warehouse (warehouse mode) or keep the result's
shape (direct query), and record the dataset's status and one audit event. `run_refresh`,
written once, runs at most `policy.concurrency` at once; one failing dataset never stops
the others. Its step comes in as `RefreshSteps`: plain calls (`refresh_many`) or a
Prefect task (the refresh-datasets flow)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.pool import NullPool

import connectors
from connectors.base import (
    AuthFailed,
    CheckError,
    ConnectionSpec,
    FetchResult,
    Misconfigured,
    Unreachable,
)
from relink import audit, db
from relink.app import Relink
from relink.domain.broken import is_broken
from relink.domain.words import DatasetStatus, Mode
from relink.errors import VaultError
from relink.models import Dataset, User
from relink.refreshing.results import ERROR, OK, SKIPPED, Refreshed, RefreshPolicy, RefreshSummary
from relink.refreshing.selection import select_datasets
from relink.sweep.validate import CheckPolicy, make_context_factory
from relink.timeutil import utcnow
from relink.warehouse import WarehouseError, replace_table, safe_column_names, table_name

# The code connectors give an error they could not classify (a server error such as a
# missing table, an unexpected exception): not an outage, so not retried.
NOT_TRANSIENT = "error"


@dataclass(frozen=True)
class _Job:
    dataset_id: int
    dataset: str
    query: str
    mode: str
    spec: ConnectionSpec


def _load(app: Relink, dataset_id: int) -> _Job | Refreshed:
    with app.sessions() as session:
        ds = session.get(Dataset, dataset_id)
        if ds is None:
            return Refreshed(dataset_id, "?", 0, ERROR, error_code="not_found", error="deleted")
        conn = ds.connection
        base = {"dataset_id": ds.id, "dataset": ds.name, "connection_id": conn.id}
        if is_broken(conn.status, conn.invalid_since):
            return Refreshed(
                **base,
                status=SKIPPED,
                mode=conn.mode,
                error_code="disconnected",
                error=f"connection {conn.id} ({conn.name!r}) is disconnected; reconnect it "
                f"first (`relink reconnect {conn.id}`)",
            )
        try:
            connectors.get(conn.type)
            credentials = app.vault.decrypt(conn.credentials, connection=f"{conn.id}")
        except (connectors.UnknownConnector, VaultError) as exc:
            return Refreshed(
                **base, status=ERROR, mode=conn.mode, error_code="error", error=str(exc)
            )
        spec = ConnectionSpec(conn.id, conn.type, dict(conn.settings), credentials, conn.version)
        return _Job(ds.id, ds.name, ds.query, conn.mode, spec)


async def _fetch_with_retries(
    job: _Job, app: Relink, policy: RefreshPolicy, now: datetime
) -> tuple[FetchResult | CheckError, int]:
    from relink.tokens import DbTokenStore

    connector = connectors.get(job.spec.type)
    make_ctx = make_context_factory(
        app, CheckPolicy(timeout=policy.timeout), now=now, token_store=DbTokenStore(app)
    )
    delay = policy.backoff
    outcome: FetchResult | CheckError = Unreachable("not_fetched", "not fetched")
    attempts = 0
    for attempt in range(max(1, policy.attempts)):
        if attempt:
            await asyncio.sleep(delay)
            delay *= 2
        attempts += 1
        try:
            return await connector.fetch(job.spec, job.query, make_ctx()), attempts
        except (AuthFailed, Misconfigured) as exc:  # asking again will not help
            return exc, attempts
        except Unreachable as exc:
            outcome = exc
            if exc.code == NOT_TRANSIENT:  # e.g. a syntax error in the query: asking again
                break  # will not help
        except Exception as exc:  # noqa: BLE001 - one broken connector never stops a run
            failed = f"the {job.spec.type} connector failed: {type(exc).__name__}"
            return Unreachable(NOT_TRANSIENT, failed), attempts
    return outcome, attempts


async def refresh_one(
    app: Relink,
    dataset_id: int,
    *,
    policy: RefreshPolicy | None = None,
    clock: Callable[[], datetime] = utcnow,
    actor_id: int | None = None,
) -> Refreshed:
    """Fetch one dataset, store its rows (warehouse) or shape (direct), record the result."""
    policy = policy or RefreshPolicy()
    started = time.perf_counter()
    loaded = await asyncio.to_thread(_load, app, dataset_id)
    if isinstance(loaded, Refreshed):
        if loaded.status == ERROR and loaded.error_code != "not_found":
            await asyncio.to_thread(_record, app, loaded, clock(), actor_id)
        return loaded
    job = loaded
    fetched, attempts = await _fetch_with_retries(job, app, policy, clock())
    base = {
        "dataset_id": job.dataset_id,
        "dataset": job.dataset,
        "connection_id": job.spec.id,
        "mode": job.mode,
        "attempts": attempts,
    }
    if isinstance(fetched, CheckError):
        result = Refreshed(**base, status=ERROR, error_code=fetched.code, error=fetched.message)
    else:
        try:
            columns, table = await asyncio.to_thread(_store, app, job, fetched)
        except WarehouseError as exc:
            result = Refreshed(**base, status=ERROR, error_code="warehouse", error=str(exc))
        else:
            result = Refreshed(
                **base, status=OK, row_count=fetched.row_count, columns=columns, table=table
            )
    result = Refreshed(**{**asdict(result), "duration_s": round(time.perf_counter() - started, 3)})
    await asyncio.to_thread(_record, app, result, clock(), actor_id)
    return result


@dataclass(frozen=True)
class RefreshSteps:
    """The refresh's I/O step. It takes and returns ids and counts: no secret (a Prefect
    task's inputs and result are stored)."""

    refresh_dataset: Callable[[int, dict[str, Any], int | None], Awaitable[dict[str, Any]]]
    """(dataset id, `RefreshPolicy` as a dict, actor id) -> `Refreshed.as_dict()`."""


async def run_refresh(
    dataset_ids: Sequence[int],
    *,
    steps: RefreshSteps,
    policy: RefreshPolicy | None = None,
    actor_id: int | None = None,
) -> RefreshSummary:
    """Refresh datasets concurrently (at most `policy.concurrency` at once); one failing
    dataset never stops the others. Written once: `refresh_many` passes `plain_steps`,
    the refresh-datasets flow a Prefect task (tasks/refresh.py)."""
    policy = policy or RefreshPolicy()
    params = asdict(policy)
    started = time.perf_counter()
    gate = asyncio.Semaphore(max(1, policy.concurrency))

    async def one(dataset_id: int) -> dict[str, Any]:
        async with gate:
            return await steps.refresh_dataset(dataset_id, params, actor_id)

    results = await asyncio.gather(*(one(i) for i in dataset_ids))
    return RefreshSummary.from_dicts(results, time.perf_counter() - started)


def plain_steps(app: Relink, *, clock: Callable[[], datetime] = utcnow) -> RefreshSteps:
    """The step as a plain call in this process."""

    async def refresh(dataset_id: int, policy: dict[str, Any], actor_id: int | None) -> dict:
        done = await refresh_one(
            app, dataset_id, policy=RefreshPolicy(**policy), clock=clock, actor_id=actor_id
        )
        return done.as_dict()

    return RefreshSteps(refresh_dataset=refresh)


async def refresh_many(
    app: Relink,
    dataset_ids: Sequence[int],
    *,
    policy: RefreshPolicy | None = None,
    clock: Callable[[], datetime] = utcnow,
    actor_id: int | None = None,
) -> RefreshSummary:
    """`run_refresh` in this process (the CLI, the reconnect service, the tests)."""
    return await run_refresh(
        dataset_ids, steps=plain_steps(app, clock=clock), policy=policy, actor_id=actor_id
    )


async def refresh_connection(
    app: Relink,
    connection_id: int,
    *,
    policy: RefreshPolicy | None = None,
    actor_id: int | None = None,
) -> RefreshSummary:
    """Refresh every dataset of a connection in this process (after a reconnect)."""
    with app.sessions() as session:
        ids = select_datasets(session, connection_id=connection_id)
    return await refresh_many(app, ids, policy=policy, actor_id=actor_id)


def _store(app: Relink, job: _Job, fetched: FetchResult) -> tuple[tuple[str, ...], str | None]:
    if job.mode != Mode.WAREHOUSE:
        return tuple(safe_column_names(fetched.columns)), None
    engine = db.make_engine(app.settings.effective_warehouse_url, poolclass=NullPool)
    try:
        columns = replace_table(engine, job.dataset_id, fetched.columns, fetched.rows)
    finally:
        engine.dispose()
    return tuple(columns), table_name(job.dataset_id)


def _record(app: Relink, result: Refreshed, now: datetime, actor_id: int | None) -> None:
    with app.transaction() as session:
        ds = session.get(Dataset, result.dataset_id, with_for_update=True)
        if ds is None:  # deleted meanwhile
            return
        actor = session.get(User, actor_id) if actor_id is not None else None
        if result.status == OK:
            ds.status = DatasetStatus.OK
            ds.last_refreshed_at = now
            ds.row_count = result.row_count
            ds.columns = list(result.columns)
            ds.last_error = None
            audit.record(
                session,
                "dataset.refreshed",
                at=now,
                connection=ds.connection,
                actor=actor,
                dataset=ds.name,
                dataset_id=ds.id,
                mode=result.mode,
                rows=result.row_count,
                columns=len(result.columns),
                table=result.table,
            )
        else:
            ds.status = DatasetStatus.ERROR
            ds.last_error = (result.error or "the refresh failed")[:1000]
            audit.record(
                session,
                "dataset.refresh_failed",
                at=now,
                connection=ds.connection,
                actor=actor,
                dataset=ds.name,
                dataset_id=ds.id,
                code=result.error_code,
                message=ds.last_error,
            )
