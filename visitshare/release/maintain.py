"""Table maintenance: `visitshare maintain` and the daily `maintain_tables` DAG.

One run, in this order:

1. recovers from any publish that died (`recovery.recover`; idempotent);
2. compacts the validated zone up to the latest release (`visitshare.quality.compact`);
3. rewrites small Iceberg data files (below);
4. expires releases past retention (`retention.expire_releases`), then every snapshot older
   than the retention period that no branch, tag or published release names;
5. removes files under the shared tables that no snapshot or metadata file references, and
   police-zone state files no release references (`recovery.orphan_files`,
   `recovery.orphan_state_files`);
6. deletes the validated files compactions replaced more than two hours ago.

Steps 3 to 5 hold the publish lock: no release is written meanwhile.

**Rewriting small Iceberg files.** A partition's rows may lie in several data files (a release
writes at most `write.target-file-size-bytes` per file). A rewrite unit is what
`release_files` maps a file to (table × municipality × period) within one Iceberg partition (a
data file belongs to one); it is rewritten into one file when it has at least
`VISITSHARE_MAINTAIN_MIN_FILES` files smaller than `VISITSHARE_MAINTAIN_SMALL_FILE_BYTES`.
A rewrite changes what no release shows:

- it touches only the latest release's files (`release_files` rows with `release_to` null),
  and only when the table's current snapshot is that release's;
- the new files are read back before anything commits: the same row count and the same
  content checksum as the files they replace (`compact.content_checksum`);
- one Iceberg snapshot per table (operation overwrite, property `visitshare.maintain`) deletes
  the old files and adds the new ones, and must hold as many records as the release's;
- one database transaction then makes the latest release name that snapshot
  (`releases.tables`), ends the old files' `release_files` rows at the latest release (rows the
  latest release itself added are deleted) and adds the new files from it; after it, the
  release's tag `release-<id>` moves to the new snapshot.

Earlier releases keep reading their own tagged snapshots, which still hold the old files. The
latest release's former snapshot is untagged and expires once past retention. A rewrite that
dies between the Iceberg commit and the database commit is undone by recovery
(`recovery.align_snapshots`), as is a tag left on the former snapshot.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta

import pyarrow as pa
import sqlalchemy as sa
from pydantic import BaseModel

from visitshare.db import engine_for
from visitshare.db.tables import release_files, releases
from visitshare.lake import lake_for
from visitshare.quality.compact import CompactionReport, compact_validated, content_checksum
from visitshare.quality.compact import remove_replaced as remove_replaced_validated
from visitshare.release import shared
from visitshare.release.recovery import orphan_files, orphan_state_files, publish_lock, recover
from visitshare.release.releases import latest_release
from visitshare.release.retention import expire_releases
from visitshare.settings import Settings

log = logging.getLogger(__name__)


class MaintainReport(BaseModel):
    """What one maintenance run did (the CLI prints it, the DAG task returns it as JSON)."""

    run_id: str
    recovery: list[str] = []  # what recovering from an earlier publish did
    validated: CompactionReport = CompactionReport()
    iceberg_partitions_rewritten: int = 0
    iceberg_files_before: int = 0  # data files replaced
    iceberg_files_after: int = 0  # data files written in their place
    iceberg_rows_checked: int = 0
    iceberg_failures: list[str] = []
    iceberg_skipped: list[str] = []  # tables left alone, and why
    releases_expired: list[int] = []
    snapshots_expired: int = 0
    orphan_files_removed: int = 0  # Iceberg files no snapshot references
    state_files_removed: int = 0  # police-zone state no release references
    bytes_freed: int = 0  # files this run deleted (orphans, state, replaced validated files)

    @property
    def failed(self) -> bool:
        return bool(self.validated.failures or self.iceberg_failures)

    def summary(self) -> list[tuple[str, str]]:
        """(what, count) pairs, in the order of the run."""
        v = self.validated
        return [
            ("validated partitions compacted", f"{v.partitions_compacted:,}"),
            ("validated files before → after", f"{v.files_before:,} → {v.files_after:,}"),
            ("validated rows checked", f"{v.rows_checked:,}"),
            ("validated checksum failures", f"{v.checksum_failures:,}"),
            ("validated partitions failed", f"{len(v.failures):,}"),
            ("validated files not released yet (left)", f"{v.unreleased_files:,}"),
            ("replaced validated files removed", f"{v.replaced_files_removed:,}"),
            ("Iceberg partitions rewritten", f"{self.iceberg_partitions_rewritten:,}"),
            (
                "Iceberg files before → after",
                f"{self.iceberg_files_before:,} → {self.iceberg_files_after:,}",
            ),
            ("Iceberg rows checked", f"{self.iceberg_rows_checked:,}"),
            ("releases expired", ", ".join(map(str, self.releases_expired)) or "0"),
            ("snapshots expired", f"{self.snapshots_expired:,}"),
            ("orphan Iceberg files removed", f"{self.orphan_files_removed:,}"),
            ("orphan state files removed", f"{self.state_files_removed:,}"),
            ("bytes freed", f"{self.bytes_freed:,}"),
        ]


def maintain(settings: Settings, say: Callable[[str], None] = log.info) -> MaintainReport:
    """One maintenance run (see the module's docstring); idempotent, safe beside publishes."""
    now = settings.clock.now()
    report = MaintainReport(run_id=f"maintain-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}")
    recovered = recover(settings, say)
    report.recovery = recovered.lines()
    report.orphan_files_removed += recovered.orphan_files_removed
    report.state_files_removed += recovered.state_files_removed
    with engine_for(settings).connect() as conn:
        latest = latest_release(conn)
    report.validated = compact_validated(
        settings,
        latest.validated_upto if latest is not None else None,
        lambda: publish_lock(settings),
        report.run_id,
        settings.maintain_min_files,
        settings.maintain_small_file_bytes,
    )
    with publish_lock(settings):
        rewrite_small_files(settings, report)
        before = _snapshot_count(settings)
        report.releases_expired = expire_releases(settings)
        expire_snapshots(settings)
        report.snapshots_expired = before - _snapshot_count(settings)
        lake = lake_for(settings)
        for f in orphan_files(settings):
            lake.remove(f.path)
            report.bytes_freed += f.size
            report.orphan_files_removed += 1
        for f in orphan_state_files(settings):
            lake.remove(f.path)
            report.bytes_freed += f.size
            report.state_files_removed += 1
    removed, freed = remove_replaced_validated(settings)
    report.validated.replaced_files_removed = removed
    report.validated.replaced_bytes_removed = freed
    report.bytes_freed += freed
    return report


# -- small Iceberg files -----------------------------------------------------------------------
def rewrite_small_files(settings: Settings, report: MaintainReport) -> None:
    """Rewrite the latest release's small data files (see the module's docstring). Call while
    holding the publish lock."""
    with engine_for(settings).connect() as conn:
        latest = latest_release(conn)
    if latest is None:
        return
    cat = shared.catalog(settings)
    for spec in shared.tables(settings):
        try:
            _rewrite_table(settings, cat, spec, latest, report)
        except Exception as exc:  # one table never stops the others
            log.exception("rewriting %s failed", spec.iceberg)
            report.iceberg_failures.append(f"{spec.iceberg}: {exc}")


def _read_files(tbl, files: list) -> pa.Table:
    """The rows of some data files of the table, in its current schema."""
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan
    from pyiceberg.table import FileScanTask

    scan = ArrowScan(tbl.metadata, tbl.io, tbl.schema(), AlwaysTrue())
    return scan.to_table([FileScanTask(f) for f in files])


def _delete_files(tbl, files: list) -> None:
    for f in files:
        tbl.io.delete(f.file_path)


def _rewrite_table(
    settings: Settings, cat, spec: shared.SharedTable, latest: sa.Row, report: MaintainReport
) -> None:
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    snapshot_id = (latest.tables.get(spec.name) or {}).get("snapshot_id")
    if snapshot_id is None or not cat.table_exists(spec.iceberg):
        return
    tbl = cat.load_table(spec.iceberg)
    head = tbl.current_snapshot()
    if head is None or head.snapshot_id != snapshot_id:
        report.iceberg_skipped.append(
            f"{spec.iceberg}: its current snapshot is not release {latest.id}'s (the next "
            "publish replaces it)"
        )
        return
    current = {
        entry.data_file.file_path: entry.data_file
        for manifest in head.manifests(tbl.io)
        for entry in manifest.fetch_manifest_entry(tbl.io, discard_deleted=True)
    }
    engine = engine_for(settings)
    with engine.connect() as conn:
        mapped = conn.execute(
            sa.select(release_files).where(
                release_files.c.table_name == spec.name, release_files.c.release_to.is_(None)
            )
        ).all()
    paths = [r.path for r in mapped]
    if len(set(paths)) != len(paths) or set(paths) != set(current):
        report.iceberg_skipped.append(
            f"{spec.iceberg}: release_files does not map release {latest.id}'s files one to "
            "one (`visitshare publish --full` rewrites them)"
        )
        return
    units: dict[tuple, list[tuple[sa.Row, object]]] = defaultdict(list)
    for r in mapped:
        f = current[r.path]
        if f.file_size_in_bytes < settings.maintain_small_file_bytes:
            units[(r.municipality_code, r.period, f.spec_id, f.partition)].append((r, f))
    todo = sorted(
        ((k, v) for k, v in units.items() if len(v) >= settings.maintain_min_files),
        key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][3])),
    )
    if not todo:
        return
    write_uuid, counter = uuid.uuid4(), itertools.count()
    replaced: list[tuple[sa.Row, object]] = []
    added, added_rows = [], []
    try:
        for (muni, period, _, _), members in todo:
            old_files = [f for _, f in members]
            old = _read_files(tbl, old_files)
            new_files = list(
                _dataframe_to_data_files(
                    table_metadata=tbl.metadata,
                    write_uuid=write_uuid,
                    df=old,
                    io=tbl.io,
                    counter=counter,
                )
            )
            for f in new_files:  # written with the table's default spec (set when committed)
                f.spec_id = tbl.metadata.default_spec_id
            if len(new_files) >= len(old_files):  # nothing to gain (already as large as allowed)
                _delete_files(tbl, new_files)
                continue
            back = _read_files(tbl, new_files)
            if (
                back.num_rows != old.num_rows
                or sum(f.record_count for f in new_files) != old.num_rows
                or content_checksum(back) != content_checksum(old)
            ):
                _delete_files(tbl, new_files)
                report.iceberg_failures.append(
                    f"{spec.iceberg} {muni} {period}: the rewritten files do not read back as "
                    "the files they replace; left as it was"
                )
                continue
            replaced += members
            added += new_files
            added_rows += [
                {
                    "table_name": spec.name,
                    "municipality_code": muni,
                    "period": period,
                    "path": f.file_path,
                    "rows": f.record_count,
                    "bytes": f.file_size_in_bytes,
                    "release_from": latest.id,
                }
                for f in new_files
            ]
            report.iceberg_rows_checked += back.num_rows
            report.iceberg_partitions_rewritten += 1
        if not added:
            return
        props = {shared.REWRITE_PROPERTY: str(latest.id)}
        with (
            tbl.transaction() as tx,
            tx.update_snapshot(snapshot_properties=props).overwrite() as overwrite,
        ):
            for _, f in replaced:
                overwrite.delete_data_file(f)
            for f in added:
                overwrite.append_data_file(f)
    except BaseException:
        _delete_files(tbl, added)  # none is committed (the overwrite commits last)
        raise
    tbl = cat.load_table(spec.iceberg)
    new_head = tbl.current_snapshot()
    try:
        if new_head.summary["total-records"] != head.summary["total-records"]:
            raise RuntimeError(
                f"the rewritten snapshot holds {new_head.summary['total-records']} records, "
                f"release {latest.id} {head.summary['total-records']}"
            )
        _adopt(engine, spec, latest.id, new_head.snapshot_id, replaced, added_rows)
    except BaseException:  # the release still names its own snapshot: make it current again
        tbl.manage_snapshots().set_current_snapshot(snapshot_id=snapshot_id).commit()
        raise
    tbl.manage_snapshots().create_tag(new_head.snapshot_id, f"release-{latest.id}").commit()
    report.iceberg_files_before += len(replaced)
    report.iceberg_files_after += len(added)
    log.info(
        "%s: rewrote %d small files into %d (release %d, snapshot %d)",
        spec.iceberg, len(replaced), len(added), latest.id, new_head.snapshot_id,
    )  # fmt: skip


