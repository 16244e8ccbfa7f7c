"""Table maintenance (`visitshare maintain`, the maintain_tables DAG): compaction of the validated
zone, rewrites of small Iceberg files, snapshot expiry and orphan removal change no row of any
release. Real SQLite, real Iceberg SQL catalog, real files; nothing is mocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from tests.helpers import validated_zone
from visitshare.db import engine_for
from visitshare.db.tables import content_seq, curated_files, release_files, validation_batches
from visitshare.lake import lake_for
from visitshare.landing.files import write_parquet
from visitshare.quality.compact import REMOVED, REPLACED, content_checksum
from visitshare.quality.validate import read_curated
from visitshare.release import shared
from visitshare.release.errors import ReleaseError
from visitshare.release.maintain import maintain
from visitshare.release.plan import plan
from visitshare.release.publish import publish
from visitshare.release.recovery import recover, referenced_files
from visitshare.release.releases import files_of, get_release, read_table

WARDS = ("13104", "13112")
DATASETS = ("visit_outcome", "incident_report")


def _rows(table: pa.Table) -> list[str]:
    """A table as a sorted list of rows (a multiset: order is not part of a release)."""
    cols = sorted(table.column_names)
    return sorted(json.dumps([r[c] for c in cols], default=str) for r in table.to_pylist())


def _validated(settings) -> dict[str, tuple[int, int]]:
    """dataset → (rows, content checksum) of the validated zone, read through the manifest."""
    out = {}
    for dataset in DATASETS:
        table = read_curated(settings, dataset, "validated")
        assert table is not None
        out[dataset] = (table.num_rows, content_checksum(table))
    return out


def _files(settings, zone: str = "validated") -> list[sa.Row]:
    with engine_for(settings).connect() as conn:
        return conn.execute(
            sa.select(curated_files, content_seq().label("content_seq")).where(
                curated_files.c.zone == zone
            )
        ).all()


def _partitions(rows: list[sa.Row]) -> Counter:
    return Counter((r.dataset, r.municipality_code, r.month) for r in rows)


def _reconciles(settings) -> None:
    """Rows in the validated zone = valid rows validation recorded, per dataset."""
    with engine_for(settings).connect() as conn:
        valid = dict(
            conn.execute(
                sa.select(
                    validation_batches.c.dataset, sa.func.sum(validation_batches.c.valid)
                ).group_by(validation_batches.c.dataset)
            ).all()
        )
        zone = dict(
            conn.execute(
                sa.select(curated_files.c.dataset, sa.func.sum(curated_files.c.rows))
                .where(curated_files.c.zone == "validated")
                .group_by(curated_files.c.dataset)
            ).all()
        )
    assert zone == valid


def _release_rows(settings, release_id: int) -> dict[str, list[str]]:
    release = get_release(settings, release_id)
    return {
        spec.name: _rows(read_table(settings, release, spec.name))
        for spec in shared.tables(settings)
    }


def _mapped_rows(settings, release_id: int) -> dict[str, list[str]]:
    """Every table of release N read from the files `release_files` says it shows."""
    with engine_for(settings).connect() as conn:
        mapped = files_of(conn, release_id)
    out: dict[str, list[str]] = {spec.name: [] for spec in shared.tables(settings)}
    for r in mapped:
        out[r.table_name] += _rows(pq.read_table(r.path.removeprefix("file://")))
    return {k: sorted(v) for k, v in out.items()}


def _age(paths, hours: float) -> None:
    """Make files look `hours` old to the wall clock (what the grace period looks at)."""
    then = time.time() - hours * 3600
    for p in paths:
        os.utime(p, (then, then))


def test_compaction_keeps_every_row_and_changes_no_release(settings, contracts):
    validated_zone(settings, contracts, days=6, seed=21, municipalities=WARDS)
    publish(settings)
    validated_zone(settings, contracts, days=6, seed=22, municipalities=WARDS)
    publish(settings)
    full_before = publish(settings, force=True, full=True)
    assert full_before is not None
    before, files_before = _validated(settings), _files(settings)
    parts = _partitions(files_before)
    assert parts and all(n == 2 for n in parts.values())  # two small files per partition
    _reconciles(settings)

    report = maintain(settings)
    v = report.validated
    assert not report.failed and v.checksum_failures == 0
    assert v.partitions_compacted == len(parts)
    assert (v.files_before, v.files_after) == (len(files_before), len(parts))
    assert v.rows_checked == sum(n for n, _ in before.values())
    # every row is still there, once: same count and content checksum, fewer files
    assert _validated(settings) == before
    files_after = _files(settings)
    assert _partitions(files_after) == Counter(dict.fromkeys(parts, 1))
    _reconciles(settings)  # the replaced files' rows count no more
    # each compacted file has the largest content sequence of the files it replaced
    for f in files_after:
        replaced = [
            r.content_seq
            for r in files_before
            if (r.dataset, r.municipality_code, r.month)
            == (f.dataset, f.municipality_code, f.month)
        ]
        assert f.seq == max(replaced) and f.batch == "compacted"
    # the replaced files keep their rows (lineage) and stay on disk for the grace period
    replaced = _files(settings, REPLACED)
    assert sorted(r.id for r in replaced) == sorted(r.id for r in files_before)
    assert all((settings.lake / r.path).exists() for r in replaced)

    # Compaction made nothing new, and a release of the compacted zone equals one before it.
    assert publish(settings) is None
    full_after = publish(settings, force=True, full=True)
    assert full_after is not None
    assert _release_rows(settings, full_after.release_id) == _release_rows(
        settings, full_before.release_id
    )

    # A later run deletes the replaced files once they are two hours old, not before.
    again = maintain(settings)
    assert again.validated.replaced_files_removed == 0
    assert again.validated.partitions_compacted == 0
    _age([settings.lake / r.path for r in replaced], hours=3)
    later = maintain(settings)
    assert later.validated.replaced_files_removed == len(replaced)
    assert later.bytes_freed >= sum(r.bytes for r in replaced)
    assert not any((settings.lake / r.path).exists() for r in replaced)
    assert sorted(r.id for r in _files(settings, REMOVED)) == sorted(r.id for r in replaced)
    assert _validated(settings) == before
    assert publish(settings) is None


def test_unreleased_files_are_never_compacted(settings, contracts):
    validated_zone(settings, contracts, days=6, seed=21, municipalities=WARDS)
    validated_zone(settings, contracts, days=6, seed=22, municipalities=WARDS)
    nothing = maintain(settings)  # no release yet: nothing is compacted
    assert nothing.validated.partitions_compacted == 0
    assert nothing.validated.unreleased_files == len(_files(settings))

    published = publish(settings)
    assert published is not None
    upto = get_release(settings, published.release_id).validated_upto
    validated_zone(settings, contracts, days=6, seed=23, municipalities=WARDS)
    unreleased = [f for f in _files(settings) if f.content_seq > upto]
    released = _partitions(f for f in _files(settings) if f.content_seq <= upto)
    assert unreleased and max(released.values()) == 2
    before = _validated(settings)

    report = maintain(settings)
    assert report.validated.partitions_compacted == sum(n > 1 for n in released.values())
    assert report.validated.unreleased_files == len(unreleased)
    after = _files(settings)
    # the unreleased files are untouched; each compacted file holds released content only
    assert {f.id for f in unreleased} <= {f.id for f in after}
    for f in after:
        assert f.id in {u.id for u in unreleased} or f.content_seq <= upto
    assert _validated(settings) == before
    # the next release sees exactly the unreleased files' partitions as new
    p = plan(settings)
    assert p is not None and not p.full
    assert set(p.touched) == {(f.municipality_code, f.month) for f in unreleased}
    assert p.validated_upto == max(f.content_seq for f in unreleased)


def test_a_partition_that_fails_is_left_as_it_was(settings, contracts):
    validated_zone(settings, contracts, days=6, seed=21, municipalities=WARDS)
    publish(settings)
    validated_zone(settings, contracts, days=6, seed=22, municipalities=WARDS)
    publish(settings)
    files = _files(settings)
    # One validated file changed on disk behind the manifest's back (a row dropped).
    victim = next(f for f in files if f.dataset == "visit_outcome")
    path = settings.lake / victim.path
    table = pq.read_table(path)
    write_parquet(table.slice(1), path)
    partition = (victim.dataset, victim.municipality_code, victim.month)

    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "visitshare.cli", "maintain"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "not compacted" in done.stdout and "SHA-256" in done.stdout
    assert "validated partitions compacted" in done.stdout
    after = _files(settings)
    # the failed partition keeps its files, and no compacted file was left in its folder
    assert sorted(
        f.id for f in after if (f.dataset, f.municipality_code, f.month) == partition
    ) == sorted(f.id for f in files if (f.dataset, f.municipality_code, f.month) == partition)
    assert not list(path.parent.glob("compacted-*"))
    # every other partition was compacted
    others = _partitions(f for f in files if (f.dataset, f.municipality_code, f.month) != partition)
    assert _partitions(
        f for f in after if (f.dataset, f.municipality_code, f.month) != partition
    ) == (Counter(dict.fromkeys(others, 1)))


def _set_target_file_size(settings, size: int | None) -> None:
    cat = shared.catalog(settings)
    for spec in shared.tables(settings):
        tbl = cat.load_table(spec.iceberg)
        with tbl.transaction() as tx:
            if size is None:
                tx.remove_properties("write.target-file-size-bytes")
            else:
                tx.set_properties({"write.target-file-size-bytes": str(size)})


def _current_units(settings) -> Counter:
    """(table, municipality, period) → current files."""
    with engine_for(settings).connect() as conn:
        rows = conn.execute(sa.select(release_files).where(release_files.c.release_to.is_(None)))
        return Counter((r.table_name, r.municipality_code, r.period) for r in rows)


def test_small_iceberg_files_are_rewritten_and_every_release_reads_as_before(settings, contracts):
    validated_zone(settings, contracts, days=6, seed=31, municipalities=WARDS)
    publish(settings)
    # Releases written with a small target file size leave several files per partition.
    _set_target_file_size(settings, 20_000)
    validated_zone(settings, contracts, days=6, seed=32, municipalities=WARDS)
    second = publish(settings, force=True, full=True)
    _set_target_file_size(settings, None)
    validated_zone(settings, contracts, days=2, seed=33, municipalities=(WARDS[0],))
    third = publish(settings)
    assert second is not None and third is not None
    ids = (1, second.release_id, third.release_id)
    units = _current_units(settings)
    assert max(units.values()) > 1
    before = {r: _release_rows(settings, r) for r in ids}
    latest_before = get_release(settings, third.release_id)

    report = maintain(settings)
    assert not report.failed and not report.iceberg_skipped
    assert report.iceberg_partitions_rewritten > 0
    assert report.iceberg_files_after < report.iceberg_files_before
    assert sum(_current_units(settings).values()) == (
        sum(units.values()) - report.iceberg_files_before + report.iceberg_files_after
    )
    # every release reads exactly what it read, through its snapshot and through release_files
    for r in ids:
        assert _release_rows(settings, r) == before[r], r
        assert _mapped_rows(settings, r) == before[r], r
    # the latest release names the rewritten snapshots, and its tags moved with them
    latest = get_release(settings, third.release_id)
    cat = shared.catalog(settings)
    moved = 0
    for spec in shared.tables(settings):
        snap = latest.tables[spec.name]["snapshot_id"]
        tbl = cat.load_table(spec.iceberg)
        if snap is None:  # a dataset without rows yet: no snapshot, nothing to rewrite
            assert tbl.current_snapshot() is None and latest.tables[spec.name]["rows"] == 0
            continue
        assert tbl.refs()[f"release-{latest.id}"].snapshot_id == snap
        assert tbl.current_snapshot().snapshot_id == snap
        if snap != latest_before.tables[spec.name]["snapshot_id"]:
            moved += 1
            assert tbl.snapshot_by_id(snap).summary["visitshare.maintain"] == str(latest.id)
        assert latest.tables[spec.name]["rows"] == latest_before.tables[spec.name]["rows"]
    assert moved > 0

    # Nothing is new, and the next release carries the rewritten files like any others.
    assert publish(settings) is None
    validated_zone(settings, contracts, days=2, seed=34, municipalities=(WARDS[1],))
    fourth = publish(settings)
    assert fourth is not None
    mapped = _mapped_rows(settings, fourth.release_id)
    for spec in shared.tables(settings):
        assert _release_rows(settings, fourth.release_id)[spec.name] == mapped[spec.name]
    assert maintain(settings).iceberg_partitions_rewritten == 0  # nothing small left twice


def test_a_rewrite_no_release_adopted_is_undone_by_recovery(settings, contracts):
    """A rewrite that died between its Iceberg commit and the database commit leaves the
    table's current snapshot ahead of the release: recovery sets it back."""
    validated_zone(settings, contracts, days=6, seed=41, municipalities=WARDS)
    first = publish(settings)
    assert first is not None
    release = get_release(settings, first.release_id)
    cat = shared.catalog(settings)
    tbl = cat.load_table("shared.visits")
    snap = release.tables["visits"]["snapshot_id"]
    victim = next(
        e.data_file
        for m in tbl.current_snapshot().manifests(tbl.io)
        for e in m.fetch_manifest_entry(tbl.io, discard_deleted=True)
    )
    props = {shared.REWRITE_PROPERTY: str(release.id)}
    with (
        tbl.transaction() as tx,
        tx.update_snapshot(snapshot_properties=props).overwrite() as overwrite,
    ):
        overwrite.delete_data_file(victim)
    assert cat.load_table("shared.visits").current_snapshot().snapshot_id != snap

    report = recover(settings)
    assert report.snapshots_realigned == ["shared.visits (current snapshot)"]
    assert cat.load_table("shared.visits").current_snapshot().snapshot_id == snap
    # a release's tag left on another snapshot is moved back to the one its row names
    other = cat.load_table("shared.visits").metadata.snapshots[-1].snapshot_id
    assert other != snap
    cat.load_table("shared.visits").manage_snapshots().create_tag(
        other, f"release-{release.id}"
    ).commit()
    assert recover(settings).snapshots_realigned == [f"shared.visits (tags release-{release.id})"]
    assert cat.load_table("shared.visits").refs()[f"release-{release.id}"].snapshot_id == snap
    validated_zone(settings, contracts, days=2, seed=42, municipalities=(WARDS[0],))
    assert publish(settings) is not None  # the next release builds on the release's files


