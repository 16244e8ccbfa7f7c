"""What a killed publish leaves behind, and how the next one cleans it up and completes it.

A publish can die at any moment (SIGKILL, power, an Airflow worker lost). What it may leave:
- a staging folder of police-zone data (`lake/staging/<plan token>/`): removed once no live
  process owns it (the folder names its owner: a process, or Airflow's tasks with a deadline);
- Iceberg files of a write that never committed: removed when no snapshot, manifest or
  metadata file of the table references them (proved from the table's own metadata, while
  holding the publish lock, so no write is under way);
- a committed release whose steps after the commit did not run (snapshot tags, disclosure
  report): completed, from what its `releases` row holds;
- a maintenance rewrite (`visitshare.release.maintain`) that committed its Iceberg snapshot
  but not the `releases` row naming it: the table's current snapshot is set back to the
  release's; one that committed both but did not move the release's tag: the tag is moved;
- release notices not sent yet: sent.

`recover` does all of it and is idempotent; every publish (CLI and Airflow) calls it first.
Shard workers die with their parent (`visitshare.processes`), so nothing writes staging files
after its publish is gone.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import PurePosixPath

import psutil
import sqlalchemy as sa
from pydantic import BaseModel

from visitshare.db import engine_for
from visitshare.db.locks import named_lock
from visitshare.db.tables import aggregate_states, record_batches, releases
from visitshare.lake import Entry, Lake, lake_for
from visitshare.landing import zones
from visitshare.release import disclosure, shared
from visitshare.release.notices import send_pending_notices
from visitshare.release.releases import release_dir
from visitshare.settings import Settings

log = logging.getLogger(__name__)

OWNER_FILE = "owner.json"
# Staging made by Airflow tasks (plan → shards → finalize in separate processes) has no
# single owner process: it counts as abandoned after the curate DAG's task timeout and more.
AIRFLOW_STAGING_TTL = timedelta(hours=2)


class RecoveryReport(BaseModel):
    completed_releases: list[int] = []
    snapshots_realigned: list[str] = []
    staging_removed: list[str] = []
    orphan_files_removed: int = 0
    state_files_removed: int = 0
    notices_sent: list[int] = []

    def lines(self) -> list[str]:
        out = []
        if self.completed_releases:
            out.append(f"completed releases {self.completed_releases} (tags, report)")
        if self.snapshots_realigned:
            out.append(f"realigned with their releases: {', '.join(self.snapshots_realigned)}")
        if self.staging_removed:
            out.append(f"removed {len(self.staging_removed)} abandoned staging folder(s)")
        if self.orphan_files_removed:
            out.append(f"removed {self.orphan_files_removed} unreferenced Iceberg file(s)")
        if self.state_files_removed:
            out.append(f"removed {self.state_files_removed} unreferenced state file(s)")
        if self.notices_sent:
            out.append(f"sent pending notices of releases {self.notices_sent}")
        return out


@contextmanager
def publish_lock(settings: Settings) -> Iterator[None]:
    """Only one process writes the shared zone at a time (CLI publish, Airflow finalize)."""
    with named_lock(engine_for(settings), "publish"):
        yield


# -- staging ownership -------------------------------------------------------------------------
def claim_staging(settings: Settings, token: str, airflow: bool = False) -> None:
    """Create a plan's staging folder and say who owns it (before any shard writes there)."""
    me = psutil.Process()
    owner = {
        "kind": "airflow" if airflow else "process",
        "pid": me.pid,
        "create_time": me.create_time(),
        "host": socket.gethostname(),
        "created_at": settings.clock.now().isoformat(),
    }
    lake_for(settings).write_bytes(
        json.dumps(owner).encode(), zones.staging_dir(token) / OWNER_FILE
    )


def _abandoned(lake: Lake, token: str, files: list[Entry], released_tokens: set[str]) -> bool:
    if token in released_tokens:
        return True  # its release committed; finalize removes it, unless killed first
    try:
        owner = json.loads(lake.read_bytes(zones.staging_dir(token) / OWNER_FILE))
    except (OSError, ValueError):
        owner = None
    # A file's mtime is the storage's clock: compare it with the machine's, not
    # `settings.clock` (which a replay or a test may set to another day). The folder's age is
    # that of its newest file (object storage has no folders, nor their times).
    age = time.time() - max(f.mtime for f in files)
    if owner is None or owner.get("kind") != "process":
        return age > AIRFLOW_STAGING_TTL.total_seconds()
    if owner.get("host") != socket.gethostname():
        return age > AIRFLOW_STAGING_TTL.total_seconds()  # cannot see that host's processes
    try:
        alive = abs(psutil.Process(owner["pid"]).create_time() - owner["create_time"]) < 1
    except (psutil.Error, KeyError, TypeError):
        alive = False
    return not alive


