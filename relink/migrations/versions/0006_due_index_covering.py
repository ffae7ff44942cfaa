"""ix_disconnections_due covers the id on PostgreSQL: the due query becomes index-only

With 1,000,000 disconnections and 10,000 due, the due rows lie one per heap page: reading
them cost 7,300 page visits (about 40 ms), and the planner, seeing little difference,
sometimes preferred uq_disconnections_one_open with a filter. INCLUDE (id) answers the
query from the index alone (2 ms, no heap fetch after a vacuum). SQLite's indexes already
carry the rowid (the id), so only PostgreSQL changes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 05:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

WHERE = sa.text("ended_at IS NULL AND awaiting_email")


def _recreate(include: list[str]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_disconnections_due", table_name="disconnections", postgresql_where=WHERE)
    op.create_index(
        "ix_disconnections_due",
        "disconnections",
        ["started_at"],
        postgresql_where=WHERE,
        postgresql_include=include,
    )


def upgrade() -> None:
    _recreate(["id"])


def downgrade() -> None:
    _recreate([])
