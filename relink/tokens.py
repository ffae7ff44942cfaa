"""Rotated OAuth credentials, persisted over the app database (`connectors.base.TokenStore`).

A refresh-token grant with rotation invalidates the refresh token it used: the new token
set must reach the database, and two runs must never both spend the same refresh token.
`DbTokenStore.refresh` therefore, per connection:

1. takes an in-process `asyncio.Lock` (per event loop, database and connection id), so
   the checks of one event loop wait for each other without asking the database;
2. on backends with row locks (PostgreSQL, MySQL) opens a transaction and reads the row
   with ``SELECT ... FOR UPDATE``; the transaction stays open while the refresh HTTP
   call runs, so another process waits and then sees the rotated tokens. SQLite has no
   row locks (and a read snapshot cannot be upgraded to a write in WAL mode once
   another writer committed), so there the connection's lock file is taken first
   (`relink.locks`: ``flock`` on ``<database file>-locks/<id>.lock``, shared by every
   process and thread on the file) and held until the write has committed; the row is
   read and written in short transactions of their own. Past
   RELINK_REFRESH_LOCK_TIMEOUT the check is `unreachable` (``token_refresh_busy``):
   nothing was spent;
3. when the stored credentials differ from the caller's and are `usable`, returns them
   without calling the provider (another run refreshed first);
4. otherwise calls `refresh(stored)` and writes its result with
   ``UPDATE connections SET credentials=?, version=version+1, updated_at=? WHERE id=? AND
   version=?``. When the version moved (SQLite only: a status update or a reconnect,
   which take no lock file, wrote the row in between) and the stored credentials are
   still the ones we refreshed from (a status update, say), the write is retried on the
   new version; when the credentials changed too (a reconnect stored a set), the stored
   set wins and is returned.
   When the database drops the session between the grant and the write (a restart, a
   failover), the write is made again through a new session, under the same version
   check: the provider has rotated the refresh token already, and the answer in hand is
   the only copy of the new one.

Blocking database work runs in worker threads (`asyncio.to_thread`). A step that needs
no row lock checks a pooled connection out and returns it within its thread (a
connection kept from one step to the next, by many refreshes at once, emptied the pool,
and the threads waiting for one left none to return them: a 30-second stall). A locked
row's `Connection` is used by one thread at a time, step after step. Every step is
shielded from cancellation; that connection is closed (rolling back, which releases
the row lock), and a lock file released, only after the step running in its thread has
finished. At most
`max_locked` row locks are held by one event loop at a time: each one holds a pooled
database connection during an HTTP call.

Audit: a refresh writes NO audit event. Tokens of busy providers rotate every hour, so
an event per refresh would drown the connection's history; the bumped `version` and
`updated_at` record that the row changed, and a DEBUG log line names the connection id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa

import connectors
from connectors.base import ConnectionSpec, Credentials
from connectors.outcomes import FINDINGS, TOKEN_REFRESH_BUSY
from relink.app import Relink
from relink.domain.expiry import UNKNOWN, Expiry, ExpiryKind
from relink.locks import ConnectionLocks, LockBusy, lock_dir
from relink.models import Connection
from relink.timeutil import utcnow

log = logging.getLogger("relink.tokens")

T = TypeVar("T")

DEFAULT_MAX_LOCKED = 4
WRITE_ATTEMPTS = 3


class ConnectionGone(LookupError):
    """The connection row does not exist (deleted while a check ran)."""

    def __init__(self, connection_id: int) -> None:
        super().__init__(f"connection {connection_id} no longer exists")
        self.connection_id = connection_id


# --- in-process locks: asyncio primitives belong to one event loop -------------------


@dataclass
class _LoopLocks:
    locks: dict[tuple[str, int], asyncio.Lock] = field(default_factory=dict)
    users: Counter[tuple[str, int]] = field(default_factory=Counter)
    row_slots: dict[str, asyncio.Semaphore] = field(default_factory=dict)


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopLocks] = (
    weakref.WeakKeyDictionary()
)
_per_loop_guard = threading.Lock()


def _loop_locks() -> _LoopLocks:
    loop = asyncio.get_running_loop()
    with _per_loop_guard:
        state = _per_loop.get(loop)
        if state is None:
            state = _per_loop[loop] = _LoopLocks()
        return state


@contextlib.asynccontextmanager
async def _connection_lock(database: str, connection_id: int) -> AsyncIterator[None]:
    state = _loop_locks()
    key = (database, connection_id)
    lock = state.locks.setdefault(key, asyncio.Lock())
    state.users[key] += 1
    try:
        async with lock:
            yield
    finally:
        state.users[key] -= 1
        if state.users[key] <= 0:
            del state.users[key]
            state.locks.pop(key, None)


# --- one database connection driven from worker threads --------------------------------


class _ThreadedConnection:
    """A SQLAlchemy Connection used from worker threads, one step at a time."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._conn: sa.Connection | None = None
        self._last: asyncio.Future[Any] | None = None

    async def run(self, step: Callable[[sa.Connection], T]) -> T:
        def work() -> T:
            if self._conn is None:
                self._conn = self._engine.connect()
            return step(self._conn)

        task = asyncio.ensure_future(asyncio.to_thread(work))
        self._last = task
        # Shielded: a cancelled caller must not leave a thread and this coroutine
        # disagreeing about whether the transaction is still open.
        return await asyncio.shield(task)

    async def close(self) -> None:
        """Roll back whatever is open and return the connection, after the last step."""
        last = self._last

        async def closer() -> None:
            if last is not None:
                await asyncio.wait([last])
            if self._conn is not None:
                await asyncio.to_thread(self._conn.close)
                self._conn = None

        await asyncio.shield(asyncio.ensure_future(closer()))


