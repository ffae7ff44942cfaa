"""Warehouse table and column names are derived safely (pure, no database)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relink.warehouse import MAX_COLUMN_NAME, safe_column_names, table_name


@given(st.lists(st.one_of(st.text(max_size=80), st.integers(), st.none()), max_size=30))
def test_column_names_are_unique_printable_and_short(columns):
    names = safe_column_names(columns)
    assert len(names) == len(columns)
    assert len({n.lower() for n in names}) == len(names)
    for name in names:
        assert name and name == name.strip()
        assert len(name) <= MAX_COLUMN_NAME
        assert all(ch.isprintable() for ch in name)


def test_duplicates_and_blanks_get_names_that_say_where_they_came_from():
    assert safe_column_names(["?column?", "?column?", "", "Id", "id"]) == [
        "?column?",
        "?column?_2",
        "column_3",
        "Id",
        "id_2",
    ]


@pytest.mark.parametrize("bad", [0, -1, True, "1", "1; DROP TABLE x", 1.0])
def test_a_table_name_comes_only_from_a_positive_integer_id(bad):
    with pytest.raises(ValueError):
        table_name(bad)


def test_table_name():
    assert table_name(42) == "ds_42"
