"""Alembic environment: runs on the connection `relink.db` hands it."""

from __future__ import annotations

from alembic import context

from relink.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only `relink db upgrade` drives migrations
    raise RuntimeError("run migrations through `relink db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
