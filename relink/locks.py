"""Per-connection locks across processes for a SQLite app database: lock files.

SQLite has no row locks, so the processes sharing one database file (the sweep under
`relink run`, a `relink check`, the web page's re-check) serialize the spending of a
connection's refresh token with `fcntl.flock` on a file of that connection:
``<database file>-locks/<connection id>.lock``, in a folder made on first use. The
kernel drops the lock when its holder closes the file or dies, so a crashed process
never leaves a connection locked. Lock files are never removed (removing one while
another process waits on it would let two holders in); they are empty.

`ConnectionLocks.acquire` waits up to its timeout (RELINK_REFRESH_LOCK_TIMEOUT), asking
the kernel again every few milliseconds without blocking the event loop, and raises
`LockBusy` past it. The clock and the wait are parameters, so a test decides the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

import sqlalchemy as sa

DEFAULT_TIMEOUT = 60.0
FIRST_POLL = 0.002  # seconds before asking again; doubled up to MAX_POLL
MAX_POLL = 0.025


class LockBusy(TimeoutError):
    """Another holder kept the connection's lock for longer than the timeout."""

    def __init__(self, connection_id: int, timeout: float) -> None:
        super().__init__(f"connection {connection_id}: lock still held after {timeout:g} s")
        self.connection_id = connection_id
        self.timeout = timeout


def lock_dir(url: sa.URL | str) -> Path | None:
    """``<database file>-locks`` for a SQLite file database; None for an in-memory one
    (only this process sees it) and for servers with row locks (PostgreSQL, MySQL)."""
    url = sa.make_url(url)
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        return None
    if database.startswith("file:"):  # a URI filename (?uri=true)
        database = database.removeprefix("file:").split("?", 1)[0]
    return Path(f"{database}-locks")


class HeldLock:
    """One held lock; `release` after the steps still running in threads have ended."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    async def release(self, after: Iterable[asyncio.Future[object]] = ()) -> None:
        """Close the lock file (which drops the lock) once every step in `after` has
        finished, even when the caller is cancelled: a write still committing in its
        thread keeps the connection locked until it is done."""
        pending = [f for f in after if not f.done()]

        async def closer() -> None:
            if pending:
                await asyncio.wait(pending)
            self.release_now()

        await asyncio.shield(asyncio.ensure_future(closer()))

    def release_now(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ConnectionLocks:
    """The lock files of one SQLite database (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.directory = directory
        self.timeout = timeout
        self._clock = clock
        self._sleep = sleep

    def path(self, connection_id: int) -> Path:
        return self.directory / f"{int(connection_id)}.lock"

    def _open(self, connection_id: int) -> int:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.open(self.path(connection_id), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    async def acquire(self, connection_id: int) -> HeldLock:
        """Take the connection's lock, waiting up to `timeout`; `LockBusy` past it."""
        fd = self._open(connection_id)
        try:
            deadline = self._clock() + self.timeout
            poll = FIRST_POLL
            while not _try_lock(fd):
                left = deadline - self._clock()
                if left <= 0:
                    raise LockBusy(connection_id, self.timeout)
                await self._sleep(min(poll, left))
                poll = min(poll * 2, MAX_POLL)
        except BaseException:
            os.close(fd)
            raise
        return HeldLock(fd)

    @contextlib.asynccontextmanager
    async def hold(self, connection_id: int) -> AsyncIterator[HeldLock]:
        """``async with locks.hold(id):`` the lock for the block."""
        held = await self.acquire(connection_id)
        try:
            yield held
        finally:
            held.release_now()


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True
