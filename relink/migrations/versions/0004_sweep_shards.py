"""sweep shards: the claims of a fanned-out check sweep

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweep_shards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sweep_id", sa.String(length=64), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("after_id", sa.Integer(), nullable=False),
        sa.Column("upto_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("claimed_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweep_shards")),
        sa.UniqueConstraint("sweep_id", "shard", name=op.f("uq_sweep_shards_sweep_id_shard")),
    )
    with op.batch_alter_table("sweep_shards", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sweep_shards_sweep_id"), ["sweep_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sweep_shards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sweep_shards_sweep_id"))
    op.drop_table("sweep_shards")
