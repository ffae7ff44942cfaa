import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from relink import db
from relink.app import Relink
from relink.emailing.due import due_query
from relink.models import Base

pytestmark = pytest.mark.both_backends  # the DDL of every migration differs by backend

TABLES = {
    "accounts",
    "users",
    "connections",
    "connection_shares",
    "datasets",
    "metrics",
    "metric_datasets",
    "disconnections",
    "notifications",
    "audit_events",
}


def test_upgrade_from_empty_creates_every_table(settings):
    app = Relink(settings)
    db.upgrade(app.engine)
    assert set(sa.inspect(app.engine).get_table_names()) >= TABLES
    assert db.current_revision(app.engine) == db.head_revision()
    with app.engine.connect() as conn:  # what Alembic itself reads, to the letter
        assert MigrationContext.configure(conn).get_current_revision() == db.head_revision()


def test_the_head_read_from_the_files_is_alembics():
    """`relink` checks the schema without importing Alembic; its head must be Alembic's."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    assert db.head_revision() == ScriptDirectory.from_config(config).get_current_head()


def test_an_empty_database_has_no_revision(settings):
    assert db.current_revision(Relink(settings).engine) is None


def test_migrations_match_the_models(relink_app):
    with relink_app.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_downgrade_to_base_then_upgrade_again(relink_app):
    db.downgrade(relink_app.engine, "base")
    assert not TABLES & set(sa.inspect(relink_app.engine).get_table_names())
    db.upgrade(relink_app.engine)
    assert set(sa.inspect(relink_app.engine).get_table_names()) >= TABLES


def test_open_disconnections_by_start_time_use_a_partial_index(relink_app):
    indexes = {i["name"]: i for i in sa.inspect(relink_app.engine).get_indexes("disconnections")}
    assert indexes["ix_disconnections_open_started"]["column_names"] == ["started_at"]
    assert indexes["uq_disconnections_one_open"]["unique"]


def test_the_due_email_query_is_answered_by_its_own_partial_index(relink_app):
    """The daily run must not read the history of closed or emailed episodes: the due
    query goes through ix_disconnections_due, on PostgreSQL from the index alone."""
    query = due_query(datetime(2026, 3, 2, 14, tzinfo=UTC))
    engine = relink_app.engine
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")  # an empty table: force the choice
            plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {sql}"))
            assert "Index Only Scan using ix_disconnections_due" in plan, plan
        else:
            plan = "\n".join(r[3] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
            assert "USING INDEX ix_disconnections_due" in plan, plan


def _one_of_each(engine: sa.Engine) -> None:
    """A connection and the rows that refer to it, as the schema at 0006 holds them."""
    with engine.begin() as conn:
        for sql in (
            "INSERT INTO accounts (id, name, created_at) VALUES (1, 'Acme', '2026-01-01')",
            "INSERT INTO users (id, account_id, email, name, role, active, created_at)"
            " VALUES (1, 1, 'a@acme.test', 'A', 'admin', true, '2026-01-01')",
            "INSERT INTO connections (id, account_id, type, name, mode, settings, credentials,"
            " owner_id, status, version, created_at, updated_at) VALUES (1, 1, 'postgres',"
            " 'Sales', 'direct', '{}', 'x', 1, 'connected', 1, '2026-01-01', '2026-01-01')",
            "INSERT INTO datasets (id, connection_id, name, query, status)"
            " VALUES (1, 1, 'Orders', 'SELECT 1', 'ok')",
            "INSERT INTO disconnections (id, connection_id, started_at, reason_code)"
            " VALUES (1, 1, '2026-01-01', '28P01')",
        ):
            conn.exec_driver_sql(sql)


def _rows(engine: sa.Engine) -> tuple[str, int, int]:
    with engine.connect() as conn:
        return (
            conn.exec_driver_sql("SELECT status FROM connections").scalar_one(),
            conn.exec_driver_sql("SELECT count(*) FROM datasets").scalar_one(),
            conn.exec_driver_sql("SELECT count(*) FROM disconnections").scalar_one(),
        )


def _set_status(engine: sa.Engine, status: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE connections SET status = '{status}'")


def assert_misconfigured_migrates_both_ways(engine: sa.Engine) -> None:
    db.upgrade(engine, "0006")
    _one_of_each(engine)
    db.upgrade(engine)
    _set_status(engine, "misconfigured")
    assert _rows(engine) == ("misconfigured", 1, 1)  # the rows that refer to it are kept
    with pytest.raises(sa.exc.DBAPIError):
        _set_status(engine, "bogus")
    db.downgrade(engine, "0006")
    assert _rows(engine) == ("unreachable", 1, 1)
    with pytest.raises(sa.exc.DBAPIError):
        _set_status(engine, "misconfigured")
    db.upgrade(engine)


def test_the_misconfigured_status_migrates_both_ways_and_keeps_every_row(settings):
    """0007 widens the status CHECK of connections. On SQLite that rebuilds the table,
    whose DROP would delete every dataset and disconnection with foreign keys on."""
    app = Relink(settings)
    try:
        assert_misconfigured_migrates_both_ways(app.engine)
    finally:
        app.close()


def test_the_misconfigured_status_migrates_both_ways_on_mariadb(mariadb_url):
    name = f"relink_migrations_{uuid.uuid4().hex[:8]}"
    server = sa.create_engine(mariadb_url)
    with server.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = sa.make_url(mariadb_url).set(database=name)
    engine = db.make_engine(url.render_as_string(hide_password=False))
    try:
        assert_misconfigured_migrates_both_ways(engine)
    finally:
        engine.dispose()
        with server.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name}")
        server.dispose()


def test_0008_puts_a_broken_connection_an_outage_moved_back_to_disconnected(relink_app):
    """A row that an outage moved off `disconnected` while its disconnection stayed open is
    disconnected again, with the code that broke it; the outage is its last outcome. One
    without an open disconnection keeps its status."""
    engine = relink_app.engine
    db.downgrade(engine, "0007")
    _one_of_each(engine)  # connection 1 with an open disconnection (28P01)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE connections SET status = 'unreachable', last_checked_at = '2026-01-03',"
            " last_error_code = 'timeout', last_error_message = 'timed out'"
        )
        conn.exec_driver_sql(
            "INSERT INTO connections (id, account_id, type, name, mode, settings, credentials,"
            " owner_id, status, last_checked_at, last_error_code, version, created_at,"
            " updated_at) VALUES (2, 1, 'postgres', 'Ops', 'direct', '{}', 'x', 1,"
            " 'unreachable', '2026-01-03', 'timeout', 1, '2026-01-01', '2026-01-01')"
        )
    db.upgrade(engine)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT name, status, last_error_code, last_error_message, last_outcome,"
            " last_outcome_code FROM connections ORDER BY id"
        ).all()
    assert [tuple(r) for r in rows] == [
        ("Sales", "disconnected", "28P01", None, "unreachable", "timeout"),
        ("Ops", "unreachable", "timeout", None, "unreachable", "timeout"),
    ]
