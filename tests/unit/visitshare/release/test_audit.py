"""The audit's attacks, on hand-made releases: differencing, interval bounds, k and l."""

from __future__ import annotations

import pyarrow as pa
import pytest

from visitshare.release.audit import differencing, interval_bounds, record_checks
from visitshare.release.disclosure import Result

VISIT = {
    "municipality_code": "13104", "town": "西新宿", "koban_id": "13104-K01", "town_group": "13104-G09",
    "visited_date": None, "visited_week": None, "visited_month": "2026-10",
    "residents_count": None, "residents_band": "3+", "elderly_only": None,
    "outcome": "completed", "vulnerabilities": ["poor_lighting"],
}  # fmt: skip


def visits(n: int, **change) -> list[dict]:
    return [{**VISIT, **change} for _ in range(n)]


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows)


@pytest.fixture
def roles(contracts):
    return {"visits": contracts.get("visit_outcome"), "incidents": contracts.get("incident_report")}


def test_rows_added_in_a_class_smaller_than_k_are_isolated(roles):
    """Regression (differencing): three late visits for a published town-month showed up
    exactly in the diff of two releases."""
    old = {"visits": table(visits(5))}
    new = {"visits": table(visits(5) + visits(3, outcome="declined"))}
    (check,) = differencing(new, old, roles, 10)
    assert check.result is Result.FAILED and "3 in classes smaller than 5" in check.detail


def test_a_whole_batch_of_k_new_rows_isolates_nobody(roles):
    old = {"visits": table(visits(5))}
    new = {"visits": table(visits(5) + visits(5, visited_month="2026-11"))}
    (check,) = differencing(new, old, roles, 10)
    assert check.result is Result.PASSED and "5 rows appeared" in check.detail


def test_a_row_that_changed_between_releases_is_caught(roles):
    old = {"visits": table(visits(5))}
    new = {"visits": table(visits(4) + visits(1, town=None, koban_id=None))}
    (check,) = differencing(new, old, roles, 10)
    assert check.result is Result.FAILED and "1 rows disappeared or changed" in check.detail


def test_exact_cells_that_move_by_less_than_the_threshold_are_caught(roles):
    cell = {"municipality_code": "13104", "month": "2026-10", "visits": 40}
    old = {"outcomes_municipality_month": table([cell])}
    moved = {"outcomes_municipality_month": table([{**cell, "visits": 43}])}
    (check,) = differencing(moved, old, roles, 10)
    assert (
        check.result is Result.FAILED and "1 published cells moved by less than 10" in check.detail
    )
    noisy = {
        "outcomes_municipality_month": table([{**cell, "visits": 43, "visit_counts_moe95": 12}])
    }
    (check,) = differencing(noisy, old, roles, 10)
    assert check.result is Result.PASSED


def test_a_lone_suppressed_cell_is_recovered_from_the_municipality_total():
    town = [
        {"municipality_code": "13104", "town": t, "month": "2026-10", "visits": v}
        for t, v in (("a", 40), ("b", None), ("c", 25))
    ]
    muni = [{"municipality_code": "13104", "month": "2026-10", "visits": 72}]
    check = interval_bounds(
        {"outcomes_town_month": table(town), "outcomes_municipality_month": table(muni)}
    )
    assert check.result is Result.FAILED and "1 of 1 suppressed cells recoverable" in check.detail
    town[0]["visits"] = None  # two hidden cells: only their sum is known
    check = interval_bounds(
        {"outcomes_town_month": table(town), "outcomes_municipality_month": table(muni)}
    )
    assert check.result is Result.PASSED


def test_k_and_l_are_recomputed_from_the_rows(roles):
    allowed = set(VISIT)
    rows = visits(4) + visits(1, residents_band="1")
    checks = {c.name: c for c in record_checks(table(rows), roles["visits"], "visits", allowed)}
    assert checks["visits: k-anonymity"].result is Result.FAILED  # the fifth row is alone
    assert checks["visits: 3-diversity of vulnerabilities"].result is Result.FAILED
    diverse = [*visits(5, vulnerabilities=["a"]), *visits(5, vulnerabilities=["b"])]
    diverse = [
        dict(r, vulnerabilities=v) for r, v in zip(diverse, [["a"], ["b"], ["c"]] * 4, strict=False)
    ]
    checks = {c.name: c for c in record_checks(table(diverse), roles["visits"], "visits", allowed)}
    assert checks["visits: k-anonymity"].result is Result.PASSED
    assert checks["visits: 3-diversity of vulnerabilities"].result is Result.PASSED
    extra = {
        c.name: c
        for c in record_checks(table(visits(5, officer="P1")), roles["visits"], "visits", allowed)
    }
    assert extra["visits: columns"].result is Result.FAILED


def test_a_sensitive_value_hidden_inside_a_list_item_is_caught(roles):
    """Regression: `["burglary;stalking"]` hid a sensitive concern from the list check and
    was published at town level; the gate catches it on its own (and the unknown item)."""
    rows = visits(5, concerns=["burglary;stalking"])
    checks = {
        c.name: c for c in record_checks(table(rows), roles["visits"], "visits", set(rows[0]))
    }
    assert checks["visits: sensitive concerns values"].result is Result.FAILED
    assert checks["visits: concerns values in the contract"].result is Result.FAILED
    fine = visits(5, concerns=["burglary"])
    checks = {
        c.name: c for c in record_checks(table(fine), roles["visits"], "visits", set(fine[0]))
    }
    assert checks["visits: sensitive concerns values"].result is Result.PASSED
