"""The dashboard's pure parts: cell statuses, JSON inside <script>, the data it embeds, the legend,
and the panels of the outcome tables declared in files."""

from __future__ import annotations

import json

import pyarrow as pa

from visitshare.access.dashboard import (
    NOISY,
    PUBLISHED,
    WITHHELD,
    Declared,
    before_after_data,
    cell_status,
    declared_town_data,
    declared_trend_data,
    heatmap_panels,
    humanize,
    legend,
    measures,
    script_json,
    town_data,
    trend_panels,
)
from visitshare.contracts import geography
from visitshare.contracts.roles import record_contracts
from visitshare.release import declared
from visitshare.release.declared import OutcomeDefinition
from visitshare.settings import REPO_ROOT


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


# -- outcome tables declared in files ----------------------------------------------------------
def _declarations() -> dict[str, OutcomeDefinition]:
    folder = REPO_ROOT / "schemas"
    datasets = {c.name: c for c in record_contracts(folder).values()}
    return {d.name: d for d in declared.load(folder, datasets)}


def _by_id(panels) -> dict:
    return {p.id: p for p in panels}


def test_humanize_reads_column_names():
    assert humanize("within_14d_share_welfare_referral") == "within 14 days share welfare referral"
    assert humanize("attending_per_1000_visited_households") == (
        "attending per 1,000 visited households"
    )
    assert humanize("days_0_3") == "days 0–3" and humanize("days_31_plus") == "days 31 plus"


def test_panels_of_the_declared_tables_come_from_their_declarations():
    defs = _declarations()
    requests = defs["requests_town_month"]
    present = [*requests.keys, *(m.column for m in measures(requests))]
    panels = _by_id(heatmap_panels(requests, present))
    assert list(panels) == [
        "requests_town_month-counts",
        "requests_town_month-answer_rate",
        "requests_town_month-within_14d_share_app",
        "requests_town_month-median_days_to_visit",
    ]
    counts = panels["requests_town_month-counts"]
    assert counts.columns[:2] == ("requests", "answered") and len(counts.columns) == 15
    assert dict(counts.moes)["days_0_3"] == "request_counts_moe95"
    share = panels["requests_town_month-within_14d_share_app"]
    assert share.title.startswith("Within 14 days share") and share.fmt == ".0%"
    assert share.labels == ("app", "phone", "counter", "welfare referral")
    assert panels["requests_town_month-median_days_to_visit"].kind == "median"

    surveys = defs["surveys_town_month"]
    present = [*surveys.keys, *(m.column for m in measures(surveys))]
    panels = _by_id(heatmap_panels(surveys, present))
    assert panels["surveys_town_month-safer_share_after_visit"].labels == (
        "after visit",
        "without visit",
    )
    assert panels["surveys_town_month-satisfaction_mean"].title == "Satisfaction mean (1–5)"
    assert not [c for p in panels.values() for c in p.columns if c.startswith("_")]
    trends = _by_id(trend_panels(surveys, "surveys_municipality_month", present))
    assert trends["surveys_municipality_month-counts"].columns == (
        "responses_after_visit",
        "responses_without_visit",
    )
    assert trends["surveys_municipality_month-share"].columns == (
        "safer_share_after_visit",
        "safer_share_without_visit",
        "recommend_share",
    )
    means = trends["surveys_municipality_month-mean_1_5"]
    assert means.columns == ("satisfaction_mean", "feels_safer_mean")
    assert means.domain == (1, 5) and means.title.endswith("(1–5)")

    workshops = defs["workshops_town_month"]
    present = [*workshops.keys, *(m.column for m in measures(workshops))]
    trends = _by_id(trend_panels(workshops, "workshops_municipality_month", present))
    counts = trends["workshops_municipality_month-counts"]
    assert dict(counts.moes) == {
        "households_invited": "visit_counts_moe95",
        "invited_attending": "attendance_counts_moe95",
    }
    per = trends["workshops_municipality_month-per_1_000"]
    assert per.columns == ("attending_per_1000_visited_households",) and per.fmt == ",.1f"
    assert "invited_attendance_share" in trends["workshops_municipality_month-share"].columns


TOY = {
    "name": "patrols_town_month",
    "description": "Patrols per town and month: walked, by car.",
    "level": "town",
    "grain": "town_month",
    "rollup": "patrols_municipality_month",
    "inputs": {"visit_outcome": "visited_at"},
    "sql": "SELECT 1",
    "counts": [
        {"name": "patrol", "columns": ["patrols", "on_foot", "by_car"]},
        {"name": "stop", "columns": ["stops"]},
    ],
    "ratios": {
        "patrol_share_on_foot": ["on_foot", "patrols"],
        "patrol_share_by_car": ["by_car", "patrols"],
        "stops_per_100_patrols": ["stops", "patrols", 100],
    },
}


