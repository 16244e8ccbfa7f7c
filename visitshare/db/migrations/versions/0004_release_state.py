"""Release state per partition: record batches, aggregate states and the privacy ledger.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "record_batches",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset", sa.String(64), nullable=False),
        sa.Column("municipality_code", sa.String(8), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("release_id", sa.Integer, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("node", sa.JSON, nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Index("record_batches_partition", "dataset", "municipality_code", "period"),
    )
    op.create_table(
        "aggregate_states",
        sa.Column("table_name", sa.String(64), primary_key=True),
        sa.Column("municipality_code", sa.String(8), primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("rho_spent", sa.Float, nullable=False),
        sa.Column("refreshes", sa.Integer, nullable=False),
        sa.Column("refreshed_at", TZ, nullable=False),
        sa.Column("release_id", sa.Integer, nullable=False),
        sa.Column("stale", sa.Boolean, nullable=False),
    )
    op.create_table(
        "dp_spend",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("municipality_code", sa.String(8), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("release_id", sa.Integer, nullable=False),
        sa.Column("rho", sa.Float, nullable=False),
    )
