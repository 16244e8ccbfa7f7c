"""The manifest on SQLite and PostgreSQL: contiguity, conflicts, gaps, resume points."""

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from visitshare.db import engine_for
from visitshare.landing import manifest
from visitshare.settings import Settings


def _file(first, last, partition=0, topic_id="tid-1", path=None):
    return manifest.RawFile(
        topic="visits.outcomes.v1",
        topic_id=topic_id,
        partition=partition,
        first_offset=first,
        last_offset=last,
        row_count=last - first + 1,
        bytes=100,
        sha256="0" * 64,
        path=path or f"raw/v/partition={partition}/{first}-{last}.{topic_id}.parquet",
        run_id="test",
        landed_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_resume_points_come_from_landed_ranges(any_db):
    engine = engine_for(Settings())
    assert manifest.next_offset(engine, "visits.outcomes.v1", "tid-1", 0) is None
    manifest.record_file(engine, _file(0, 99))
    manifest.record_file(engine, _file(100, 149))
    manifest.record_file(engine, _file(0, 9, partition=1))
    assert manifest.next_offset(engine, "visits.outcomes.v1", "tid-1", 0) == 150
    assert manifest.next_offsets(engine, "visits.outcomes.v1", "tid-1") == {0: 150, 1: 10}
    # Another incarnation of the topic starts from scratch.
    assert manifest.next_offsets(engine, "visits.outcomes.v1", "tid-2") == {}
    assert [f.first_offset for f in manifest.files(engine)] == [0, 100, 0]


def test_overlapping_file_is_refused(any_db):
    engine = engine_for(Settings())
    manifest.record_file(engine, _file(0, 99))
    with pytest.raises(manifest.ManifestConflict, match="another lander"):
        manifest.record_file(engine, _file(50, 120, path="other"))
    with pytest.raises(manifest.ManifestConflict, match="another lander"):
        manifest.record_file(engine, _file(0, 99, path="same-range"))
    assert manifest.next_offset(engine, "visits.outcomes.v1", "tid-1", 0) == 100


def test_a_gap_needs_a_reason_and_is_recorded(any_db):
    engine = engine_for(Settings())
    manifest.record_file(engine, _file(0, 99))
    with pytest.raises(manifest.ManifestConflict, match="expected 100"):
        manifest.record_file(engine, _file(150, 199))
    manifest.record_file(engine, _file(150, 199), gap_reason="deleted by retention")
    (gap,) = manifest.gaps(engine)
    assert (gap["from_offset"], gap["to_offset"], gap["reason"]) == (
        100,
        149,
        "deleted by retention",
    )


def test_row_count_must_match_the_offset_range(any_db):
    engine = engine_for(Settings())
    bad = _file(0, 99)
    bad = manifest.RawFile(**{**bad.__dict__, "row_count": 42})
    with pytest.raises(Exception, match=r"(?i)constraint|check"):
        manifest.record_file(engine, bad)


@pytest.mark.parametrize("second", ["same range", "gap after a jump"])
def test_two_writers_of_one_range_exactly_one_wins(any_db, second):
    """A lander that lost its partition (revoked, paused, cut off) commits at the same moment
    as the partition's new owner: one commit wins, the other is refused as a conflict (not a
    database error), whatever the database and whatever the second file claims."""
    engine = engine_for(Settings())
    start = threading.Barrier(2)

    def commit(f, gap_reason=None):
        start.wait()
        try:
            manifest.record_file(engine, f, gap_reason=gap_reason)
            return "won"
        except manifest.ManifestConflict:
            return "refused"

    with ThreadPoolExecutor(2) as pool:
        for n in range(20):
            first = n * 100
            owner = _file(first, first + 99, path=f"owner-{n}")
            if second == "same range":
                late, reason = _file(first, first + 99, path=f"late-{n}"), None
            else:  # it believes offsets first..first+49 were deleted by retention
                late, reason = _file(first + 50, first + 99, path=f"late-{n}"), "jumped"
            outcomes = list(pool.map(commit, [owner, late], [None, reason]))
            assert sorted(outcomes) == ["refused", "won"], f"round {n}: {outcomes}"
    ranges = sorted((f.first_offset, f.last_offset) for f in manifest.files(engine))
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges)), "overlapping files"
