"""expiry foresight: when each connection's credentials expire, heads-up emails

`connections.credentials_expire_at` and `credentials_expiry_kind` (hard or idle; both
empty: unknown) are written whenever credentials are stored or refreshed.
`accounts.expiry_heads_up` turns the owners' heads-up emails on (the default) or off.
`heads_ups` is the exactly-once ledger of those emails: one row per connection and
expiry, the same states as `notifications`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

STATES = "'claimed', 'sent', 'failed', 'unknown', 'released', 'outbox', 'no_recipient'"


def upgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("credentials_expire_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("credentials_expiry_kind", sa.String(8), nullable=True))
        batch_op.create_check_constraint(
            "credentials_expiry_kind_valid", "credentials_expiry_kind IN ('hard', 'idle')"
        )
        batch_op.create_index(
            "ix_connections_credentials_expire_at", ["credentials_expire_at"], unique=False
        )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("expiry_heads_up", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
    op.create_table(
        "heads_ups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("provider_message_id", sa.String(length=200), nullable=True),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column("subject", sa.String(length=500), nullable=True),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(f"state IN ({STATES})", name=op.f("ck_heads_ups_state_valid")),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_heads_ups_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_heads_ups")),
        sa.UniqueConstraint(
            "connection_id", "expires_at", name=op.f("uq_heads_ups_connection_id_expires_at")
        ),
    )
    with op.batch_alter_table("heads_ups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_heads_ups_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("heads_ups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_heads_ups_state"))
    op.drop_table("heads_ups")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("expiry_heads_up")
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.drop_index("ix_connections_credentials_expire_at")
        batch_op.drop_constraint("credentials_expiry_kind_valid", type_="check")
        batch_op.drop_column("credentials_expiry_kind")
        batch_op.drop_column("credentials_expire_at")
