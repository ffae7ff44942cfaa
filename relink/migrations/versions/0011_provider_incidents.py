"""provider_incidents: an outage of a provider, kept as one thing

One row per incident: most connections of one provider failing alike in a sweep, from
the first sweep that found it to the first that found the provider well again.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_incidents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("code", sa.String(64), nullable=True),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("checked", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_incidents")),
    )
    op.create_index(
        "ix_provider_incidents_provider_ended",
        "provider_incidents",
        ["provider", "ended_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_provider_incidents_provider_ended", table_name="provider_incidents")
    op.drop_table("provider_incidents")
