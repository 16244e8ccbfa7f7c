"""Releases record the plan they were built from: a retried finalize finds its release.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database made by `create_all` after this column existed already has it.
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("releases")}
    if "plan_token" not in columns:
        op.add_column("releases", sa.Column("plan_token", sa.String(64)))
    indexes = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("releases")}
    if "releases_plan_token" not in indexes:
        op.create_index("releases_plan_token", "releases", ["plan_token"], unique=True)
