"""The Delta Sharing server: hashed bearer tokens and the access log.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "share_tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("partner_id", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("comment", sa.String(255)),
    )
    op.create_table(
        "share_access_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("partner_id", sa.String(64), index=True),
        sa.Column("token_id", sa.String(16)),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("share", sa.String(255)),
        sa.Column("schema_name", sa.String(255)),
        sa.Column("table_name", sa.String(255)),
        sa.Column("release_id", sa.Integer),
        sa.Column("files", sa.Integer),
        sa.Column("rows", sa.BigInteger),
        sa.Column("bytes", sa.BigInteger),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("client", sa.String(64)),
    )


def downgrade() -> None:
    op.drop_table("share_access_log")
    op.drop_table("share_tokens")
