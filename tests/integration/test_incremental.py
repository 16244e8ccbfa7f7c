"""Incremental releases: only the partitions that changed are recomputed and replaced, and
the result is the same as a full rebuild of the same inputs."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from tests.helpers import validated_zone
from visitshare.db import engine_for
from visitshare.release import shared
from visitshare.release.publish import publish
from visitshare.release.records import last_closed_month
from visitshare.release.releases import files_of, get_release, read_table

WARDS = ("13104", "13112")


def _rows(table: pa.Table) -> list[str]:
    """A table as a sorted list of rows (a multiset: order is not part of a release)."""
    cols = sorted(table.column_names)
    return sorted(json.dumps([r[c] for c in cols], default=str) for r in table.to_pylist())


def _sql(settings, name: str, release_id: int) -> list[str]:
    with engine_for(settings).connect() as conn:
        t = sa.Table(name, sa.MetaData(), autoload_with=conn)
        rows = conn.execute(sa.select(t).where(shared.in_release(t, release_id))).mappings().all()
    keep = [c.name for c in t.c if c.name not in ("release_id", "superseded_by")]
    return sorted(json.dumps([r[c] for c in keep], default=str) for r in rows)


def _files(settings, release_id: int) -> dict[str, set[tuple[str, str, str]]]:
    """table → (municipality, period, path) of every file release N shows."""
    with engine_for(settings).connect() as conn:
        rows = files_of(conn, release_id)
    out: dict[str, set[tuple[str, str, str]]] = {}
    for r in rows:
        out.setdefault(r.table_name, set()).add((r.municipality_code, r.period, r.path))
    return out


def _grace(contracts) -> int:
    return contracts.get("visit_outcome").disclosure.close_after_days


def _check_files(settings, release_id: int) -> None:
    """Every file of a release holds the rows the map says, all of its partition's
    municipality (and month, where the table has one), and the snapshot reads exactly them."""
    release = get_release(settings, release_id)
    for spec in shared.tables(settings):
        total = 0
        for muni, period, path in _files(settings, release_id).get(spec.name, set()):
            t = pq.read_table(path.removeprefix("file://"))
            total += t.num_rows
            assert set(t.column("municipality_code").to_pylist()) == {muni}, (spec.name, path)
            if spec.period == "month":
                assert set(t.column("month").to_pylist()) == {period}, (spec.name, path)
        assert read_table(settings, release, spec.name).num_rows == total, spec.name
        assert release.tables[spec.name]["rows"] == total, spec.name


def _partitions(settings, release_id: int, name: str) -> dict[tuple[str, str], list[str]]:
    """The rows of each partition of a table in release N, read from its files."""
    out: dict[tuple[str, str], list[str]] = {}
    for m, p, path in _files(settings, release_id).get(name, set()):
        out.setdefault((m, p), []).extend(_rows(pq.read_table(path.removeprefix("file://"))))
    return {k: sorted(v) for k, v in out.items()}


@pytest.fixture
def late_month(settings, contracts):
    """The latest closed month and a day in it (late events for it arrive after release 1)."""
    month = last_closed_month(settings.clock.now(), _grace(contracts))
    return month, date(int(month[:4]), int(month[5:7]), 10)


def test_a_late_event_replaces_only_its_partitions_and_equals_a_full_rebuild(
    settings, contracts, late_month
):
    month, day = late_month
    validated_zone(settings, contracts, days=6, seed=21, municipalities=WARDS)
    first = publish(settings)
    assert first is not None and get_release(settings, first.release_id).full
    before = _files(settings, first.release_id)

    # Late events of one day for one ward only, in a month release 1 already closed.
    validated_zone(settings, contracts, days=1, seed=22, municipalities=(WARDS[0],), start=day)
    second = publish(settings)
    assert second is not None
    row = get_release(settings, second.release_id)
    assert row.full is False
    after = _files(settings, second.release_id)
    for name in ("visits", "incidents", "outcomes_town_month", "outcomes_municipality_month"):
        gone = before[name] - after[name]
        added = after[name] - before[name]
        assert gone and added, name
        # only the late ward's late month was replaced; every other file is carried as it was
        assert {(m, p) for m, p, _ in gone | added} == {(WARDS[0], month)}, name
        assert {f for f in before[name] if f[0] == WARDS[1]} <= after[name], name
    assert {(m, p) for m, p, _ in before["before_after_town"] - after["before_after_town"]} <= {
        (WARDS[0], shared.ALL)
    }

    # The Iceberg snapshot of the release replaced exactly those files, in one snapshot.
    cat = shared.catalog(settings)
    visits = cat.load_table("shared.visits")
    snap = visits.snapshot_by_id(row.tables["visits"]["snapshot_id"])
    assert snap.summary.operation.value == "overwrite"
    assert (
        snap.parent_snapshot_id
        == get_release(settings, first.release_id).tables["visits"]["snapshot_id"]
    )
    gone = before["visits"] - after["visits"]
    assert int(snap.summary["deleted-data-files"]) == len(gone)
    assert int(snap.summary["added-data-files"]) == len(after["visits"] - before["visits"])

    for rid in (first.release_id, second.release_id):
        _check_files(settings, rid)
    # A full rebuild of the same inputs gives the same tables, partition by partition.
    third = publish(settings, force=True, full=True)
    _check_files(settings, third.release_id)
    assert third is not None and get_release(settings, third.release_id).full
    inc, full = get_release(settings, second.release_id), get_release(settings, third.release_id)
    for spec in shared.tables(settings):
        a, b = read_table(settings, inc, spec.name), read_table(settings, full, spec.name)
        assert a.num_rows == inc.tables[spec.name]["rows"]
        assert _rows(a) == _rows(b), spec.name
        pa_, pb = (
            _partitions(settings, inc.id, spec.name),
            _partitions(settings, full.id, spec.name),
        )
        assert set(pa_) == set(pb), spec.name
        for key in pa_:
            assert pa_[key] == pb[key], (spec.name, key)
        if spec.sql:
            assert _sql(settings, spec.sql, inc.id) == _sql(settings, spec.sql, full.id)
            assert len(_sql(settings, spec.sql, inc.id)) == a.num_rows
    # and release 1 still reads as it was (time travel through carried files)
    assert (
        read_table(settings, get_release(settings, 1), "visits").num_rows
        == (first.tables["visits"]["rows"])
    )


def test_nothing_new_makes_no_release_and_a_forced_one_carries_everything(settings, contracts):
    validated_zone(settings, contracts, days=3, seed=23, municipalities=WARDS)
    first = publish(settings)
    assert publish(settings) is None
    again = publish(settings, force=True)
    assert again is not None
    assert _files(settings, again.release_id) == _files(settings, first.release_id)
    for spec in shared.tables(settings):
        a = read_table(settings, get_release(settings, first.release_id), spec.name)
        b = read_table(settings, get_release(settings, again.release_id), spec.name)
        assert _rows(a) == _rows(b), spec.name


def test_a_month_that_closes_is_recomputed_without_new_rows(settings, contracts):
    """Rows of an open month are held; when the month closes (the clock moves on), the next
    release recomputes that month's partitions although nothing new was validated."""
    month = last_closed_month(settings.clock.now(), _grace(contracts))
    # A clock on the 6th of a month that is open (two months after the latest closed one).
    first_day = (date(int(month[:4]), int(month[5:7]), 1) + timedelta(days=70)).replace(day=1)
    opened = settings.model_copy(
        update={"now": datetime.combine(first_day + timedelta(days=5), time(12), tzinfo=UTC)}
    )
    validated_zone(opened, contracts, days=3, seed=24, municipalities=WARDS, start=first_day)
    first = publish(opened)
    assert first is not None and first.tables["visits"]["rows"] == 0  # open month: held
    assert publish(opened) is None
    later = opened.model_copy(update={"now": opened.clock.now() + timedelta(days=45)})
    second = publish(later)
    assert second is not None
    assert get_release(later, second.release_id).full is False
    assert second.tables["visits"]["rows"] > 0


