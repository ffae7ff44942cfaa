from datetime import UTC, datetime

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from relink import db
from relink.app import Relink
from relink.models import Base
from relink.notifications import due_query

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