def test_a_new_declared_table_gets_panels_without_code():
    d = OutcomeDefinition.model_validate(TOY)
    present = [*d.keys, "patrols", "on_foot", "by_car", "stops", *d.ratios]
    panels = _by_id(heatmap_panels(d, present))
    assert panels["patrols_town_month-patrol_share_on_foot"].labels == ("on foot", "by car")
    assert panels["patrols_town_month-stops_per_100_patrols"].kind == "per"
    trends = _by_id(trend_panels(d.rolled_up(), "patrols_municipality_month", present))
    # no featured counts: the first of each count family
    assert trends["patrols_municipality_month-counts"].columns == ("patrols", "stops")
    # a column the table does not have is not shown
    assert "patrols_town_month-stops_per_100_patrols" not in _by_id(
        heatmap_panels(d, [c for c in present if c != "stops_per_100_patrols"])
    )


def _workshop_rows() -> pa.Table:
    code = "13104"
    return pa.table(
        {
            "municipality_code": [code] * 3,
            "town": list(reversed(_towns(code, 3))),
            "month": ["2026-11"] * 3,
            "sessions": [0, 2, 9],
            "households_attending": [3, 40, None],
            "invited_attending": [1, 9, 0],
            "households_visited": [5, 200, 30],
            "households_invited": [2, 30, 3],
            "attending_per_1000_visited_households": [None, 200.0, None],
            "invited_attendance_share": [None, 0.3, None],
            "session_counts_moe95": [4, 4, 4],
            "attendance_counts_moe95": [6, 6, 6],
            "visit_counts_moe95": [6, 6, 6],
        }
    )


def test_declared_town_data_takes_each_count_family_margin_and_never_dots_a_rate():
    d = _declarations()["workshops_town_month"]
    data = declared_town_data(d, _workshop_rows())
    assert data["order"] == [2, 1, 0]
    assert data["s_sessions"] == [NOISY, NOISY, PUBLISHED]  # ±4
    assert data["s_households_attending"] == [NOISY, PUBLISHED, WITHHELD]  # ±6
    # a rate is published or withheld, though the table has a `visit_counts_moe95` column
    assert data["s_attending_per_1000_visited_households"] == [WITHHELD, PUBLISHED, WITHHELD]
    assert data["session_counts_moe95"] == [4, 4, 4]
    assert "_satisfaction_points" not in data


def test_declared_trend_data_is_long_with_each_metric_margin():
    d = _declarations()["workshops_town_month"]
    rows = _workshop_rows().drop_columns(["town"]).slice(1, 1)  # as a municipality row
    data = declared_trend_data(d, "workshops_municipality_month", rows)
    assert data["metric"][:2] == ["households_invited", "invited_attending"]
    assert data["moe"][:2] == [6, 6] and data["status"][:2] == [PUBLISHED, PUBLISHED]
    share = data["metric"].index("invited_attendance_share")
    assert data["moe"][share] is None and data["value"][share] == 0.3
    assert data["label"][0] == "households invited"


def test_legend_covers_the_margins_of_the_declared_tables():
    defs = _declarations()
    town = pa.table({"visits": [3], "visit_counts_moe95": [12], "incident_counts_moe95": [4]})
    ba = pa.table({"incidents_after_90d": [1], "incident_counts_moe95": [2]})
    workshops = Declared(defs["workshops_town_month"], _workshop_rows())
    surveys = Declared(
        defs["surveys_town_month"],
        None,
        pa.table({"responses": [40, 3], "survey_counts_moe95": [25, 27]}),
    )
    text = legend(town, town, ba, [workshops, surveys])
    assert "±12 for visit counts," in text and "±2 for before/after counts" in text
    assert "±4 for session counts (workshops)" in text
    assert "±6 for attendance counts (workshops)" in text
    assert "±25–27 for survey counts (surveys)" in text
    assert "exact" not in text
    # a declared table in threshold mode next to noisy built-in tables: both explained
    exact = Declared(defs["surveys_town_month"], pa.table({"responses": [40, None]}))
    text = legend(town, town, ba, [exact])
    assert "differential privacy" in text and "Counts of surveys are exact" in text
    assert "suppressed" in text
