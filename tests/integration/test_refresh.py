"""Dataset refresh against the real loopback PostgreSQL: rows into the warehouse,
replaced atomically; direct-query datasets keep only their shape; one failing dataset
never stops the others."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa

from relink import warehouse as warehouse_module
from relink.models import AuditEvent, Dataset
from relink.refreshing.results import RefreshPolicy
from relink.refreshing.run import refresh_many
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

    monkeypatch.setattr(warehouse_module, "_swap", broken_swap)
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
