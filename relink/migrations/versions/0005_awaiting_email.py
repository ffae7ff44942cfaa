"""awaiting_email: the due-email query by a partial index, without probing notifications

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

DUE_WHERE = {
    "postgresql_where": sa.text("ended_at IS NULL AND awaiting_email"),
    "sqlite_where": sa.text("ended_at IS NULL AND awaiting_email = 1"),
}


def upgrade() -> None:
    # A plain ALTER TABLE ... ADD COLUMN on both backends, not a batch: on SQLite a batch
    # with this (expression) server default moves and copies the table, and with
    # PRAGMA foreign_keys=ON its DROP TABLE cascades into notifications (deletes them all).
    op.add_column(
        "disconnections",
        sa.Column("awaiting_email", sa.Boolean(), server_default=sa.true(), nullable=False),
    )
    # awaiting_email = NOT EXISTS (a notification other than a released one); the new
    # column is true everywhere, so only the others are written.
    op.execute(
        "UPDATE disconnections SET awaiting_email = false WHERE EXISTS ("
        "SELECT 1 FROM notifications"
        " WHERE notifications.disconnection_id = disconnections.id"
        " AND notifications.state <> 'released')"
    )
    # built after the backfill: once, over the episodes still waiting for their email
    op.create_index("ix_disconnections_due", "disconnections", ["started_at"], **DUE_WHERE)


def downgrade() -> None:
    op.drop_index("ix_disconnections_due", table_name="disconnections", **DUE_WHERE)
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35), for the same reason as above
    op.drop_column("disconnections", "awaiting_email")
