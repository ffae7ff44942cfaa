"""The warehouse: each warehouse-mode dataset's rows in its own table, `ds_<dataset id>`,
replaced atomically by `replace_table` (written to a staging table, swapped in by one
transaction, so a failed refresh leaves the old table intact and a reader never sees a
half-written one), with column names made safe and column types inferred from the rows."""

from __future__ import annotations

import contextlib
import json
import math
import secrets
from collections.abc import Sequence
from datetime import date, datetime
from datetime import time as dt_time
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

INSERT_CHUNK = 1000
MAX_COLUMN_NAME = 60  # PostgreSQL cuts identifiers at 63 bytes; leave room for a suffix


class WarehouseError(Exception):
    """The rows could not be written to the warehouse; the old table is intact."""


def table_name(dataset_id: int) -> str:
    """The warehouse table of a dataset: derived from its integer id only."""
    if not isinstance(dataset_id, int) or isinstance(dataset_id, bool) or dataset_id < 1:
        raise ValueError(f"not a dataset id: {dataset_id!r}")
    return f"ds_{dataset_id}"


def safe_column_names(columns: Sequence[Any]) -> list[str]:
    """Usable, unique column names: control characters removed, blanks named, long
    names cut, duplicates numbered (``?column?``, ``?column?_2``). Quoting is left to
    SQLAlchemy, so any remaining character is stored as it is."""
    names: list[str] = []
    taken: set[str] = set()
    for index, raw in enumerate(columns, start=1):
        name = "".join(ch for ch in str(raw) if ch.isprintable()).strip()[:MAX_COLUMN_NAME]
        name = name or f"column_{index}"
        candidate, n = name, 2
        while candidate.lower() in taken:
            suffix = f"_{n}"
            candidate = name[: MAX_COLUMN_NAME - len(suffix)] + suffix
            n += 1
        taken.add(candidate.lower())
        names.append(candidate)
    return names


_INT64 = 2**63 - 1


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "int"
    if isinstance(value, int):
        return "int" if -_INT64 <= value <= _INT64 else "text"
    if isinstance(value, float):
        return "float" if math.isfinite(value) else "text"
    if isinstance(value, Decimal):
        return "float" if value.is_finite() else "text"
    return "text"


def _column_kinds(rows: Sequence[Sequence[Any]], width: int) -> list[str]:
    kinds: list[str] = []
    for i in range(width):
        seen = {_kind(row[i]) for row in rows if i < len(row)} - {None}
        if seen == {"int"}:
            kinds.append("int")
        elif seen and seen <= {"int", "float"}:
            kinds.append("float")
        else:
            kinds.append("text")
    return kinds


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, datetime | date | dt_time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _convert(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    return _as_text(value)


_TYPES = {"int": sa.BigInteger, "float": sa.Double, "text": sa.Text}


def replace_table(
    engine: sa.Engine, dataset_id: int, columns: Sequence[Any], rows: Sequence[Sequence[Any]]
) -> list[str]:
    """Replace the dataset's table with `rows`, atomically; returns the column names.

    The rows go to a staging table first; one transaction then drops the old table and
    renames the staging one (MySQL: one RENAME TABLE). Any failure drops the staging
    table and leaves the old table as it was.
    """
    live = table_name(dataset_id)
    if not columns:
        raise WarehouseError("the query returned no columns; nothing to store")
    names = safe_column_names(columns)
    kinds = _column_kinds(rows, len(names))
    staging = f"{live}__new_{secrets.token_hex(4)}"
    table = sa.Table(
        staging,
        sa.MetaData(),
        *(
            sa.Column(name, _TYPES[kind](), key=f"c{i}", nullable=True)
            for i, (name, kind) in enumerate(zip(names, kinds, strict=True))
        ),
    )
    keys = [f"c{i}" for i in range(len(names))]
    try:
        with engine.begin() as conn:
            table.create(conn)
            for start in range(0, len(rows), INSERT_CHUNK):
                chunk = rows[start : start + INSERT_CHUNK]
                conn.execute(
                    table.insert(),
                    [
                        {
                            k: _convert(row[i] if i < len(row) else None, kinds[i])
                            for i, k in enumerate(keys)
                        }
                        for row in chunk
                    ],
                )
        _swap(engine, staging, live)
    except sa.exc.SQLAlchemyError as exc:
        _drop_quietly(engine, staging)
        raise WarehouseError(_warehouse_message(exc)) from None
    except BaseException:
        _drop_quietly(engine, staging)
        raise
    return names


def _swap(engine: sa.Engine, staging: str, live: str) -> None:
    quote = engine.dialect.identifier_preparer.quote
    if engine.dialect.name in {"mysql", "mariadb"}:
        # MySQL commits DDL implicitly; RENAME TABLE of several tables is atomic instead.
        old = f"{live}__old_{secrets.token_hex(4)}"
        with engine.begin() as conn:
            if sa.inspect(conn).has_table(live):
                conn.exec_driver_sql(
                    f"RENAME TABLE {quote(live)} TO {quote(old)}, {quote(staging)} TO {quote(live)}"
                )
                conn.exec_driver_sql(f"DROP TABLE {quote(old)}")
            else:
                conn.exec_driver_sql(f"RENAME TABLE {quote(staging)} TO {quote(live)}")
        return
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            # The sqlite3 driver opens a transaction only before DML: without this
            # BEGIN the DROP would be committed on its own, before the RENAME.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(live)}")
        conn.exec_driver_sql(f"ALTER TABLE {quote(staging)} RENAME TO {quote(live)}")


def _drop_quietly(engine: sa.Engine, table: str) -> None:
    quote = engine.dialect.identifier_preparer.quote
    with contextlib.suppress(sa.exc.SQLAlchemyError), engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(table)}")


def _warehouse_message(exc: sa.exc.SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).splitlines()[0] if str(orig) else ""
    return f"the warehouse refused the rows ({type(orig).__name__}: {first[:200]})"