def _staging_folders(lake: Lake) -> dict[str, list[Entry]]:
    """The files under each plan token's staging folder."""
    out: dict[str, list[Entry]] = {}
    for f in lake.list(zones.Zone.STAGING):
        token = f.path.split("/")[1]
        out.setdefault(token, []).append(f)
    return out


def abandoned_staging(settings: Settings) -> list[str]:
    """Plan tokens of the staging folders of publishes that died (or whose release committed)."""
    lake = lake_for(settings)
    folders = _staging_folders(lake)
    if not folders:
        return []
    with engine_for(settings).connect() as conn:
        tokens = set(conn.execute(sa.select(releases.c.plan_token)).scalars()) - {None}
    return [t for t, files in sorted(folders.items()) if _abandoned(lake, t, files, tokens)]


def _heads_moved(settings: Settings) -> bool:
    """Whether a shared table's current snapshot is not the latest release's (a write that
    never committed its release)."""
    with engine_for(settings).connect() as conn:
        latest = conn.execute(
            sa.select(releases.c.tables)
            .where(releases.c.status == "published")
            .order_by(releases.c.id.desc())
        ).first()
    cat = shared.catalog(settings)
    for spec in shared.tables(settings):
        if not cat.table_exists(spec.iceberg):
            continue
        head = cat.load_table(spec.iceberg).current_snapshot()
        want = (latest.tables.get(spec.name) or {}).get("snapshot_id") if latest else None
        if (head.snapshot_id if head is not None else None) != want:
            return True
    return False


