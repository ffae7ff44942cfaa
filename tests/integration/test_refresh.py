"""Dataset refresh against the real loopback PostgreSQL: rows into the warehouse,
replaced atomically; direct-query datasets keep only their shape; one failing dataset
never stops the others."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from relink import db
from relink import refresh as refresh_module
from relink.models import AuditEvent, Dataset
from relink.refresh import RefreshPolicy, refresh_many, replace_table, safe_column_names
from tests.support.reconnect import (
    T0,
    add_people,
    add_pg_connection,
    pg_settings,
    warehouse_rows,
    warehouse_tables,
)

pytestmark = pytest.mark.both_backends  # a refresh locks its dataset's row; stored values' types

T1 = T0 + timedelta(hours=1)
QUICK = RefreshPolicy(attempts=3, backoff=0.01, timeout=5.0)
THREE_FRUITS = "SELECT * FROM (VALUES (1, 'apple'), (2, 'pear'), (3, 'fig')) AS t(id, name)"


def refresh(app, ids, policy=QUICK):
    return asyncio.run(refresh_many(app, ids, policy=policy, clock=lambda: T1))


def dataset(app, dataset_id: int) -> Dataset:
    with app.sessions() as session:
        return session.get(Dataset, dataset_id)


@pytest.fixture
def people(relink_app):
    add_people(relink_app)


def test_one_failing_dataset_does_not_stop_the_others(
    relink_app, people, postgres_url, closed_port
):
    """Superuser `postgres` (trusted on loopback) reads; one query is broken, one
    connection's server is down (asked 3 times), the others are refreshed."""
    good = add_pg_connection(
        relink_app,
        settings=pg_settings(postgres_url, "postgres"),
        password="trusted",
        queries=[
            ("Fruits", THREE_FRUITS),
            ("Broken", "SELECT * FROM relink_no_such_table"),
            ("Answer", "SELECT 42 AS answer"),
        ],
        metric=False,
    )
    down = add_pg_connection(
        relink_app,
        name="Down",
        settings=pg_settings(postgres_url, "postgres", port=str(closed_port)),
        password="trusted",
        queries=[("Nothing", "SELECT 1")],
        metric=False,
    )

    summary = refresh(relink_app, good.dataset_ids + down.dataset_ids)

    by_name = {r.dataset: r for r in summary.results}
    assert {n: r.status for n, r in by_name.items()} == {
        "Fruits": "ok",
        "Broken": "error",
        "Answer": "ok",
        "Nothing": "error",
    }
    assert by_name["Broken"].attempts == 1  # a broken query is not an outage: not retried
    assert "relink_no_such_table" in (by_name["Broken"].error or "")
    assert by_name["Nothing"].attempts == 3 and by_name["Nothing"].error_code == (
        "connection_refused"
    )
    fruits, broken, answer = (dataset(relink_app, i) for i in good.dataset_ids)
    assert (fruits.status, fruits.row_count, fruits.columns) == ("ok", 3, ["id", "name"])
    assert fruits.last_refreshed_at == T1
    assert (answer.status, answer.row_count) == ("ok", 1)
    assert broken.status == "error" and broken.last_error and broken.last_refreshed_at is None
    assert warehouse_rows(relink_app, f"ds_{fruits.id}") == [(1, "apple"), (2, "pear"), (3, "fig")]
    assert summary.as_dict()["ok"] == 2 and summary.as_dict()["error"] == 2
    with relink_app.sessions() as session:
        actions = sorted(
            session.scalars(
                sa.select(AuditEvent.action).where(AuditEvent.action.like("dataset.refresh%"))
            )
        )
    assert actions == ["dataset.refresh_failed"] * 2 + ["dataset.refreshed"] * 2


def test_the_warehouse_table_is_replaced_atomically_and_survives_failed_refreshes(
    relink_app, people, postgres_url, monkeypatch
):
    world = add_pg_connection(
        relink_app,
        settings=pg_settings(postgres_url, "postgres"),
        password="trusted",
        queries=[("Fruits", THREE_FRUITS)],
        metric=False,
    )
    (ds_id,) = world.dataset_ids
    table = f"ds_{ds_id}"
    refresh(relink_app, [ds_id])
    first = warehouse_rows(relink_app, table)
    assert len(first) == 3

    # the source fails: the old table stays as it was
    with relink_app.transaction() as session:
        session.get(Dataset, ds_id).query = "SELECT * FROM relink_no_such_table"
    assert refresh(relink_app, [ds_id]).results[0].status == "error"
    assert warehouse_rows(relink_app, table) == first

    # the warehouse fails at the swap: the old table stays, the staging table is gone
    with relink_app.transaction() as session:
        session.get(Dataset, ds_id).query = "SELECT 7 AS seven"

    def broken_swap(engine, staging, live):
        raise sa.exc.OperationalError("ALTER TABLE", {}, Exception("disk full"))

    monkeypatch.setattr(refresh_module, "_swap", broken_swap)
    failed = refresh(relink_app, [ds_id]).results[0]
    assert (failed.status, failed.error_code) == ("error", "warehouse")
    assert "disk full" in (failed.error or "")
    assert warehouse_rows(relink_app, table) == first
    assert warehouse_tables(relink_app) == {table}
    stale = dataset(relink_app, ds_id)
    assert (stale.status, stale.row_count, stale.columns) == ("error", 3, ["id", "name"])
    monkeypatch.undo()

    # a new shape replaces the old one completely
    assert refresh(relink_app, [ds_id]).results[0].status == "ok"
    assert warehouse_rows(relink_app, table) == [(7,)]
    assert warehouse_tables(relink_app) == {table}
    assert dataset(relink_app, ds_id).columns == ["seven"]


