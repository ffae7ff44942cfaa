"""misconfigured: a connection whose installation is wrong (only an admin can fix it)

The status CHECK constraint of connections admits 'misconfigured'. On SQLite the table
is rebuilt (batch), with foreign keys off for the migration (`relink.db.upgrade`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BEFORE = ("connected", "disconnected", "unreachable", "unchecked")
AFTER = ("connected", "disconnected", "misconfigured", "unreachable", "unchecked")


def _status_check(allowed: tuple[str, ...]) -> None:
    values = ", ".join(f"'{v}'" for v in allowed)
    with op.batch_alter_table("connections", recreate="auto") as batch:
        batch.drop_constraint(batch.f("ck_connections_status_valid"), type_="check")
        batch.create_check_constraint(
            batch.f("ck_connections_status_valid"), f"status IN ({values})"
        )


def upgrade() -> None:
    _status_check(AFTER)


def downgrade() -> None:
    # what the schema before knew to say of a connection that could not be checked
    op.execute("UPDATE connections SET status = 'unreachable' WHERE status = 'misconfigured'")
    _status_check(BEFORE)