def test_months_sharing_an_iceberg_partition_keep_their_own_files(settings, contracts):
    """Two months of one municipality lie in one Iceberg partition of the tables partitioned
    by municipality (repeat_victimization; visits whose dates are generalized away): each
    month's file has its own name, and the release reads every row once."""
    month = last_closed_month(settings.clock.now(), _grace(contracts))
    start = date(int(month[:4]), int(month[5:7]), 1) - timedelta(days=10)
    validated_zone(settings, contracts, days=20, seed=25, municipalities=(WARDS[0],), start=start)
    first = publish(settings)
    assert first is not None
    files = _files(settings, first.release_id)
    release = get_release(settings, first.release_id)
    for spec in shared.tables(settings):
        paths = [path for _, _, path in files.get(spec.name, set())]
        assert len(paths) == len(set(paths)), spec.name
        assert (
            read_table(settings, release, spec.name).num_rows == release.tables[spec.name]["rows"]
        )
    assert len({p for _, p, _ in files["repeat_victimization"]}) == 2


def test_held_late_rows_wait_for_new_ones_the_same_in_a_full_rebuild(settings, contracts):
    """Late rows in classes smaller than k wait in their partition until more late rows come.
    A full rebuild must not decide them on their own: it decides exactly what the incremental
    releases decided, before and after the next late rows arrive."""

    def held(published) -> int:
        return sum(d.rows_held for d in published.report.datasets)

    def same(a: int, b: int) -> None:
        for spec in shared.tables(settings):
            ta = read_table(settings, get_release(settings, a), spec.name)
            tb = read_table(settings, get_release(settings, b), spec.name)
            assert _rows(ta) == _rows(tb), spec.name

    validated_zone(settings, contracts, days=4, seed=31, municipalities=WARDS)
    publish(settings)
    for seed in (32, 33):  # late rows for the same days, twice
        validated_zone(settings, contracts, days=4, seed=seed, municipalities=WARDS)
        incremental = publish(settings)
        assert incremental is not None and "incremental" in incremental.report.scope
        full = publish(settings, force=True, full=True)
        assert full is not None and full.report.scope == "full"
        assert held(full) == held(incremental)  # what waited still waits
        same(incremental.release_id, full.release_id)
