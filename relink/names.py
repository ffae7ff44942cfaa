"""The names people give things (accounts, users, connections, datasets, metrics).

They are shown in tables, page titles and emails, so each is one line without
control characters, and no longer than its column (which PostgreSQL and MariaDB
would refuse with a database error, and SQLite would store as it is).
"""

from __future__ import annotations

import unicodedata

import sqlalchemy as sa

from relink.errors import InvalidInput


def limit_of(column: sa.orm.InstrumentedAttribute[str]) -> int:
    """The length of a String column, e.g. ``limit_of(Connection.name)``."""
    length = column.expression.type.length
    assert length is not None, f"{column} has no length"
    return length


def one_line(raw: str, what: str, limit: int) -> str:
    """`raw` without surrounding blanks; InvalidInput unless it is one line of at most
    `limit` characters without control characters. Empty stays empty: whether a name
    is required is the caller's rule."""
    name = raw.strip()
    if len(name) > limit or any(unicodedata.category(c) == "Cc" for c in name):
        shown = name[:40] + ("…" if len(name) > 40 else "")
        raise InvalidInput(
            f"{what} is one line of at most {limit} characters, "
            f"without control characters; got {shown!r}"
        )
    return name
