"""Every table the project owns in its database, in data-flow order.

Stage modules import their tables from here; this module imports no stage, so the database
layer (engine, migrations) knows every table without loading the stages. Changes to these
tables go through a migration in `visitshare/db/migrations/versions/`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

metadata = sa.MetaData()


class UTCDateTime(sa.types.TypeDecorator):
    """A timestamp stored with its zone, always read back aware and in UTC.

    SQLite keeps no zone and returns naive datetimes; every timestamp the project emits
    (notices, reports, exports) must carry its offset, so it is restored here, once."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("a naive datetime cannot be stored: give it a zone")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -- landing: the manifest of raw files ----------------------------------------------------
raw_files = sa.Table(
    "raw_files",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.String(249), nullable=False),
    # A topic deleted and created again restarts its offsets; its topic id tells them apart.
    sa.Column("topic_id", sa.String(64), nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("first_offset", sa.BigInteger, nullable=False),
    sa.Column("last_offset", sa.BigInteger, nullable=False),
    sa.Column("row_count", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("path", sa.String(1024), nullable=False, unique=True),  # relative to the lake
    sa.Column("landed_at", UTCDateTime(), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.UniqueConstraint("topic", "topic_id", "partition", "first_offset"),
    sa.CheckConstraint("last_offset >= first_offset", name="offset_range"),
    sa.CheckConstraint("row_count = last_offset - first_offset + 1", name="contiguous_rows"),
)

landing_gaps = sa.Table(
    "landing_gaps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.String(249), nullable=False),
    sa.Column("topic_id", sa.String(64), nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("from_offset", sa.BigInteger, nullable=False),
    sa.Column("to_offset", sa.BigInteger, nullable=False),
    sa.Column("detected_at", UTCDateTime(), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
)

# What the landing watcher (orchestration.triggers) last signalled to Airflow.
landing_signals = sa.Table(
    "landing_signals",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("raw_file_id", sa.Integer, nullable=False),
)

# -- quality: validation state and records ---------------------------------------------------
validated_raw_files = sa.Table(
    "validated_raw_files",
    metadata,
    sa.Column("raw_file_id", sa.Integer, sa.ForeignKey("raw_files.id"), primary_key=True),
    sa.Column("dataset", sa.String(64), nullable=False, index=True),
    sa.Column("batch", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
)

curated_files = sa.Table(
    "curated_files",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dataset", sa.String(64), nullable=False),
    sa.Column("zone", sa.String(16), nullable=False),  # validated | quarantine | seen
    sa.Column("path", sa.String(1024), nullable=False, unique=True),  # relative to the lake
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("batch", sa.String(64), nullable=False),
    sa.Column("municipality_code", sa.String(8)),
    sa.Column("month", sa.String(7)),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # The content's place in validation order: the file's own id, or for a compacted file the
    # largest sequence of the files it replaced (so compaction makes nothing look new).
    sa.Column("seq", sa.Integer),
    sa.Index("curated_files_dataset_zone", "dataset", "zone"),
)


def content_seq():
    """`curated_files`' sequence column as releases compare it (a file's id until compacted)."""
    return sa.func.coalesce(curated_files.c.seq, curated_files.c.id)


validation_batches = sa.Table(
    "validation_batches",
    metadata,
    sa.Column("dataset", sa.String(64), primary_key=True),
    sa.Column("batch", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("rows_in", sa.Integer, nullable=False),
    sa.Column("valid", sa.Integer, nullable=False),
    sa.Column("quarantined", sa.Integer, nullable=False),
    sa.Column("duplicates", sa.Integer, nullable=False),
    sa.Column("source_ranges", sa.JSON, nullable=False),
)

validation_runs = sa.Table(
    "validation_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("dataset", sa.String(64), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=False),
    sa.Column("rows_in", sa.Integer, nullable=False),
    sa.Column("valid", sa.Integer, nullable=False),
    sa.Column("quarantined", sa.Integer, nullable=False),
    sa.Column("record", sa.JSON, nullable=False),  # the whole ValidationRun
)

# -- release: one row per release, naming every shared table's snapshot ----------------------
releases = sa.Table(
    "releases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("published_at", UTCDateTime(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # published | expired
    sa.Column("input_fingerprint", sa.String(64), nullable=False),
    # The plan it was built from: a retried finalize finds its release instead of a second one.
    sa.Column("plan_token", sa.String(64)),
    sa.Column("key_fingerprint", sa.String(16), nullable=False),
    sa.Column("validated_upto", sa.Integer, nullable=False),
    sa.Column("contracts", sa.JSON, nullable=False),
    sa.Column("tables", sa.JSON, nullable=False),  # name → {iceberg, snapshot_id, rows}
    sa.Column("disclosure", sa.JSON, nullable=False),
    sa.Column("notice_sent", sa.Boolean, nullable=False),
    sa.Column("expired_at", UTCDateTime()),
    # When the steps after the commit were done (snapshot tags, disclosure report); a release
    # without it is completed by the next publish.
    sa.Column("completed_at", UTCDateTime()),
    # The last month whose record-level rows it published (a month that closes later is new).
    sa.Column("closed_through", sa.String(7)),
    sa.Column("full", sa.Boolean),  # rebuilt every partition (else: the touched ones)
    sa.Index("releases_plan_token", "plan_token", unique=True),
)

# The data files of each shared table, per partition (municipality × period; period "all" for
# tables without one), and the releases that show them: a file is in release N when
# release_from <= N and (release_to is null or N < release_to). An incremental release
# replaces the files of the partitions it recomputed and carries the others.
release_files = sa.Table(
    "release_files",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("table_name", sa.String(64), nullable=False),
    sa.Column("municipality_code", sa.String(8), nullable=False),
    sa.Column("period", sa.String(7), nullable=False),
    sa.Column("path", sa.String(1024), nullable=False),  # as Iceberg names it
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("release_from", sa.Integer, nullable=False),
    sa.Column("release_to", sa.Integer),
    sa.Index("release_files_current", "table_name", "release_to"),
)


# -- release state: what each release published, per partition (police zone) -------------------
# Record-level rows are published once per partition (dataset × municipality × month) when
# its month closes, and later in revision batches; a batch file in the lake lists its rows'
# event ids and generalization levels, so a full rebuild makes exactly the same rows.
record_batches = sa.Table(
    "record_batches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dataset", sa.String(64), nullable=False),
    sa.Column("municipality_code", sa.String(8), nullable=False),
    sa.Column("period", sa.String(7), nullable=False),  # YYYY-MM
    sa.Column("kind", sa.String(16), nullable=False),  # close | revision
    sa.Column("release_id", sa.Integer, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("node", sa.JSON, nullable=False),  # the partition's global levels
    sa.Column(
        "path", sa.String(1024), nullable=False
    ),  # ledger file (lake), one per shard and kind
    sa.Index("record_batches_partition", "dataset", "municipality_code", "period"),
)

# The published values of each aggregate partition (table × municipality × month), kept so that
# an unchanged partition is carried over as it was (no new noise, no new privacy spend).
aggregate_states = sa.Table(
    "aggregate_states",
    metadata,
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("municipality_code", sa.String(8), primary_key=True),
    sa.Column("period", sa.String(7), primary_key=True),  # YYYY-MM, or "all"
    sa.Column("fingerprint", sa.String(64), nullable=False),  # of the true values
    sa.Column("path", sa.String(1024), nullable=False),  # the published values (lake)
    sa.Column("rho_spent", sa.Float, nullable=False),
    sa.Column("refreshes", sa.Integer, nullable=False),
    sa.Column("refreshed_at", UTCDateTime(), nullable=False),
    sa.Column("release_id", sa.Integer, nullable=False),
    sa.Column("stale", sa.Boolean, nullable=False),  # true values changed, not released yet
)

# Every privacy spend (the accountant's ledger): which partition, which release, how much.
dp_spend = sa.Table(
    "dp_spend",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("table_name", sa.String(64), nullable=False),
    sa.Column("municipality_code", sa.String(8), nullable=False),
    sa.Column("period", sa.String(7), nullable=False),
    sa.Column("release_id", sa.Integer, nullable=False),
    sa.Column("rho", sa.Float, nullable=False),
)


# -- access -------------------------------------------------------------------------------------
# Which municipalities each partner role reads at town level ('*': all); filled from
# infra/partners.yaml by `visitshare db apply`, read by the row-level-security policies.
partner_scopes = sa.Table(
    "shared_partner_scopes",
    metadata,
    sa.Column("role_name", sa.String(64), primary_key=True),
    sa.Column("municipality_code", sa.String(8), primary_key=True),
)

# Bearer tokens of the Delta Sharing server (`visitshare share token ...`). Only a hash of
# each token is kept: the token itself exists once, in the profile file given to the partner.
share_tokens = sa.Table(
    "share_tokens",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),  # public, names the token in logs
    sa.Column("partner_id", sa.String(64), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),  # SHA-256, hex
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime()),
    sa.Column("comment", sa.String(255)),
)

# Every request the sharing server answered, allowed or refused (counts only, never values).
share_access_log = sa.Table(
    "share_access_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False, index=True),
    sa.Column("partner_id", sa.String(64), index=True),  # null: no valid token
    sa.Column("token_id", sa.String(16)),
    sa.Column("method", sa.String(8), nullable=False),
    sa.Column("endpoint", sa.String(64), nullable=False),  # the route, e.g. "query"
    sa.Column("share", sa.String(255)),
    sa.Column("schema_name", sa.String(255)),
    sa.Column("table_name", sa.String(255)),
    sa.Column("release_id", sa.Integer),
    sa.Column("files", sa.Integer),
    sa.Column("rows", sa.BigInteger),
    sa.Column("bytes", sa.BigInteger),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("client", sa.String(64)),  # the peer address
)
