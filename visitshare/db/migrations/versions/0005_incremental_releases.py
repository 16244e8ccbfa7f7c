"""Incremental releases: each shared table's data files per partition, a content sequence for
validated files (compaction keeps it), the closed-through month of each release.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: a plain ADD COLUMN on SQLite too (a batch copy would drop indexes).
    op.add_column("curated_files", sa.Column("seq", sa.Integer))
    op.add_column("releases", sa.Column("closed_through", sa.String(7)))
    op.add_column("releases", sa.Column("full", sa.Boolean))
    op.create_table(
        "release_files",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("table_name", sa.String(64), nullable=False),
        sa.Column("municipality_code", sa.String(8), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("release_from", sa.Integer, nullable=False),
        sa.Column("release_to", sa.Integer),
        sa.Index("release_files_current", "table_name", "release_to"),
    )


def downgrade() -> None:
    op.drop_table("release_files")
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("full")
        batch.drop_column("closed_through")
    with op.batch_alter_table("curated_files") as batch:
        batch.drop_column("seq")
