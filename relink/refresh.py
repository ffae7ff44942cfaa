"""Dataset refresh: run a dataset's query through its connector and keep the result.

Prefect-free: the refresh-datasets flow, the reconnect service and
`relink datasets refresh` all use it.

* The query runs through the connector's `fetch` (SQL for databases; an
  authenticated GET of an API path, records taken from a JSON path, for HTTP
  sources). An unreachable source is asked again with backoff; a refused login is
  not (repeating a bad password can lock the account at the source).
* Warehouse-mode connections: the rows replace the dataset's warehouse table
  `ds_<dataset id>` atomically. They are written to a staging table first, which is
  swapped in by one transaction, so a failed refresh leaves the old table intact and
  a reader never sees a half-written one.
* Direct-query connections: only the result's shape is kept (row count, columns,
  time of the refresh).
* The dataset records `status` ok/error, `last_refreshed_at`, `row_count`,
  `columns` or `last_error`, and one audit event. A dataset whose connection is
  broken is skipped (its error comes from the connection until it is reconnected).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from datetime import time as dt_time
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
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
from relink.errors import InvalidInput, NotFound, VaultError
from relink.models import Connection, Dataset, User
from relink.sweep.validate import CheckPolicy, make_context_factory
from relink.timeutil import utcnow

OK, ERROR, SKIPPED = "ok", "error", "skipped"
# The code connectors give an error they could not classify (a server error such as a
# missing table, an unexpected exception): not an outage, so not retried.
NOT_TRANSIENT = "error"
INSERT_CHUNK = 1000
MAX_COLUMN_NAME = 60  # PostgreSQL cuts identifiers at 63 bytes; leave room for a suffix


@dataclass(frozen=True)
class RefreshPolicy:
    concurrency: int = 4  # datasets refreshed at once
    attempts: int = 3  # an unreachable source is asked this many times
    backoff: float = 1.0  # seconds before the first retry, doubled after each
    timeout: float = 60.0  # seconds per source request (a dataset query may be slow)


@dataclass(frozen=True)
class Refreshed:
    """What one dataset's refresh did: plain, JSON-able, never a secret."""

    dataset_id: int
    dataset: str
    connection_id: int
    status: str  # ok | error | skipped
    mode: str = Mode.DIRECT
    row_count: int | None = None
    columns: tuple[str, ...] = ()
    error_code: str | None = None
    error: str | None = None
    attempts: int = 0
    duration_s: float = 0.0
    table: str | None = None  # the warehouse table, warehouse mode only

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["columns"] = list(self.columns)
        return data


