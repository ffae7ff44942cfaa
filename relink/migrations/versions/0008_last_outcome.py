"""last_outcome: what the last check found, beside the status it leaves

`last_outcome` and `last_outcome_code` are filled from what the status says of each
checked connection. A connection with an open disconnection that an outage or an
installation problem had moved to another status becomes `disconnected` again, with the
code that broke it (the outage's message is not its error).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OUTCOME_OF_STATUS = {
    "connected": "ok",
    "disconnected": "auth_failed",
    "misconfigured": "misconfigured",
    "unreachable": "unreachable",
}
OPEN = (
    "FROM disconnections WHERE disconnections.connection_id = connections.id"
    " AND disconnections.ended_at IS NULL"
)


def upgrade() -> None:
    # plain ADD COLUMN on every backend (no batch: nothing else of the table changes)
    op.add_column("connections", sa.Column("last_outcome", sa.String(16), nullable=True))
    op.add_column("connections", sa.Column("last_outcome_code", sa.String(64), nullable=True))
    for status, outcome in OUTCOME_OF_STATUS.items():
        op.execute(
            sa.text(
                "UPDATE connections SET last_outcome = :outcome, last_outcome_code = "
                "last_error_code WHERE status = :status AND last_checked_at IS NOT NULL"
            ).bindparams(outcome=outcome, status=status)
        )
    op.execute(
        "UPDATE connections SET status = 'disconnected', last_error_message = NULL, "
        f"last_error_code = (SELECT disconnections.reason_code {OPEN}) "
        f"WHERE status <> 'disconnected' AND EXISTS (SELECT 1 {OPEN})"
    )


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35); the statuses stay as they are
    op.drop_column("connections", "last_outcome_code")
    op.drop_column("connections", "last_outcome")