# -- Iceberg files no snapshot references ------------------------------------------------------
def referenced_files(lake: Lake, table) -> set[str]:
    """Every file the table's metadata reaches, as lake paths: metadata files, manifest lists,
    manifests and data files of every snapshot it keeps."""
    refs = {lake.relative(table.metadata_location)}
    refs |= {lake.relative(e.metadata_file) for e in table.metadata.metadata_log}
    for snapshot in table.metadata.snapshots:
        refs.add(lake.relative(snapshot.manifest_list))
        for manifest in snapshot.manifests(table.io):
            path = lake.relative(manifest.manifest_path)
            if path in refs:  # snapshots share manifests: read each once
                continue
            refs.add(path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                refs.add(lake.relative(entry.data_file.file_path))
    return refs


def orphan_files(settings: Settings) -> list[Entry]:
    """Files under the shared tables' locations that no snapshot or metadata file references.
    Call only while holding the publish lock (no write under way)."""
    cat = shared.catalog(settings)
    lake = lake_for(settings)
    out: list[Entry] = []
    for spec in shared.tables(settings):
        if not cat.table_exists(spec.iceberg):
            continue
        table = cat.load_table(spec.iceberg)
        present = lake.list(lake.relative(table.location()))
        if present:
            refs = referenced_files(lake, table)
            out += [f for f in present if f.path not in refs]
    return out


# -- police-zone state of releases that never committed ----------------------------------------
def orphan_state_files(settings: Settings) -> list[Entry]:
    """Record ledgers and aggregate values that no committed release references and that no
    staging folder (a publish under way) owns: what a publish that died left behind.
    Call only while holding the publish lock, after removing abandoned staging."""
    lake = lake_for(settings)
    present = [
        f
        for kind in ("records", "aggregates")
        for f in lake.list(f"{zones.Zone.STATE}/{kind}")
        if f.path.endswith(".parquet")
    ]
    if not present:
        return []
    with engine_for(settings).connect() as conn:
        refs = set(conn.execute(sa.select(record_batches.c.path)).scalars())
        refs |= set(conn.execute(sa.select(aggregate_states.c.path)).scalars())
    live = set(_staging_folders(lake))
    out = []
    for f in present:
        stem = PurePosixPath(f.path).stem
        owned = any(stem == t or stem.startswith(f"{t}-") for t in live)
        if f.path not in refs and not owned:
            out.append(f)
    return out


# -- releases whose steps after the commit did not run -----------------------------------------
def complete_release(settings: Settings, row: sa.Row) -> None:
    """Tag the release's snapshots and write its report (idempotent), then mark it complete."""
    cat = shared.catalog(settings)
    for name, info in row.tables.items():
        spec = shared.table(settings, name)
        shared.tag_release(cat, spec, info["snapshot_id"], row.id)
    report = disclosure.DisclosureReport.model_validate(row.disclosure)
    disclosure.write_report(report, release_dir(settings, row.id))
    with engine_for(settings).begin() as conn:
        conn.execute(
            releases.update()
            .where(releases.c.id == row.id)
            .values(completed_at=settings.clock.now())
        )


def complete_releases(settings: Settings) -> list[int]:
    with engine_for(settings).connect() as conn:
        pending = conn.execute(
            sa.select(releases)
            .where(releases.c.completed_at.is_(None), releases.c.status == "published")
            .order_by(releases.c.id)
        ).all()
    for row in pending:
        complete_release(settings, row)
    return [row.id for row in pending]


# -- tables whose snapshots differ from what the releases name ---------------------------------
def align_snapshots(settings: Settings) -> list[str]:
    """Undo a maintenance rewrite that the latest release did not adopt (the table's current
    snapshot goes back to the release's), and point every published release's tag at the
    snapshot its row names. What was changed, one entry per table."""
    with engine_for(settings).connect() as conn:
        published = conn.execute(
            sa.select(releases.c.id, releases.c.tables, releases.c.completed_at)
            .where(releases.c.status == "published")
            .order_by(releases.c.id)
        ).all()
    if not published:
        return []
    latest = published[-1]
    cat = shared.catalog(settings)
    changed = []
    for spec in shared.tables(settings):
        if not cat.table_exists(spec.iceberg):
            continue
        tbl = cat.load_table(spec.iceberg)
        want = (latest.tables.get(spec.name) or {}).get("snapshot_id")
        head = tbl.current_snapshot()
        if (
            want is not None
            and head is not None
            and head.snapshot_id != want
            and head.summary is not None
            and head.summary[shared.REWRITE_PROPERTY] is not None
            and tbl.snapshot_by_id(want) is not None
        ):
            tbl.manage_snapshots().set_current_snapshot(snapshot_id=want).commit()
            tbl = cat.load_table(spec.iceberg)
            changed.append(f"{spec.iceberg} (current snapshot)")
        refs = tbl.refs()
        moves = []
        for row in published:
            snap = (row.tables.get(spec.name) or {}).get("snapshot_id")
            tag = f"release-{row.id}"
            if snap is None or row.completed_at is None or tbl.snapshot_by_id(snap) is None:
                continue  # an incomplete release is tagged by complete_releases
            if tag not in refs or refs[tag].snapshot_id != snap:
                moves.append((snap, tag))
        if moves:
            manage = tbl.manage_snapshots()
            for snap, tag in moves:
                manage = manage.create_tag(snap, tag)  # moves the tag if it exists
            manage.commit()
            changed.append(f"{spec.iceberg} (tags {', '.join(t for _, t in moves)})")
    return changed


def recover(settings: Settings, say: Callable[[str], None] = log.info) -> RecoveryReport:
    """Clean up and complete after any earlier publish that died; idempotent."""
    report = RecoveryReport()
    with publish_lock(settings):
        report.completed_releases = complete_releases(settings)
        report.snapshots_realigned = align_snapshots(settings)
        # Files of a write that never committed exist only where a publish died (its staging
        # folder is left) or a table moved past its release: only then is every table's
        # metadata read (the daily maintenance sweeps them in any case). The folders go after
        # the sweep, so a recovery that dies halfway sweeps again next time.
        lake = lake_for(settings)
        abandoned = abandoned_staging(settings)
        if abandoned or _heads_moved(settings):
            for f in orphan_files(settings):
                lake.remove(f.path)
                report.orphan_files_removed += 1
        for token in abandoned:
            lake.remove_tree(zones.staging_dir(token))
            report.staging_removed.append(token)
        for f in orphan_state_files(settings):
            lake.remove(f.path)
            report.state_files_removed += 1
    report.notices_sent = send_pending_notices(settings)
    for line in report.lines():
        say(f"recovery: {line}")
    return report
