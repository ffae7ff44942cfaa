"""App databases at the newest schema without running Alembic's chain for every test.

`migrate(engine)` brings an empty app database to head the quick way. SQLite: the first
call in a process migrates a template file for real; every later one copies it into
place. PostgreSQL: the first call migrates for real and records the statements it sent;
every later one replays them into the fresh schema, in one transaction. Any other
backend is migrated by `relink.db.upgrade`. tests/integration/test_migrations.py runs
the real chain (from empty, up and down) on both backends.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from relink import db

_template: Path | None = None
_recorded: list[tuple[str, Any, bool]] | None = None


def migrate(engine: sa.Engine) -> None:
    backend = engine.dialect.name
    if backend == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        _copy_template(engine, Path(engine.url.database))
    elif backend == "postgresql":
        _replay(engine)
    else:
        db.upgrade(engine)


def _copy_template(engine: sa.Engine, target: Path) -> None:
    global _template
    if target.exists() and target.stat().st_size > 0:
        db.upgrade(engine)  # not empty: whatever it holds, the real upgrade decides
        return
    if _template is None:
        folder = Path(tempfile.mkdtemp(prefix="relink-template-"))
        atexit.register(shutil.rmtree, folder, True)
        template = folder / "relink.db"
        template_engine = db.make_engine(f"sqlite:///{template}")
        db.upgrade(template_engine)
        template_engine.dispose()  # the last connection closing folds the WAL into the file
        _template = template
    engine.dispose()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template, target)


def _replay(engine: sa.Engine) -> None:
    global _recorded
    if sa.inspect(engine).has_table("alembic_version"):
        db.upgrade(engine)  # migrated already (a second app on the same schema)
        return
    if _recorded is None:
        statements: list[tuple[str, Any, bool]] = []

        def record(conn, cursor, statement, parameters, context, executemany) -> None:
            if not statement.lstrip().upper().startswith(("SELECT", "SHOW")):
                statements.append((statement, parameters, executemany))

        sa.event.listen(engine, "before_cursor_execute", record)
        try:
            db.upgrade(engine)
        finally:
            sa.event.remove(engine, "before_cursor_execute", record)
        _recorded = statements
        return
    with engine.begin() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        for statement, parameters, executemany in _recorded:
            if executemany:
                cursor.executemany(statement, parameters)
            else:
                cursor.execute(statement, parameters or None)