def test_direct_query_keeps_only_the_shape(relink_app, people, postgres_url):
    world = add_pg_connection(
        relink_app,
        settings=pg_settings(postgres_url, "postgres"),
        password="trusted",
        queries=[("Fruits", THREE_FRUITS)],
        mode="direct",
        metric=False,
    )
    (ds_id,) = world.dataset_ids
    (result,) = refresh(relink_app, [ds_id]).results
    assert (result.status, result.row_count, result.table) == ("ok", 3, None)
    assert f"ds_{ds_id}" not in warehouse_tables(relink_app)
    kept = dataset(relink_app, ds_id)
    assert (kept.row_count, kept.columns, kept.last_refreshed_at) == (3, ["id", "name"], T1)


def test_datasets_of_a_broken_connection_are_skipped_without_asking_the_source(
    relink_app, people, postgres_url
):
    world = add_pg_connection(
        relink_app,
        settings=pg_settings(postgres_url, "postgres"),
        password="trusted",
        queries=[("Fruits", THREE_FRUITS)],
        metric=False,
    )
    with relink_app.transaction() as session:
        ds = session.get(Dataset, world.dataset_ids[0])
        ds.connection.status = "disconnected"
        ds.connection.invalid_since = T0
    (result,) = refresh(relink_app, world.dataset_ids).results
    assert result.status == "skipped" and "reconnect it first" in (result.error or "")
    assert dataset(relink_app, world.dataset_ids[0]).status == "pending"


# --- the warehouse writer on its own, on SQLite and on PostgreSQL ---------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse(request, tmp_path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'warehouse.db'}")
        yield engine
        engine.dispose()
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"relink_wh_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def test_odd_column_names_are_quoted_and_values_stored_as_text_or_numbers(warehouse):
    columns = ["id", 'say "hi"', "x; DROP TABLE ds_1; --", "", "ID", "prix €", "n\x00l"]
    when = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    rows = [
        (1, "a", {"k": [1, 2]}, None, True, Decimal("1.50"), when),
        (2, None, "plain", b"\x01\xff", False, 2, None),
    ]
    names = replace_table(warehouse, 5, columns, rows)
    assert names == ["id", 'say "hi"', "x; DROP TABLE ds_1; --", "column_4", "ID_2", "prix €", "nl"]
    assert names == safe_column_names(columns)
    table = sa.Table("ds_5", sa.MetaData(), autoload_with=warehouse)
    assert [c.name for c in table.columns] == names
    with warehouse.connect() as conn:
        stored = [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))]
    assert stored == [
        (1, "a", '{"k": [1, 2]}', None, 1, 1.5, "2026-03-02T09:30:00+00:00"),
        (2, None, "plain", "01ff", 0, 2.0, None),
    ]
    # replaced again: one table, the new rows only
    replace_table(warehouse, 5, ["only"], [("x",)])
    assert set(sa.inspect(warehouse).get_table_names()) == {"ds_5"}
    with warehouse.connect() as conn:
        assert conn.exec_driver_sql('SELECT "only" FROM ds_5').all() == [("x",)]


def test_a_reader_during_the_sqlite_swap_sees_the_old_rows(tmp_path):
    """The default warehouse is SQLite, whose driver runs DDL outside any transaction
    unless one is opened by hand: the old table was dropped (and committed) before the
    new one took its name, so a reader in between found no table at all."""
    path = tmp_path / "warehouse.db"
    warehouse = db.make_engine(f"sqlite:///{path}", poolclass=sa.pool.NullPool)
    replace_table(warehouse, 5, ["fruit"], [("apple",), ("pear",)])
    seen: list[object] = []

    def read_during_rename(conn, cursor, statement, *args):
        if statement.startswith("ALTER TABLE"):
            other = sqlite3.connect(path)
            try:
                seen.append(other.execute("SELECT fruit FROM ds_5 ORDER BY fruit").fetchall())
            except sqlite3.OperationalError as exc:
                seen.append(str(exc))
            finally:
                other.close()

    sa.event.listen(warehouse, "before_cursor_execute", read_during_rename)
    try:
        replace_table(warehouse, 5, ["fruit"], [("fig",)])
        sa.event.remove(warehouse, "before_cursor_execute", read_during_rename)
        # a swap whose rename fails takes its DROP back with it
        with pytest.raises(sa.exc.OperationalError, match="no such table"):
            refresh_module._swap(warehouse, "ds_5__new_gone", "ds_5")
    finally:
        warehouse.dispose()
    assert seen == [[("apple",), ("pear",)]]
    with sqlite3.connect(path) as after:
        assert after.execute("SELECT fruit FROM ds_5").fetchall() == [("fig",)]
