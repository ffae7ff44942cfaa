"""SQLite files opened by several connections at once: the app database and the
default warehouse (`warehouse.db`, created by the first refresh that needs it)."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from relink import db


@pytest.fixture
def writer(tmp_path):
    """Another connection in the middle of its first write to a new file."""
    path = tmp_path / "warehouse.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    yield path, conn
    conn.close()


def test_a_new_file_being_written_elsewhere_is_switched_to_wal_once_the_writer_is_done(
    writer, monkeypatch
):
    """SQLite refuses the switch to WAL at once while another connection writes (it
    does not wait out busy_timeout): two refreshes opening a new warehouse together
    failed with "database is locked". The switch is tried again instead."""
    path, other = writer
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        other.execute("COMMIT")  # the other writer finishes while we wait

    monkeypatch.setattr(db, "_pause", pause)
    engine = db.make_engine(f"sqlite:///{path}", poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE ds_1 (x INTEGER)")
            conn.exec_driver_sql("INSERT INTO ds_1 VALUES (1)")
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    finally:
        engine.dispose()
    assert mode == "wal"
    assert len(pauses) == 1
    assert other.execute("SELECT x FROM ds_1").fetchall() == [(1,)]


def test_a_file_that_stays_locked_is_an_error_after_the_busy_timeout(writer, monkeypatch):
    """The switch is not tried forever: a writer that never finishes is the usual
    "database is locked" once the busy timeout has passed."""
    path, _ = writer
    monkeypatch.setattr(db, "BUSY_TIMEOUT", 0.0)
    monkeypatch.setattr(db, "_pause", lambda seconds: None)
    engine = db.make_engine(f"sqlite:///{path}", poolclass=NullPool)
    try:
        with pytest.raises(sa.exc.OperationalError, match="database is locked"):
            engine.connect()
    finally:
        engine.dispose()
