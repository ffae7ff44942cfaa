"""The test session leaves the host's servers as it found them.

At the start of a session, `HostGuard` reads the files it watches: the loopback
PostgreSQL server's hba file (`SHOW hba_file`), read from disk or, where the tester may
not read it, through the server. At the end it reads them again and fails the session,
naming the file, when one differs. Under pytest-xdist only the controller watches, so
the check spans every worker's tests.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Watched:
    """A file and a way to read its content (None when it cannot be read)."""

    path: str
    read: Callable[[], bytes | None]


def read_file(path: str) -> Callable[[], bytes | None]:
    def read() -> bytes | None:
        try:
            return Path(path).read_bytes()
        except OSError:
            return None

    return read


def postgres_hba(url: str) -> list[Watched]:
    """The server's hba file, or nothing when the server cannot be reached."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            path = conn.exec_driver_sql("SHOW hba_file").scalar_one()
    except sa.exc.SQLAlchemyError:
        return []
    finally:
        engine.dispose()

    def through_server() -> bytes | None:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                text = conn.execute(sa.text("SELECT pg_read_file(:p)"), {"p": path}).scalar_one()
            return text.encode()
        except sa.exc.SQLAlchemyError:
            return None
        finally:
            engine.dispose()

    on_disk = read_file(path)
    return [Watched(path, lambda: on_disk() or through_server())]


def digest(content: bytes | None) -> str:
    return "unreadable" if content is None else hashlib.md5(content).hexdigest()


class HostGuard:
    """A pytest plugin: snapshots the watched files at session start, compares at the end."""

    def __init__(self, watch: Callable[[], list[Watched]]) -> None:
        self.watch = watch
        self.before: dict[str, tuple[Watched, bytes | None]] = {}
        self.changed: list[str] = []

    def snapshot(self) -> None:
        self.before = {w.path: (w, w.read()) for w in self.watch()}

    def differences(self) -> list[str]:
        found = []
        for path, (watched, content) in self.before.items():
            now = watched.read()
            if content is not None and now != content:
                found.append(f"{path} (md5 {digest(content)} before, {digest(now)} after)")
        return found

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.snapshot()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.changed = self.differences()
        if self.changed:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.changed:
            terminalreporter.section("the session changed the host", red=True)
            for line in self.changed:
                terminalreporter.write_line(f"changed during the tests: {line}", red=True)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the controller watches
        return
    url = os.environ.get("RELINK_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    config.pluginmanager.register(HostGuard(lambda: postgres_hba(url)), "relink-host-guard")
