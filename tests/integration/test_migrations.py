import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from relink import db
from relink.app import Relink
from relink.models import Base

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
