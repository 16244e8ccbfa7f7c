"""The schema as the first landed version made it (before releases had a plan token).

Databases from before migrations existed were made by `create_all`: this revision adopts
them by creating only the tables they lack, so every database, old or new, reaches the same
state through the same revisions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def _tables() -> list[tuple[str, list]]:
    return [
        ("raw_files", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("topic", sa.String(249), nullable=False),
            sa.Column("topic_id", sa.String(64), nullable=False),
            sa.Column("partition", sa.Integer, nullable=False),
            sa.Column("first_offset", sa.BigInteger, nullable=False),
            sa.Column("last_offset", sa.BigInteger, nullable=False),
            sa.Column("row_count", sa.Integer, nullable=False),
            sa.Column("bytes", sa.BigInteger, nullable=False),
            sa.Column("sha256", sa.String(64), nullable=False),
            sa.Column("path", sa.String(1024), nullable=False, unique=True),
            sa.Column("landed_at", TZ, nullable=False),
            sa.Column("run_id", sa.String(64), nullable=False),
            sa.UniqueConstraint("topic", "topic_id", "partition", "first_offset"),
            sa.CheckConstraint("last_offset >= first_offset", name="offset_range"),
            sa.CheckConstraint("row_count = last_offset - first_offset + 1", name="contiguous_rows"),
        ]),
        ("landing_gaps", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("topic", sa.String(249), nullable=False),
            sa.Column("topic_id", sa.String(64), nullable=False),
            sa.Column("partition", sa.Integer, nullable=False),
            sa.Column("from_offset", sa.BigInteger, nullable=False),
            sa.Column("to_offset", sa.BigInteger, nullable=False),
            sa.Column("detected_at", TZ, nullable=False),
            sa.Column("reason", sa.String(500), nullable=False),
        ]),
        ("landing_signals", [
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("raw_file_id", sa.Integer, nullable=False),
        ]),
        ("validated_raw_files", [
            sa.Column("raw_file_id", sa.Integer, sa.ForeignKey("raw_files.id"), primary_key=True),
            sa.Column("dataset", sa.String(64), nullable=False, index=True),
            sa.Column("batch", sa.String(64), nullable=False),
            sa.Column("run_id", sa.String(64), nullable=False),
        ]),
        ("curated_files", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("dataset", sa.String(64), nullable=False),
            sa.Column("zone", sa.String(16), nullable=False),
            sa.Column("path", sa.String(1024), nullable=False, unique=True),
            sa.Column("rows", sa.Integer, nullable=False),
            sa.Column("bytes", sa.BigInteger, nullable=False),
            sa.Column("sha256", sa.String(64), nullable=False),
            sa.Column("batch", sa.String(64), nullable=False),
            sa.Column("municipality_code", sa.String(8)),
            sa.Column("month", sa.String(7)),
            sa.Column("run_id", sa.String(64), nullable=False),
            sa.Column("created_at", TZ, nullable=False),
            sa.Index("curated_files_dataset_zone", "dataset", "zone"),
        ]),
        ("validation_batches", [
            sa.Column("dataset", sa.String(64), primary_key=True),
            sa.Column("batch", sa.String(64), primary_key=True),
            sa.Column("run_id", sa.String(64), nullable=False),
            sa.Column("rows_in", sa.Integer, nullable=False),
            sa.Column("valid", sa.Integer, nullable=False),
            sa.Column("quarantined", sa.Integer, nullable=False),
            sa.Column("duplicates", sa.Integer, nullable=False),
            sa.Column("source_ranges", sa.JSON, nullable=False),
        ]),
        ("validation_runs", [
            sa.Column("run_id", sa.String(64), primary_key=True),
            sa.Column("dataset", sa.String(64), nullable=False, index=True),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("status", sa.String(32), nullable=False),
            sa.Column("started_at", TZ, nullable=False),
            sa.Column("finished_at", TZ, nullable=False),
            sa.Column("rows_in", sa.Integer, nullable=False),
            sa.Column("valid", sa.Integer, nullable=False),
            sa.Column("quarantined", sa.Integer, nullable=False),
            sa.Column("record", sa.JSON, nullable=False),
        ]),
        ("releases", [
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("published_at", TZ, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("input_fingerprint", sa.String(64), nullable=False),
            sa.Column("key_fingerprint", sa.String(16), nullable=False),
            sa.Column("validated_upto", sa.Integer, nullable=False),
            sa.Column("contracts", sa.JSON, nullable=False),
            sa.Column("tables", sa.JSON, nullable=False),
            sa.Column("disclosure", sa.JSON, nullable=False),
            sa.Column("notice_sent", sa.Boolean, nullable=False),
            sa.Column("expired_at", TZ),
        ]),
        ("shared_partner_scopes", [
            sa.Column("role_name", sa.String(64), primary_key=True),
            sa.Column("municipality_code", sa.String(8), primary_key=True),
        ]),
    ]  # fmt: skip


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, columns in _tables():
        if name not in existing:
            op.create_table(name, *columns)
