"""Compaction of the validated zone: the small files of a partition become one, row for row.

Validation writes one file per batch × municipality × month, so a partition (dataset ×
municipality × month) that receives events all day gathers many small files. Compaction
replaces the files of a partition that a release has already included by one file with the
same schema and the same rows:

- only files whose content sequence (`content_seq()`: `curated_files.seq`, else the id) is at
  most the latest release's `validated_upto`, so released and unreleased content never mix;
  with no release yet, nothing is compacted;
- the new file's sequence is the largest of the files it replaces: nothing looks new to the
  next release, and every release plan that included the old files includes the new one;
- rows in sequence order, then in each file's own order (how a release reads them);
- verified before it counts: every old file must still match its recorded SHA-256, and the new
  file, read back from the lake, must have their schema, their row count and their content
  checksum (order-independent, over every column). Otherwise the new file is deleted, the old
  files stay, and the partition is reported as failed; the other partitions go on;
- committed in one transaction under the publish lock: the new `curated_files` row (batch
  `compacted`) and the replaced rows moved to zone `compacted`. Their rows stay, so the
  validated zone's lineage keeps every file validation wrote (`validated_lineage()`); readers
  of zone `validated` see the new file only, so nothing counts twice.

The replaced files stay in the lake for `REPLACED_TTL` (a release planned before the compaction may
still be reading them). A later run deletes them and moves their rows to zone `compacted-gone`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
from pydantic import BaseModel

from visitshare.db import engine_for
from visitshare.db.tables import content_seq, curated_files
from visitshare.lake import lake_for
from visitshare.landing import zones
from visitshare.settings import Settings

log = logging.getLogger(__name__)

VALIDATED = "validated"
REPLACED = "compacted"  # replaced by a compacted file; the file stays for REPLACED_TTL
REMOVED = "compacted-gone"  # replaced, and its file deleted (`zone` holds 16 characters)
BATCH = "compacted"  # the batch of every file compaction writes
# Replaced files stay this long (wall clock, since the compaction): like Airflow's staging,
# a release whose tasks read the validated zone may take that long.
REPLACED_TTL = timedelta(hours=2)


def validated_lineage():
    """The `curated_files` rows of every validated file as validation wrote it, compacted or
    not. What they hold (and their content sequences) is what the validated zone holds, and
    compaction does not change it."""
    return curated_files.c.zone.in_((VALIDATED, REPLACED, REMOVED)) & (
        curated_files.c.batch != BATCH
    )


class CompactionFailure(BaseModel):
    dataset: str
    municipality_code: str
    month: str
    reason: str


class CompactionReport(BaseModel):
    """What one compaction run did to the validated zone."""

    partitions_compacted: int = 0
    files_before: int = 0  # validated files replaced
    files_after: int = 0  # compacted files written in their place
    rows_checked: int = 0  # rows read back and compared
    bytes_before: int = 0
    bytes_after: int = 0
    checksum_failures: int = 0  # old files that no longer match, new files that did not verify
    failures: list[CompactionFailure] = []
    unreleased_files: int = 0  # left alone: no release includes them yet
    replaced_files_removed: int = 0  # files of earlier compactions, past REPLACED_TTL
    replaced_bytes_removed: int = 0


class _Failed(Exception):
    def __init__(self, reason: str, checksum: bool = False):
        super().__init__(reason)
        self.checksum = checksum


# -- an order-independent checksum of a table's rows --------------------------------------------
_NULL = np.uint64(0x9E3779B97F4A7C15)  # a null's hash (any fixed value)
_PRIME = np.uint64(1_000_003)


def _as_int64(column: pa.ChunkedArray) -> pa.ChunkedArray | None:
    t = column.type
    if pa.types.is_date32(t):
        column = column.cast(pa.int32())
    elif not (
        pa.types.is_integer(t)
        or pa.types.is_boolean(t)
        or pa.types.is_temporal(t)  # timestamps, dates, times, durations
    ):
        return None
    return column.cast(pa.int64())


def _column_hashes(column: pa.ChunkedArray) -> np.ndarray:
    """A 64-bit hash of every value of the column (nulls: one fixed value)."""
    from pandas.util import hash_array

    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    t = column.type
    valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
    ints = _as_int64(column)
    if ints is not None:
        values = ints.fill_null(0).to_numpy(zero_copy_only=False)
    elif pa.types.is_floating(t):
        values = column.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
        values = column.fill_null("").to_numpy(zero_copy_only=False)
    else:  # lists, structs, decimals, ...: their JSON text
        values = np.array(
            [json.dumps(v, default=str, sort_keys=True) for v in column.to_pylist()], object
        )
    hashes = hash_array(values, categorize=False)
    hashes[~valid] = _NULL
    return hashes


def content_checksum(table: pa.Table) -> int:
    """The sum (mod 2^64) of a hash of every row over all its columns: equal for the same rows
    in any order and split into files in any way, different as soon as one value differs."""
    rows = np.zeros(table.num_rows, np.uint64)
    for column in table.columns:
        rows = (rows * _PRIME) ^ _column_hashes(column)
    return int(rows.sum(dtype=np.uint64))


# -- compaction -------------------------------------------------------------------------------
def compact_validated(
    settings: Settings,
    upto: int | None,
    lock: Callable[[], AbstractContextManager],
    run_id: str,
    min_files: int = 2,
    small_bytes: int = 64 * 2**20,
) -> CompactionReport:
    """Compact every partition with at least `min_files` files (each below `small_bytes`)
    whose content sequence is at most `upto` (the latest release's `validated_upto`; None: no
    release yet, nothing is compacted). `lock` is held while each partition commits."""
    report = CompactionReport()
    engine = engine_for(settings)
    seq = content_seq().label("seq")
    with engine.connect() as conn:
        files = conn.execute(
            sa.select(
                curated_files.c.id,
                curated_files.c.dataset,
                curated_files.c.municipality_code,
                curated_files.c.month,
                curated_files.c.path,
                curated_files.c.bytes,
                curated_files.c.sha256,
                seq,
            )
            .where(
                curated_files.c.zone == VALIDATED,
                curated_files.c.municipality_code.is_not(None),
                curated_files.c.month.is_not(None),
            )
            .order_by(seq, curated_files.c.id)
        ).all()
    partitions: dict[tuple[str, str, str], list[sa.Row]] = defaultdict(list)
    for f in files:
        if upto is None or f.seq > upto:
            report.unreleased_files += 1
        elif f.bytes < small_bytes:
            partitions[(f.dataset, f.municipality_code, f.month)].append(f)
    for key, members in sorted(partitions.items()):
        if len(members) < min_files:
            continue
        try:
            _compact_partition(settings, key, members, lock, run_id, min_files, report)
        except Exception as exc:  # one partition never stops the others
            checksum = isinstance(exc, _Failed) and exc.checksum
            if not isinstance(exc, _Failed):
                log.exception("compacting %s failed", "/".join(key))
            report.checksum_failures += int(checksum)
            report.failures.append(
                CompactionFailure(
                    dataset=key[0], municipality_code=key[1], month=key[2], reason=str(exc)
                )
            )
    return report


def _compact_partition(
    settings: Settings,
    key: tuple[str, str, str],
    members: list[sa.Row],
    lock: Callable[[], AbstractContextManager],
    run_id: str,
    min_files: int,
    report: CompactionReport,
) -> None:
    """Read, check and group the partition's files by schema (a contract change starts a new
    group: files of two schemas are never merged), then compact each group."""
    groups: dict[pa.Schema, list[tuple[sa.Row, pa.Table]]] = {}
    lake = lake_for(settings)
    for f in members:  # in sequence order
        data = lake.read_bytes(f.path)
        if hashlib.sha256(data).hexdigest() != f.sha256:
            raise _Failed(f"{f.path} differs from its recorded SHA-256", checksum=True)
        table = pq.read_table(pa.BufferReader(data))
        same = next((s for s in groups if s.equals(table.schema, check_metadata=True)), None)
        groups.setdefault(same or table.schema, []).append((f, table))
    for schema, group in groups.items():
        if len(group) >= min_files:
            _compact_group(settings, key, schema, group, lock, run_id, report)


def _compact_group(
    settings: Settings,
    key: tuple[str, str, str],
    schema: pa.Schema,
    group: list[tuple[sa.Row, pa.Table]],
    lock: Callable[[], AbstractContextManager],
    run_id: str,
    report: CompactionReport,
) -> None:
    dataset, muni, month = key
    combined = pa.concat_tables([t for _, t in group])
    checksum = content_checksum(combined)
    rel = zones.validated_file(dataset, muni, month, f"{BATCH}-{uuid.uuid4().hex}").as_posix()
    lake = lake_for(settings)
    nbytes, digest = lake.write_parquet(combined, rel, replace=lambda _: False)
    try:
        back = lake.read_table(rel)
        if not back.schema.equals(schema, check_metadata=True):
            raise _Failed(f"{rel}: read back with another schema", checksum=True)
        if back.num_rows != combined.num_rows:
            raise _Failed(
                f"{rel}: {back.num_rows} rows read back, {combined.num_rows} expected",
                checksum=True,
            )
        if content_checksum(back) != checksum:
            raise _Failed(f"{rel}: content checksum differs from the files it replaces", True)
        old = [f for f, _ in group]
        ids = [f.id for f in old]
        for f in old:  # the replaced files' age counts from now (REPLACED_TTL)
            lake.touch(f.path)
        with lock(), engine_for(settings).begin() as conn:
            moved = conn.execute(
                curated_files.update()
                .where(curated_files.c.id.in_(ids), curated_files.c.zone == VALIDATED)
                .values(zone=REPLACED)
            )
            if moved.rowcount != len(ids):
                raise _Failed("the partition's files changed meanwhile (validation reset?)")
            conn.execute(
                curated_files.insert().values(
                    dataset=dataset,
                    zone=VALIDATED,
                    path=rel,
                    rows=back.num_rows,
                    bytes=nbytes,
                    sha256=digest,
                    batch=BATCH,
                    municipality_code=muni,
                    month=month,
                    run_id=run_id,
                    created_at=settings.clock.now(),
                    seq=max(f.seq for f in old),
                )
            )
    except BaseException:
        lake.remove(rel)
        raise
    report.partitions_compacted += 1
    report.files_before += len(old)
    report.files_after += 1
    report.rows_checked += back.num_rows
    report.bytes_before += sum(f.bytes for f in old)
    report.bytes_after += nbytes
    log.info(
        "compacted %s %s %s: %d files → 1 (%d rows)", dataset, muni, month, len(old), back.num_rows
    )


def remove_replaced(settings: Settings, ttl: timedelta = REPLACED_TTL) -> tuple[int, int]:
    """Delete the files compaction replaced more than `ttl` ago (wall clock: the files' mtime,
    set when they were replaced); their rows stay, in zone `compacted-gone`. The number of
    files and bytes removed."""
    engine = engine_for(settings)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(curated_files.c.id, curated_files.c.path).where(
                curated_files.c.zone == REPLACED
            )
        ).all()
    gone, freed = [], 0
    lake = lake_for(settings)
    for r in rows:
        stat = lake.stat(r.path)
        if stat is None:
            gone.append(r.id)  # removed by an earlier run that died before marking it
            continue
        if time.time() - stat.mtime <= ttl.total_seconds():
            continue
        lake.remove(r.path)
        gone.append(r.id)
        freed += stat.size
    if gone:
        with engine.begin() as conn:
            conn.execute(
                curated_files.update()
                .where(curated_files.c.id.in_(gone), curated_files.c.zone == REPLACED)
                .values(zone=REMOVED)
            )
    return len(gone), freed