def _adopt(
    engine: sa.Engine,
    spec: shared.SharedTable,
    release_id: int,
    snapshot_id: int,
    replaced: list[tuple[sa.Row, object]],
    added_rows: list[dict],
) -> None:
    """The latest release names the rewritten snapshot; `release_files` follows, at once."""
    with engine.begin() as conn:
        row = latest_release(conn)
        if row is None or row.id != release_id:
            raise RuntimeError(f"release {release_id} is no longer the latest")
        tables = {k: dict(v) for k, v in row.tables.items()}
        tables[spec.name]["snapshot_id"] = snapshot_id
        conn.execute(releases.update().where(releases.c.id == release_id).values(tables=tables))
        ids = [r.id for r, _ in replaced]
        conn.execute(  # shown by no release now: the latest shows the new files
            release_files.delete().where(
                release_files.c.id.in_(ids), release_files.c.release_from == release_id
            )
        )
        conn.execute(  # earlier releases still show them, through their own snapshots
            release_files.update()
            .where(release_files.c.id.in_(ids), release_files.c.release_from < release_id)
            .values(release_to=release_id)
        )
        conn.execute(release_files.insert(), added_rows)


# -- snapshots past retention ------------------------------------------------------------------
def _snapshot_count(settings: Settings) -> int:
    cat = shared.catalog(settings)
    return sum(
        len(cat.load_table(spec.iceberg).metadata.snapshots)
        for spec in shared.tables(settings)
        if cat.table_exists(spec.iceberg)
    )


def expire_snapshots(settings: Settings) -> int:
    """Expire the snapshots older than the retention period that no branch or tag protects and
    no published release names; how many. Call while holding the publish lock."""
    from pyiceberg.utils.datetime import datetime_to_millis

    cutoff = datetime_to_millis(
        settings.clock.now() - timedelta(days=settings.release_retention_days)
    )
    with engine_for(settings).connect() as conn:
        named = conn.execute(
            sa.select(releases.c.tables).where(releases.c.status == "published")
        ).scalars()
        kept = {t.get("snapshot_id") for tables in named for t in tables.values()} - {None}
    cat = shared.catalog(settings)
    expired = 0
    for spec in shared.tables(settings):
        if not cat.table_exists(spec.iceberg):
            continue
        tbl = cat.load_table(spec.iceberg)
        protected = kept | {ref.snapshot_id for ref in tbl.metadata.refs.values()}
        old = [
            s.snapshot_id
            for s in tbl.metadata.snapshots
            if s.timestamp_ms < cutoff and s.snapshot_id not in protected
        ]
        if old:
            tbl.maintenance.expire_snapshots().by_ids(old).commit()
            expired += len(old)
    return expired
