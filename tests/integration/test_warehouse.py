"""The warehouse writer on its own, on SQLite and on PostgreSQL: odd column names quoted,
values stored as text or numbers, a table replaced atomically (a reader during the
SQLite swap sees the old rows)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from relink import db
from relink import warehouse as warehouse_module
from relink.warehouse import replace_table, safe_column_names

pytestmark = pytest.mark.both_backends  # stored values' types


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
            warehouse_module._swap(warehouse, "ds_5__new_gone", "ds_5")
    finally:
        warehouse.dispose()
    assert seen == [[("apple",), ("pear",)]]
    with sqlite3.connect(path) as after:
        assert after.execute("SELECT fruit FROM ds_5").fetchall() == [("fig",)]
