"""identity: whose account a connection's credentials use

`identity_subject` is the source's stable name of the account (an OpenID `sub`,
Salesforce's identity URL, user@host), `identity_label` what pages show ("Connected as
ann@acme.test"). Empty until the next check or reconnect tells them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("connections", sa.Column("identity_subject", sa.String(500), nullable=True))
    op.add_column("connections", sa.Column("identity_label", sa.String(320), nullable=True))


def downgrade() -> None:
    op.drop_column("connections", "identity_label")
    op.drop_column("connections", "identity_subject")
