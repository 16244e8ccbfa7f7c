"""The lake's zones and where each file goes: every path in the lake is named here, once.

Paths are relative to the lake root (local `settings.lake` or `settings.lake_uri` on object
storage, `visitshare.lake`), which is how manifests record them:

    raw/<topic>/partition=<p>/<first>-<last>.<writer>.<topic id>.parquet   landing (police only)
    validated/<dataset>/municipality_code=<c>/month=<YYYY-MM>/<batch>.parquet
    quarantine/<dataset>/<batch>.parquet                             rows that failed, with reasons
    state/seen/<dataset>/<batch>.parquet                             event ids seen (de-duplication)
    state/records/<dataset>/<municipality>/<month>/<batch>.parquet   what a record batch published
    state/aggregates/<table>/<municipality>/<month>/<id>.parquet     an aggregate partition's values
    staging/<plan token>/<table>/shard-<n>.parquet                   a release being built (police)
    shared/                                                          the Iceberg warehouse (released)
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import PurePosixPath


class Zone(StrEnum):
    RAW = "raw"
    VALIDATED = "validated"
    QUARANTINE = "quarantine"
    STATE = "state"
    STAGING = "staging"
    SHARED = "shared"


def raw_dir(topic: str) -> PurePosixPath:
    """Every landed file of a topic (what lineage names as one dataset)."""
    return PurePosixPath(Zone.RAW, topic)


def raw_partition(topic: str, partition: int) -> PurePosixPath:
    return raw_dir(topic) / f"partition={partition}"


def raw_file(
    topic: str, partition: int, first: int, last: int, topic_id: str, writer: str = ""
) -> PurePosixPath:
    """One landed offset range; zero-padded offsets so that names sort by offset.

    `writer` names the lander: two landers racing for one range (one of them fenced by the
    manifest) write two files, so the loser never replaces or removes the winner's.
    """
    by = f".{writer}" if writer else ""
    name = f"{first:020d}-{last:020d}{by}.{topic_id.replace('-', '')[:12]}.parquet"
    return raw_partition(topic, partition) / name


def validated_dir(dataset: str) -> PurePosixPath:
    return PurePosixPath(Zone.VALIDATED, dataset)


def validated_file(dataset: str, municipality_code: str, month: str, batch: str) -> PurePosixPath:
    return (
        validated_dir(dataset)
        / f"municipality_code={municipality_code}"
        / f"month={month}"
        / f"{batch}.parquet"
    )


def quarantine_dir(dataset: str) -> PurePosixPath:
    return PurePosixPath(Zone.QUARANTINE, dataset)


def quarantine_file(dataset: str, batch: str) -> PurePosixPath:
    return quarantine_dir(dataset) / f"{batch}.parquet"


def seen_ids_file(dataset: str, batch: str) -> PurePosixPath:
    return PurePosixPath(Zone.STATE, "seen", dataset, f"{batch}.parquet")


def record_ledger(dataset: str, name: str) -> PurePosixPath:
    """A ledger of record batches: which rows they published, at which levels (police zone)."""
    return PurePosixPath(Zone.STATE, "records", dataset, f"{name}.parquet")


def aggregate_values(table: str, name: str) -> PurePosixPath:
    """The values a release published an aggregate table's partitions with (police zone)."""
    return PurePosixPath(Zone.STATE, "aggregates", table, f"{name}.parquet")


def staging_dir(token: str) -> PurePosixPath:
    return PurePosixPath(Zone.STAGING, token)


def staged_table(token: str, table: str) -> PurePosixPath:
    """Every shard's file of one table of a release being built."""
    return staging_dir(token) / table


def staged_file(token: str, table: str, shard: int) -> PurePosixPath:
    return staged_table(token, table) / f"shard-{shard:03d}.parquet"


WAREHOUSE = PurePosixPath(Zone.SHARED)