# --- the store ---------------------------------------------------------------------------


class DbTokenStore:
    """`connectors.base.TokenStore` over Relink's app database (see the module docstring)."""

    def __init__(
        self,
        app: Relink,
        *,
        max_locked: int = DEFAULT_MAX_LOCKED,
        locks: ConnectionLocks | None = None,
    ) -> None:
        self.app = app
        self.max_locked = max_locked
        directory = lock_dir(app.engine.url)
        if locks is None and directory is not None:
            locks = ConnectionLocks(directory, timeout=app.settings.refresh_lock_timeout)
        # SQLite file databases only; None elsewhere (row locks, or an in-memory database)
        self.locks = locks

    @property
    def _database(self) -> str:
        return self.app.engine.url.render_as_string(hide_password=True)

    @property
    def _row_locks(self) -> bool:
        return self.app.engine.dialect.name != "sqlite"

    async def reload(self, connection_id: int) -> tuple[Credentials, int]:
        return await self._step(lambda conn: self._read(conn, connection_id, lock=False))

    async def refresh(
        self,
        conn: ConnectionSpec,
        refresh: Callable[[Credentials], Awaitable[Credentials]],
        *,
        usable: Callable[[Credentials], bool],
    ) -> tuple[Credentials, int]:
        async with _connection_lock(self._database, conn.id):
            if not self._row_locks:
                return await self._refresh_file_locked(conn, refresh, usable)
            state = _loop_locks()
            slots = state.row_slots.setdefault(self._database, asyncio.Semaphore(self.max_locked))
            async with slots:
                return await self._refresh_locked(conn, refresh, usable)

    async def _refresh_locked(
        self,
        spec: ConnectionSpec,
        refresh: Callable[[Credentials], Awaitable[Credentials]],
        usable: Callable[[Credentials], bool],
    ) -> tuple[Credentials, int]:
        """Row locks: the row's transaction stays open, locked, during the grant."""
        db = _ThreadedConnection(self.app.engine)
        try:

            def read(conn: sa.Connection) -> tuple[Credentials, int]:
                conn.begin()  # stays open (row locked) until write() or close()
                return self._read(conn, spec.id, lock=True)

            stored, version = await db.run(read)
            if dict(stored) != dict(spec.credentials) and usable(stored):
                return stored, version  # another run refreshed already

            fresh = dict(await refresh(stored))

            def write(conn: sa.Connection) -> tuple[Credentials, int]:
                try:
                    result = self._write(conn, spec.id, stored, fresh, version)
                    conn.commit()
                    return result
                except BaseException:
                    conn.rollback()
                    raise

            try:
                return await db.run(write)
            except sa.exc.DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
        finally:
            await db.close()
        return await self._write_again(spec.id, stored, fresh, version)

    async def _refresh_file_locked(
        self,
        spec: ConnectionSpec,
        refresh: Callable[[Credentials], Awaitable[Credentials]],
        usable: Callable[[Credentials], bool],
    ) -> tuple[Credentials, int]:
        """SQLite: the connection's lock file is held from before the read until the
        write has committed, so another process reads the rotated tokens, not the spent
        ones."""
        if self.locks is None:  # an in-memory database: no other process sees it
            return await self._refresh_unlocked(spec, refresh, usable, [])
        try:
            held = await self.locks.acquire(spec.id)
        except LockBusy as busy:
            raise FINDINGS[TOKEN_REFRESH_BUSY].error(
                TOKEN_REFRESH_BUSY,
                f"another check has been refreshing this connection's token for over "
                f"{busy.timeout:g} s (RELINK_REFRESH_LOCK_TIMEOUT); not refreshed again",
            ) from None
        steps: list[asyncio.Future[Any]] = []
        try:
            return await self._refresh_unlocked(spec, refresh, usable, steps)
        finally:
            await held.release(after=steps)

    async def _refresh_unlocked(
        self,
        spec: ConnectionSpec,
        refresh: Callable[[Credentials], Awaitable[Credentials]],
        usable: Callable[[Credentials], bool],
        steps: list[asyncio.Future[Any]],
    ) -> tuple[Credentials, int]:
        """Read and write in short transactions of their own, no connection held during
        the grant; the write's version check protects it. `steps` collects the started
        steps (the lock is released after the last one)."""
        stored, version = await self._step(
            lambda conn: self._read(conn, spec.id, lock=False), steps
        )
        if dict(stored) != dict(spec.credentials) and usable(stored):
            return stored, version  # another run refreshed already

        fresh = dict(await refresh(stored))
        try:
            return await self._step(
                lambda conn: self._write(conn, spec.id, stored, fresh, version), steps
            )
        except sa.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        return await self._write_again(spec.id, stored, fresh, version, steps)

    async def _write_again(
        self,
        connection_id: int,
        base: Mapping[str, str],
        fresh: Mapping[str, str],
        version: int,
        steps: list[asyncio.Future[Any]] | None = None,
    ) -> tuple[Credentials, int]:
        """The database dropped our session (a restart, a failover) after the provider had
        rotated the refresh token: `fresh` holds the only copy of the new one, so it is
        written through a new session, under the same version check."""
        log.warning(
            "connection %s: database session lost; storing the rotated tokens again", connection_id
        )
        return await self._step(
            lambda conn: self._write(conn, connection_id, base, fresh, version), steps
        )

    async def _step(
        self, step: Callable[[sa.Connection], T], started: list[asyncio.Future[Any]] | None = None
    ) -> T:
        """`step` in a transaction of its own, in a worker thread that checks a pooled
        connection out and gives it back before it ends: a thread never waits for a
        connection that only a step queued behind it would return. Shielded like
        `_ThreadedConnection.run`: a cancelled caller does not stop a started commit.
        The step's future is appended to `started`."""

        def work() -> T:
            with self.app.engine.begin() as conn:
                return step(conn)

        task = asyncio.ensure_future(asyncio.to_thread(work))
        if started is not None:
            started.append(task)
        return await asyncio.shield(task)

    # --- blocking steps (worker threads) ---------------------------------------------

    def _read(self, conn: sa.Connection, connection_id: int, *, lock: bool) -> tuple[dict, int]:
        query = sa.select(Connection.credentials, Connection.version).where(
            Connection.id == connection_id
        )
        if lock:
            query = query.with_for_update()
        row = conn.execute(query).one_or_none()
        if row is None:
            raise ConnectionGone(connection_id)
        return self.app.vault.decrypt(row.credentials, connection=str(connection_id)), row.version

    def _write(
        self,
        conn: sa.Connection,
        connection_id: int,
        base: Mapping[str, str],
        fresh: Mapping[str, str],
        version: int,
    ) -> tuple[Credentials, int]:
        ciphertext = self.app.vault.encrypt(fresh)
        now = utcnow()
        expiry = _expiry_after_refresh(conn, connection_id, base, fresh, now)
        for _ in range(WRITE_ATTEMPTS):
            updated = conn.execute(
                sa.update(Connection)
                .where(Connection.id == connection_id, Connection.version == version)
                .values(
                    credentials=ciphertext,
                    version=version + 1,
                    updated_at=now,
                    credentials_expire_at=expiry.at,
                    credentials_expiry_kind=expiry.kind and str(expiry.kind),
                )
            )
            if updated.rowcount == 1:
                log.debug("connection %s: rotated OAuth tokens stored", connection_id)
                return dict(fresh), version + 1
            # The version moved under us (no row lock: SQLite). Look at what changed.
            current, version = self._read(conn, connection_id, lock=False)
            if current != dict(base):
                log.info(
                    "connection %s: credentials changed while refreshing; keeping the stored ones",
                    connection_id,
                )
                return current, version
        raise RuntimeError(
            f"connection {connection_id}: could not store refreshed credentials "
            f"({WRITE_ATTEMPTS} concurrent changes)"
        )


def _expiry_after_refresh(
    conn: sa.Connection,
    connection_id: int,
    base: Mapping[str, str],
    fresh: Mapping[str, str],
    now: datetime,
) -> Expiry:
    """When the refreshed credentials expire (relink.domain.expiry): an idle token's
    window starts again now; a hard one keeps its end unless the provider granted a new
    refresh token or said another end. The refresh happened now (the provider's clock),
    whatever time the run that asked for it stands for."""
    row = conn.execute(
        sa.select(
            Connection.type,
            Connection.settings,
            Connection.credentials_expire_at,
            Connection.credentials_expiry_kind,
        ).where(Connection.id == connection_id)
    ).one_or_none()
    if row is None:
        return UNKNOWN
    try:
        connector = connectors.get(row.type)
    except connectors.UnknownConnector:
        return UNKNOWN
    kind = row.credentials_expiry_kind
    previous = Expiry(row.credentials_expire_at, ExpiryKind(kind) if kind else None)
    return connector.credentials_expiry(
        row.settings or {},
        fresh,
        now=now,
        new_refresh_token=fresh.get("refresh_token") != base.get("refresh_token"),
        previous=previous,
    )
