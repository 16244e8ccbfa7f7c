"""Aggregate partitions across releases: carried while unchanged, refreshed within the
privacy budget, never moved by fewer people than a cell may hold (threshold mode)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from visitshare.contracts.model import AggregatePolicy
from visitshare.release.aggregates import SPECS, PartitionState, ValuesStore, release_aggregates

SPEC = SPECS["outcomes_municipality_month"]
MUNI = "13104"
# A fixed instant: only the distances to the months below matter.
AS_OF = datetime(2030, 6, 20, 3, tzinfo=UTC)  # June 2030 is open, May closed (grace 3 days)


def counts(month: str, visits: int, points: int, answers: int, incidents: int = 0) -> pa.Table:
    return pa.table(
        {
            "municipality_code": [MUNI],
            "month": [month],
            "households_visited": pa.array([visits], pa.int64()),
            "visits": pa.array([visits], pa.int64()),
            "visits_completed": pa.array([visits], pa.int64()),
            "satisfaction_points": pa.array([points], pa.int64()),
            "satisfaction_answers": pa.array([answers], pa.int64()),
            "incidents_total": pa.array([incidents], pa.int64()),
        }
    )


class Store:
    """The police-zone values files of `release_aggregates`, in memory."""

    def __init__(self):
        self.files: dict[str, pa.Table] = {}

    def release(self, true, policy, states, as_of, threshold):
        path = f"values-{len(self.files)}"
        table, refreshes, report, stored = release_aggregates(
            SPEC, true, policy, threshold, 3.0, states, as_of, 3,
            ValuesStore(self.files.__getitem__), path,
        )  # fmt: skip
        if stored is not None:
            self.files[path] = stored
        return table, refreshes, report


def release(store, true, policy, states, as_of=AS_OF, threshold=10):
    return store.release(true, policy, states, as_of, threshold)


def state_after(refreshes, as_of, previous: dict | None = None) -> dict:
    states = dict(previous or {})
    for r in refreshes:
        key = (r.municipality_code, r.period)
        old = states.get(key)
        if r.stale:
            continue
        states[key] = PartitionState(
            fingerprint=r.fingerprint,
            path=r.path,
            rho_spent=(old.rho_spent if old else 0.0) + r.rho,
            refreshes=(old.refreshes if old else 0) + 1,
            refreshed_at=as_of,
            release_id=1,
        )
    return states


def test_an_unchanged_partition_is_carried_with_its_noise_and_spends_nothing():
    store, policy = Store(), AggregatePolicy()
    true = counts("2030-05", 120, 300, 100)
    first, refreshes, report = release(store, true, policy, {})
    assert report.partitions_refreshed == 1 and refreshes[0].rho == policy.rho_per_release
    states = state_after(refreshes, AS_OF)
    again, refreshes2, report2 = release(store, true, policy, states, AS_OF + timedelta(days=30))
    assert refreshes2 == [] and report2.partitions_carried == 1 and report2.rho_spent == 0
    assert again == first  # the same noisy values, not a second draw
    assert "satisfaction_points" not in first.column_names  # the mean's inputs stay inside


def test_an_open_month_is_refreshed_at_most_every_refresh_days_and_within_the_cap():
    store = Store()
    policy = AggregatePolicy(rho_per_release=0.5, rho_cap=1.0, refresh_days=7)
    states: dict = {}
    now = AS_OF
    _, refreshes, _ = release(store, counts("2030-06", 50, 100, 40), policy, states, now)
    states = state_after(refreshes, now)
    # the next day, changed: too soon for an open month, last values kept and marked stale
    now += timedelta(days=1)
    _, refreshes, report = release(store, counts("2030-06", 51, 104, 41), policy, states, now)
    assert report.partitions_stale == 1 and refreshes[0].stale and refreshes[0].rho == 0
    # a week later: refreshed, spending the rest of the budget
    now += timedelta(days=7)
    _, refreshes, report = release(store, counts("2030-06", 52, 108, 42), policy, states, now)
    assert report.partitions_refreshed == 1
    states = state_after(refreshes, now, states)
    assert states[(MUNI, "2030-06")].rho_spent == pytest.approx(1.0)
    # the budget is spent: whatever changes, the partition stays as it was, forever
    now += timedelta(days=60)
    _, refreshes, report = release(store, counts("2030-06", 90, 200, 80), policy, states, now)
    assert report.partitions_stale == 1 and report.rho_spent == 0


@pytest.mark.parametrize("new_answers", [1, 2, 9])
def test_threshold_mode_moves_the_mean_only_with_at_least_the_threshold_of_answers(new_answers):
    """Two releases' means must not reveal the satisfaction of fewer than `threshold` people:
    (Σ₂ − Σ₁) / (n₂ − n₁) would be their average, and for one answer their exact score."""
    store, policy = Store(), AggregatePolicy(mode="threshold")
    before = counts("2030-05", 40, 60, 30)
    first, refreshes, _ = release(store, before, policy, {})
    states = state_after(refreshes, AS_OF)
    after = counts("2030-05", 40 + new_answers, 60 + 4 * new_answers, 30 + new_answers)
    second, _, _ = release(store, after, policy, states, AS_OF + timedelta(days=1))
    row1, row2 = first.to_pylist()[0], second.to_pylist()[0]
    assert row2["satisfaction_mean"] == row1["satisfaction_mean"]
    assert row2["visits"] == row1["visits"]  # counts are sticky alike


def test_threshold_mode_moves_a_cell_once_the_change_reaches_the_threshold():
    store, policy = Store(), AggregatePolicy(mode="threshold")
    first, refreshes, _ = release(store, counts("2030-05", 40, 60, 30), policy, {})
    assert first.to_pylist()[0]["visits"] == 40  # exact: threshold mode adds no noise
    states = state_after(refreshes, AS_OF)
    second, _, _ = release(
        store, counts("2030-05", 50, 100, 40), policy, states, AS_OF + timedelta(days=1)
    )
    row = second.to_pylist()[0]
    assert row["visits"] == 50
    assert row["satisfaction_mean"] == pytest.approx(1 + 100 / 40)