@dataclass(frozen=True)
class RefreshSummary:
    results: tuple[Refreshed, ...]
    duration_s: float

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        return self.count(ERROR) == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "datasets": len(self.results),
            "ok": self.count(OK),
            "error": self.count(ERROR),
            "skipped": self.count(SKIPPED),
            "rows": sum(r.row_count or 0 for r in self.results if r.status == OK),
            "duration_s": round(self.duration_s, 3),
            "results": [r.as_dict() for r in self.results],
        }

    @classmethod
    def from_dicts(cls, results: Sequence[dict[str, Any]], duration_s: float) -> RefreshSummary:
        return cls(
            tuple(Refreshed(**{**r, "columns": tuple(r["columns"])}) for r in results), duration_s
        )

    def markdown(self, title: str = "Dataset refresh") -> str:
        lines = [
            f"# {title}: {self.count(OK)} ok, {self.count(ERROR)} failed, "
            f"{self.count(SKIPPED)} skipped ({self.duration_s:.1f} s)",
            "",
            "| dataset | connection | status | rows | columns | attempts | error |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in self.results:
            lines.append(
                f"| {_md(r.dataset)} ({r.dataset_id}) | {r.connection_id} | {r.status} | "
                f"{'' if r.row_count is None else r.row_count} | {len(r.columns) or ''} | "
                f"{r.attempts} | {_md(r.error or '')} |"
            )
        return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# --- which datasets ----------------------------------------------------------------------


def select_datasets(
    session: Session,
    *,
    connection_id: int | None = None,
    dataset_ids: Sequence[int] | None = None,
) -> list[int]:
    """The ids to refresh: a connection's datasets, the given ones, or (neither) all.

    Unknown ids are NotFound; giving both is InvalidInput.
    """
    if connection_id is not None and dataset_ids:
        raise InvalidInput("give a connection or dataset ids, not both")
    if connection_id is not None:
        if session.get(Connection, connection_id) is None:
            raise NotFound(f"unknown connection {connection_id}; see `relink connections list`")
        return list(
            session.scalars(
                sa.select(Dataset.id)
                .where(Dataset.connection_id == connection_id)
                .order_by(Dataset.id)
            )
        )
    if dataset_ids:
        wanted = sorted(set(dataset_ids))
        found = set(session.scalars(sa.select(Dataset.id).where(Dataset.id.in_(wanted))))
        missing = [i for i in wanted if i not in found]
        if missing:
            raise NotFound(f"unknown dataset {missing[0]}; see `relink connections show ID`")
        return wanted
    return list(session.scalars(sa.select(Dataset.id).order_by(Dataset.id)))


# --- one dataset ---------------------------------------------------------------------------


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


async def refresh_many(
    app: Relink,
    dataset_ids: Sequence[int],
    *,
    policy: RefreshPolicy | None = None,
    clock: Callable[[], datetime] = utcnow,
    actor_id: int | None = None,
) -> RefreshSummary:
    """Refresh datasets concurrently (at most `policy.concurrency` at once); one failing
    dataset never stops the others."""
    policy = policy or RefreshPolicy()
    started = time.perf_counter()
    gate = asyncio.Semaphore(max(1, policy.concurrency))

    async def one(dataset_id: int) -> Refreshed:
        async with gate:
            return await refresh_one(app, dataset_id, policy=policy, clock=clock, actor_id=actor_id)

    results = await asyncio.gather(*(one(i) for i in dataset_ids))
    return RefreshSummary(tuple(results), time.perf_counter() - started)


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


# --- the warehouse -------------------------------------------------------------------------


class WarehouseError(Exception):
    """The rows could not be written to the warehouse; the old table is intact."""


def table_name(dataset_id: int) -> str:
    """The warehouse table of a dataset: derived from its integer id only."""
    if not isinstance(dataset_id, int) or isinstance(dataset_id, bool) or dataset_id < 1:
        raise ValueError(f"not a dataset id: {dataset_id!r}")
    return f"ds_{dataset_id}"


def safe_column_names(columns: Sequence[Any]) -> list[str]:
    """Usable, unique column names: control characters removed, blanks named, long
    names cut, duplicates numbered (``?column?``, ``?column?_2``). Quoting is left to
    SQLAlchemy, so any remaining character is stored as it is."""
    names: list[str] = []
    taken: set[str] = set()
    for index, raw in enumerate(columns, start=1):
        name = "".join(ch for ch in str(raw) if ch.isprintable()).strip()[:MAX_COLUMN_NAME]
        name = name or f"column_{index}"
        candidate, n = name, 2
        while candidate.lower() in taken:
            suffix = f"_{n}"
            candidate = name[: MAX_COLUMN_NAME - len(suffix)] + suffix
            n += 1
        taken.add(candidate.lower())
        names.append(candidate)
    return names


_INT64 = 2**63 - 1


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "int"
    if isinstance(value, int):
        return "int" if -_INT64 <= value <= _INT64 else "text"
    if isinstance(value, float):
        return "float" if math.isfinite(value) else "text"
    if isinstance(value, Decimal):
        return "float" if value.is_finite() else "text"
    return "text"


def _column_kinds(rows: Sequence[Sequence[Any]], width: int) -> list[str]:
    kinds: list[str] = []
    for i in range(width):
        seen = {_kind(row[i]) for row in rows if i < len(row)} - {None}
        if seen == {"int"}:
            kinds.append("int")
        elif seen and seen <= {"int", "float"}:
            kinds.append("float")
        else:
            kinds.append("text")
    return kinds


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, datetime | date | dt_time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _convert(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    return _as_text(value)


_TYPES = {"int": sa.BigInteger, "float": sa.Double, "text": sa.Text}


def replace_table(
    engine: sa.Engine, dataset_id: int, columns: Sequence[Any], rows: Sequence[Sequence[Any]]
) -> list[str]:
    """Replace the dataset's table with `rows`, atomically; returns the column names.

    The rows go to a staging table first; one transaction then drops the old table and
    renames the staging one (MySQL: one RENAME TABLE). Any failure drops the staging
    table and leaves the old table as it was.
    """
    live = table_name(dataset_id)
    if not columns:
        raise WarehouseError("the query returned no columns; nothing to store")
    names = safe_column_names(columns)
    kinds = _column_kinds(rows, len(names))
    staging = f"{live}__new_{secrets.token_hex(4)}"
    table = sa.Table(
        staging,
        sa.MetaData(),
        *(
            sa.Column(name, _TYPES[kind](), key=f"c{i}", nullable=True)
            for i, (name, kind) in enumerate(zip(names, kinds, strict=True))
        ),
    )
    keys = [f"c{i}" for i in range(len(names))]
    try:
        with engine.begin() as conn:
            table.create(conn)
            for start in range(0, len(rows), INSERT_CHUNK):
                chunk = rows[start : start + INSERT_CHUNK]
                conn.execute(
                    table.insert(),
                    [
                        {
                            k: _convert(row[i] if i < len(row) else None, kinds[i])
                            for i, k in enumerate(keys)
                        }
                        for row in chunk
                    ],
                )
        _swap(engine, staging, live)
    except sa.exc.SQLAlchemyError as exc:
        _drop_quietly(engine, staging)
        raise WarehouseError(_warehouse_message(exc)) from None
    except BaseException:
        _drop_quietly(engine, staging)
        raise
    return names


def _swap(engine: sa.Engine, staging: str, live: str) -> None:
    quote = engine.dialect.identifier_preparer.quote
    if engine.dialect.name in {"mysql", "mariadb"}:
        # MySQL commits DDL implicitly; RENAME TABLE of several tables is atomic instead.
        old = f"{live}__old_{secrets.token_hex(4)}"
        with engine.begin() as conn:
            if sa.inspect(conn).has_table(live):
                conn.exec_driver_sql(
                    f"RENAME TABLE {quote(live)} TO {quote(old)}, {quote(staging)} TO {quote(live)}"
                )
                conn.exec_driver_sql(f"DROP TABLE {quote(old)}")
            else:
                conn.exec_driver_sql(f"RENAME TABLE {quote(staging)} TO {quote(live)}")
        return
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            # The sqlite3 driver opens a transaction only before DML: without this
            # BEGIN the DROP would be committed on its own, before the RENAME.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(live)}")
        conn.exec_driver_sql(f"ALTER TABLE {quote(staging)} RENAME TO {quote(live)}")


def _drop_quietly(engine: sa.Engine, table: str) -> None:
    quote = engine.dialect.identifier_preparer.quote
    with contextlib.suppress(sa.exc.SQLAlchemyError), engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(table)}")


def _warehouse_message(exc: sa.exc.SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).splitlines()[0] if str(orig) else ""
    return f"the warehouse refused the rows ({type(orig).__name__}: {first[:200]})"
