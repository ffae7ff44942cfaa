"""Engines, sessions and migrations of the app database. Alembic is imported only to
migrate: checking that a database is current (every command does) reads the revision
graph from the migration files and `alembic_version` directly."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

from relink.errors import DatabaseNotMigrated

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT = 30.0  # seconds a SQLite connection waits for another one's lock
WAL_RETRY_PAUSE = 0.01
_pause = time.sleep  # a seam for the test of the retry


def make_engine(url: str, **kw: Any) -> sa.Engine:
    """An engine with the per-backend settings Relink relies on."""
    url_obj = sa.make_url(url)
    if url_obj.get_backend_name() == "sqlite":
        database = url_obj.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url_obj, connect_args={"timeout": BUSY_TIMEOUT}, **kw)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url_obj, pool_pre_ping=True, **kw)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()  # busy_timeout: the driver's `timeout` sets it
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        _use_wal(cursor)
    finally:
        cursor.close()


def _use_wal(cursor: Any) -> None:
    """Put the file in write-ahead-log mode (kept in the file: a no-op once it is).

    The switch needs the file to itself, and while another connection is writing to
    it (or switching it too) SQLite refuses at once, without waiting out
    busy_timeout. Two refreshes opening a new warehouse file together failed so; a
    refused switch is now tried again until it goes through or BUSY_TIMEOUT passes.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        _pause(WAL_RETRY_PAUSE)


def session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit at the end, roll everything back on any error."""
    with factory() as session, session.begin():
        yield session


def _alembic_config(connection: sa.Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    from alembic import command

    with _migrating(engine) as connection:
        command.upgrade(_alembic_config(connection), revision)


def downgrade(engine: sa.Engine, revision: str) -> None:
    from alembic import command

    with _migrating(engine) as connection:
        command.downgrade(_alembic_config(connection), revision)


@contextmanager
def _migrating(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection to migrate on, in one transaction.

    On SQLite, with foreign keys off meanwhile, as SQLite's own procedure for altering a
    table prescribes: a batch migration rebuilds a table (copy, DROP, rename), and with
    the keys on, the DROP would delete every row that refers to the table (ON DELETE
    CASCADE). The keys are checked before the commit and turned back on after it."""
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")  # ignored in a transaction
            still_on = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
            connection.commit()
            if still_on:
                raise RuntimeError("SQLite kept its foreign keys on; not migrating")
        try:
            with connection.begin():
                yield connection
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").first()
                    if broken is not None:
                        raise RuntimeError(f"a migration broke a foreign key: {tuple(broken)}")
        finally:
            if sqlite:
                connection.rollback()  # whatever the check above began
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


_REVISION = re.compile(r'^(down_revision|revision) = (?:"([^"]*)"|None)$', re.M)


def head_revision() -> str | None:
    """The newest migration: the revision no other one follows (one chain, no branches;
    tests/integration/test_migrations.py checks this agrees with Alembic's own graph)."""
    revisions, parents = set(), set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        found = dict((name, value or None) for name, value in _REVISION.findall(path.read_text()))
        if "revision" in found:
            revisions.add(found["revision"])
            parents.add(found.get("down_revision"))
    heads = sorted(revisions - parents)
    if len(heads) > 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads: {', '.join(heads)}")
    return heads[0] if heads else None


def current_revision(engine: sa.Engine) -> str | None:
    """The database's revision (`alembic_version`), None when it was never migrated."""
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return None
        return connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def ensure_current(engine: sa.Engine) -> None:
    """Refuse to work on a database that is not at the newest schema."""
    try:
        current = current_revision(engine)
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        raise DatabaseNotMigrated(
            f"cannot open the app database ({reason}); check RELINK_DATABASE_URL"
        ) from None
    head = head_revision()
    if current != head:
        state = "is empty" if current is None else f"is at {current}, code expects {head}"
        raise DatabaseNotMigrated(f"the app database {state}: run `relink db upgrade`")
