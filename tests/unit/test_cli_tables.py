"""Tables on an 80-column terminal: times to the minute, no word broken in the middle,
and cards when the columns cannot fit; a long value is cut with "…" and a last line says
so; `--wide` shows every value in full."""

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from rich.console import Console

from relink.cli import tables
from relink.cli.tables import cell, render

COLUMNS = ["id", "name", "type", "mode", "status", "invalid since", "created by", "last checked"]
ROWS = [
    [1, "Warehouse (PostgreSQL)", "postgres", "warehouse", "connected", None, "Ada Admin", None],
    [
        4,
        "Support (Salesforce sandbox)",
        "salesforce",
        "direct",
        "disconnected",
        "2026-12-04T03:36:37.624293+00:00",
        "Max Member",
        datetime(2026, 12, 4, 10, 36, 59, tzinfo=timezone(timedelta(hours=7))),
    ],
]


def shown(width: int, columns=COLUMNS, rows=ROWS) -> str:
    out = io.StringIO()
    render(Console(file=out, width=width), "Connections", columns, rows)
    return out.getvalue()


def words_of(rows) -> set[str]:
    return {word for row in rows for value in row for word in cell(value).split()}


def test_times_are_shown_to_the_minute_in_utc():
    assert cell("2026-12-04T03:36:37.624293+00:00") == "2026-12-04 03:36 UTC"
    assert cell(datetime(2026, 12, 4, 10, 36, tzinfo=timezone(timedelta(hours=7)))) == (
        "2026-12-04 03:36 UTC"
    )
    assert cell(datetime(2026, 12, 4, 3, 36, 5, tzinfo=UTC)) == "2026-12-04 03:36 UTC"
    assert cell(None) == "" and cell("not 2026-12-04") == "not 2026-12-04"


def test_at_80_columns_no_word_is_broken_and_every_field_is_there():
    text = shown(80)
    assert max(len(line) for line in text.splitlines()) <= 80
    for word in words_of(ROWS):
        assert word in text, word
    assert "invalid since: 2026-12-04 03:36 UTC" in text  # a card: name and value together
    assert "37.624293" not in text


def test_a_wide_terminal_gets_the_table():
    text = shown(200)
    header = next(line for line in text.splitlines() if "invalid since" in line)
    assert "created by" in header and "last checked" in header
    assert "│ Support (Salesforce sandbox) │" in text


def test_a_narrow_table_that_fits_stays_a_table_with_whole_words():
    rows = [["mysql", "MySQL / MariaDB", "host, port, database, username"]]
    text = shown(60, ["type", "name", "required fields"], rows)
    assert "┃ type" in text
    for word in words_of(rows):
        assert word in text, word


LONG = "details: " + ", ".join(f"key{i}=value{i}" for i in range(60))


@pytest.fixture
def wide() -> Iterator[None]:
    tables.set_wide(True)
    yield
    tables.set_wide(False)


def test_at_80_columns_a_long_value_is_cut_and_the_table_says_wide_shows_it():
    text = shown(80, [*COLUMNS, "details"], [[*ROWS[1], LONG]])
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "key0=value0" in text and "key59=value59" not in text and "…" in text
    assert text.rstrip().endswith(tables.FOLDED)
    assert tables.FOLDED not in shown(80)  # nothing cut, nothing said


def test_wide_shows_every_value_in_full_as_one_table_whatever_the_terminal(wide):
    text = shown(80, [*COLUMNS, "details"], [[*ROWS[1], LONG]])
    row = next(line for line in text.splitlines() if "Support (Salesforce sandbox)" in line)
    assert LONG in row and len(row) > 80  # one line: for `less -S` or a wide window
    assert tables.FOLDED not in text
