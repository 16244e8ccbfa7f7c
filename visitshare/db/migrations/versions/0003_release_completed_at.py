"""Releases record when their steps after the commit (snapshot tags, report) were done, so
that a publish killed right after the commit is completed by the next one.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("releases", sa.Column("completed_at", sa.DateTime(timezone=True)))
    # Releases made before this revision did their steps in the same process as the commit.
    op.execute("update releases set completed_at = published_at")
