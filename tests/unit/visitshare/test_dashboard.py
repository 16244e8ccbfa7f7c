"""The dashboard's pure parts: cell statuses, JSON inside <script>, the data it embeds, the legend."""

from __future__ import annotations

import json

import pyarrow as pa

from visitshare.access.dashboard import (
    NOISY,
    PUBLISHED,
    WITHHELD,
    before_after_data,
    cell_status,
    legend,
    script_json,
    town_data,
)
from visitshare.contracts import geography


def test_cell_status():
    assert cell_status(None, 12) == WITHHELD
    assert cell_status(None, None) == WITHHELD
    assert cell_status(0, 12) == NOISY
    assert cell_status(12, 12) == NOISY  # no larger than its margin: may be 0
    assert cell_status(13, 12) == PUBLISHED
    assert cell_status(0, None) == PUBLISHED  # exact (threshold mode) or a rate
    assert cell_status(0.4, None) == PUBLISHED


def test_script_json_cannot_close_the_script_tag():
    hostile = ["</script><script>alert(1)</script>", "<!-- x", "a & b > c", "町名 </SCRIPT >"]
    text = script_json({"town": hostile})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"town": hostile}


def _towns(code: str, n: int) -> list[str]:
    return list(geography.municipality(code).towns[:n])


def test_town_data_keeps_the_shown_columns_with_their_statuses():
    code = "13104"
    towns = _towns(code, 3)
    table = pa.table(
        {
            "municipality_code": [code] * 3,
            "town": list(reversed(towns)),
            "month": ["2026-11"] * 3,
            "visits": [30, 5, 0],
            "visits_completed": [20, 4, 0],
            "completion_rate": [0.67, None, None],
            "vulnerabilities_weak_door_lock": [13, 12, 1],
            "recommendations_lock_windows": [3, 2, 1],
            "incidents_total": [4, 9, 0],
            "incidents_per_1000_visited_households": [None, 21.5, None],
            "visit_counts_moe95": [12, 12, 12],
            "incident_counts_moe95": [4, 4, 4],
        }
    )
    data = town_data(table)
    assert data["order"] == [2, 1, 0]  # Japan Post's order of the municipality's towns
    assert data["s_visits"] == [PUBLISHED, NOISY, NOISY]
    assert data["s_completion_rate"] == [PUBLISHED, WITHHELD, WITHHELD]
    assert data["s_vulnerabilities_weak_door_lock"] == [PUBLISHED, NOISY, NOISY]
    assert data["s_incidents_per_1000_visited_households"] == [WITHHELD, PUBLISHED, WITHHELD]
    assert data["visit_counts_moe95"] == [12, 12, 12]
    # only what a panel shows leaves for the page
    assert "recommendations_lock_windows" not in data and "visits_completed" not in data


def test_before_after_data_is_long_with_incident_margins():
    code = "13112"
    towns = _towns(code, 2)
    table = pa.table(
        {
            "municipality_code": [code] * 2,
            "town": towns,
            "first_completed_visit": pa.array([0, 1], pa.int32()).cast(pa.date32()),
            "incidents_before_90d": [1, None],
            "incidents_after_90d": [5, 0],
            "incident_counts_moe95": [2, 2],
        }
    )
    data = before_after_data(table)
    assert data["metric"] == ["incidents_before_90d"] * 2 + ["incidents_after_90d"] * 2
    assert data["value"] == [1, None, 5, 0]
    assert data["status"] == [NOISY, WITHHELD, PUBLISHED, NOISY]
    assert data["town"] == towns * 2 and data["order"] == [0, 1, 0, 1]
    assert json.loads(script_json(data))["first_completed_visit"][0] == "1970-01-01"


def test_legend_states_the_margins_the_tables_hold_or_the_threshold():
    noisy = pa.table({"visits": [3], "visit_counts_moe95": [9], "incident_counts_moe95": [3]})
    varied = pa.table({"visits": [3, 4], "visit_counts_moe95": [9, 11]})
    ba = pa.table({"incidents_after_90d": [1], "incident_counts_moe95": [2]})
    text = legend(noisy, varied, ba)
    assert "differential privacy" in text
    assert "±9–11 for visit counts" in text and "±3 for incident counts" in text
    assert "±2 for before/after counts" in text
    exact = pa.table({"visits": [30, None]})
    text = legend(exact, exact, pa.table({"incidents_after_90d": [None]}))
    assert "exact" in text and "suppressed" in text and "±" not in text