def _all_referenced_exist(settings) -> None:
    cat, lake = shared.catalog(settings), lake_for(settings)
    for spec in shared.tables(settings):
        if cat.table_exists(spec.iceberg):
            missing = [
                p
                for p in referenced_files(lake, cat.load_table(spec.iceberg))
                if not lake.exists(p)
            ]
            assert not missing, (spec.iceberg, missing[:3])


def test_retention_and_orphan_removal_remove_unreferenced_files_only(settings, contracts):
    validated_zone(settings, contracts, days=6, seed=51, municipalities=WARDS)
    first = publish(settings)
    validated_zone(settings, contracts, days=2, seed=52, municipalities=(WARDS[0],))
    second = publish(settings)
    assert first is not None and second is not None
    rows = {r: _release_rows(settings, r) for r in (first.release_id, second.release_id)}

    # Stray files: one under a table's location, one in the police zone's state.
    visits = shared.catalog(settings).load_table("shared.visits")
    stray = Path(visits.location().removeprefix("file://")) / "data" / "stray.parquet"
    stray.write_bytes(b"not referenced by any snapshot")
    state = settings.lake / "state" / "records" / "visit_outcome" / "stray.parquet"
    state.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"x": [1]}), state)

    report = maintain(settings)
    assert not stray.exists() and not state.exists()
    assert report.orphan_files_removed >= 1 and report.state_files_removed >= 1
    assert report.releases_expired == [] and report.snapshots_expired == 0
    _all_referenced_exist(settings)
    for r, expected in rows.items():
        assert _release_rows(settings, r) == expected

    # Past retention: release 1 expires, with its snapshots and the files only they held.
    later = settings.model_copy(
        update={"now": settings.clock.now() + timedelta(days=settings.release_retention_days + 1)}
    )
    report = maintain(later)
    assert report.releases_expired == [first.release_id]
    assert report.snapshots_expired > 0 and report.orphan_files_removed > 0
    assert report.bytes_freed > 0
    _all_referenced_exist(later)
    assert _release_rows(later, second.release_id) == rows[second.release_id]
    with pytest.raises(ReleaseError, match="expired"):
        get_release(later, first.release_id)
    cat = shared.catalog(later)
    for spec in shared.tables(settings):
        tbl = cat.load_table(spec.iceberg)
        kept = {s.snapshot_id for s in tbl.metadata.snapshots}
        named = get_release(later, second.release_id).tables[spec.name]["snapshot_id"]
        assert named in kept or (named is None and not kept)  # a table never written: empty
    assert maintain(later).orphan_files_removed == 0  # nothing left to remove
