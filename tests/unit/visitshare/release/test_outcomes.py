"""Programme outcomes from police-zone visits and incidents, and their suppression for sharing."""

from datetime import date, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from visitshare.quality.validate import validated_schema
from visitshare.release.anonymize import pseudonymize
from visitshare.release.outcomes import (
    Categories,
    before_after,
    outcome_tables,
    repeat_victimization,
    suppress,
)

JST = timezone(timedelta(hours=9))
KEY = b"test-key-0123456789abcdef-0123456"
MUNI = "13104"
W, K = "西新宿", "歌舞伎町"  # two towns of Shinjuku


def at(y, m, d, hour=10, minute=0) -> datetime:
    return datetime(y, m, d, hour, minute, tzinfo=JST)


def hh(n: int) -> str:
    return f"HH-13104-0001-{n:05d}"


def visits_table(contracts, rows: list[dict]) -> pa.Table:
    """Police-zone visits: validated rows plus the household pseudonym."""
    base = {
        "event_id": "0b7e6f2e-8d7f-4c0f-9a49-6a3c1f0f2a11",
        "schema_version": 1,
        "produced_at": at(2026, 11, 20),
        "visit_id": "V-13104-AB12CD34",
        "resident_name": "山田 太郎",
        "phone": "03-1234-5678",
        "address_line": "東京都新宿区西新宿2-8-1",
        "municipality_code": MUNI,
        "koban_id": "13104-K01",
        "officer_id": "P123456",
        "outcome": "completed",
        "residents_count": 2,
        "elderly_only": False,
        "vulnerabilities": [],
        "recommendations": [],
        "materials": [],
        "workshop_invited": False,
        "concerns": [],
        "follow_up_requested": False,
        "satisfaction": None,
        "notes": None,
        "source_topic": "visits.outcomes.v1",
        "source_partition": 0,
        "source_offset": 0,
    }
    contract = contracts.get("visit_outcome")
    t = pa.Table.from_pylist([{**base, **r} for r in rows], schema=validated_schema(contract))
    return t.append_column(
        "household_pseudonym", pseudonymize(t.column("household_id"), KEY, "household")
    )


def incidents_table(contracts, rows: list[dict]) -> pa.Table:
    base = {
        "event_id": "1c8f7a3f-9e8a-4d1a-8b5a-7b4d2a1a3b22",
        "schema_version": 1,
        "produced_at": at(2026, 11, 20),
        "incident_id": "I-13104-00ABCDEF12",
        "municipality_code": MUNI,
        "latitude": None,
        "longitude": None,
        "address_line": None,
        "victim_household_id": None,
        "victim_age_band": "unknown",
        "status": "reported",
        "narrative": None,
        "source_topic": "incidents.reports.v1",
        "source_partition": 0,
        "source_offset": 0,
    }
    contract = contracts.get("incident_report")
    rows = [{"reported_at": r["occurred_at"], **base, **r} for r in rows]
    t = pa.Table.from_pylist(rows, schema=validated_schema(contract))
    return t.append_column(
        "victim_household_pseudonym",
        pseudonymize(t.column("victim_household_id"), KEY, "household"),
    )


@pytest.fixture(scope="module")
def categories(contracts) -> Categories:
    return Categories.from_contracts(
        contracts.get("visit_outcome"), contracts.get("incident_report")
    )


def test_categories_come_from_the_contracts(categories):
    assert categories.crimes_sensitive == ["sexual_offence", "domestic_violence"]
    assert categories.concerns_sensitive == ["stalking", "domestic_violence"]
    assert "bicycle_theft" in categories.crimes and "sexual_offence" in categories.crimes
    assert categories.outcomes == ["completed", "not_home", "declined", "rescheduled"]
    assert "weak_door_lock" in categories.vulnerabilities


# -- town × month and municipality × month ---------------------------------------------------------
@pytest.fixture
def tables(contracts, categories):
    visits = visits_table(
        contracts,
        [
            # 西新宿, October: households 1 and 2, three visits, two completed
            dict(household_id=hh(1), town=W, visited_at=at(2026, 10, 5), satisfaction=5,
                 vulnerabilities=["weak_door_lock", "poor_lighting"], concerns=["burglary", "stalking"]),
            dict(household_id=hh(1), town=W, visited_at=at(2026, 10, 20), satisfaction=2,
                 vulnerabilities=["weak_door_lock"]),
            dict(household_id=hh(2), town=W, visited_at=at(2026, 10, 21), outcome="not_home",
                 vulnerabilities=None, concerns=None),
            # 西新宿, November in Tokyo (00:30 on 1 Nov +09:00 is 31 Oct in UTC)
            dict(household_id=hh(3), town=W, visited_at=at(2026, 11, 1, 0, 30), satisfaction=4,
                 concerns=["domestic_violence"]),
            # 歌舞伎町, October
            dict(household_id=hh(4), town=K, visited_at=at(2026, 10, 10), satisfaction=3,
                 vulnerabilities=["no_intercom"]),
        ],
    )  # fmt: skip
    incidents = incidents_table(
        contracts,
        [
            dict(town=W, occurred_at=at(2026, 10, 7), crime_type="burglary_vacant_home",
                 victim_household_id=hh(1)),
            dict(town=W, occurred_at=at(2026, 10, 25), crime_type="bicycle_theft"),
            dict(town=W, occurred_at=at(2026, 10, 26), crime_type="sexual_offence"),
            # 歌舞伎町 in November: incidents, no visits
            dict(town=K, occurred_at=at(2026, 11, 15), crime_type="bicycle_theft"),
        ],
    )  # fmt: skip
    return outcome_tables(visits, incidents, categories)


def by_key(t: pa.Table) -> dict[tuple, dict]:
    """Rows by (town, month), or (month,) for the municipality table."""
    return {tuple(r[k] for k in ("town", "month") if k in r): r for r in t.to_pylist()}


def test_town_month_rows(tables):
    town = by_key(tables["town_month"])
    assert sorted(town) == sorted([(W, "2026-10"), (W, "2026-11"), (K, "2026-10"), (K, "2026-11")])
    w10 = town[(W, "2026-10")]
    assert w10["municipality_code"] == MUNI
    assert w10["households_visited"] == 2  # hh1 (twice), hh2
    assert w10["visits"] == 3 and w10["visits_completed"] == 2
    assert w10["completion_rate"] == pytest.approx(2 / 3)
    assert w10["satisfaction_mean"] == pytest.approx(3.5)  # (5 + 2) / 2, the not_home one has none
    assert w10["vulnerabilities_weak_door_lock"] == 2 and w10["vulnerabilities_poor_lighting"] == 1
    assert w10["vulnerabilities_no_intercom"] == 0
    assert w10["concerns_burglary"] == 1
    # burglary_vacant_home + bicycle_theft; the sexual offence is not at town level
    assert w10["incidents_burglary_vacant_home"] == 1 and w10["incidents_bicycle_theft"] == 1
    assert w10["incidents_total"] == 2
    assert w10["incidents_per_1000_visited_households"] == pytest.approx(1000.0)  # 2 / 2 * 1000

    w11 = town[(W, "2026-11")]  # the 00:30 visit counts in November (Tokyo time)
    assert (w11["households_visited"], w11["visits"], w11["visits_completed"]) == (1, 1, 1)
    assert w11["satisfaction_mean"] == pytest.approx(4.0) and w11["completion_rate"] == 1.0
    assert w11["incidents_total"] == 0 and w11["incidents_per_1000_visited_households"] == 0.0

    k10 = town[(K, "2026-10")]
    assert (k10["households_visited"], k10["visits"], k10["vulnerabilities_no_intercom"]) == (
        1,
        1,
        1,
    )
    assert k10["incidents_total"] == 0


def test_town_month_with_incidents_and_no_visits(tables):
    k11 = by_key(tables["town_month"])[(K, "2026-11")]
    assert k11["municipality_code"] == MUNI
    assert (k11["households_visited"], k11["visits"], k11["visits_completed"]) == (0, 0, 0)
    assert k11["vulnerabilities_weak_door_lock"] == 0
    assert k11["incidents_bicycle_theft"] == 1 and k11["incidents_total"] == 1
    # no visits: no rate, no mean, no rate per visited household
    assert k11["completion_rate"] is None and k11["satisfaction_mean"] is None
    assert k11["incidents_per_1000_visited_households"] is None


def test_municipality_month_rows(tables):
    muni = by_key(tables["municipality_month"])
    assert sorted(muni) == [("2026-10",), ("2026-11",)]
    m10 = muni[("2026-10",)]
    assert m10["households_visited"] == 3  # hh1, hh2, hh4
    assert m10["visits"] == 4 and m10["visits_completed"] == 3
    assert m10["satisfaction_mean"] == pytest.approx(10 / 3)  # (5 + 2 + 3) / 3
    assert m10["concerns_stalking"] == 1 and m10["concerns_domestic_violence"] == 0
    assert m10["incidents_sexual_offence"] == 1
    assert m10["incidents_total"] == 3  # burglary + bicycle theft + sexual offence
    assert m10["incidents_per_1000_visited_households"] == pytest.approx(1000.0)  # 3 / 3 * 1000
    m11 = muni[("2026-11",)]
    assert m11["households_visited"] == 1 and m11["concerns_domestic_violence"] == 1
    assert m11["incidents_total"] == 1  # the 歌舞伎町 bicycle theft
    assert m11["incidents_per_1000_visited_households"] == pytest.approx(1000.0)  # 1 / 1 * 1000


def test_sensitive_categories_are_municipality_columns_only(tables, categories):
    town_cols = set(tables["town_month"].column_names)
    muni_cols = set(tables["municipality_month"].column_names)
    sensitive = {f"incidents_{c}" for c in categories.crimes_sensitive} | {
        f"concerns_{c}" for c in categories.concerns_sensitive
    }
    assert len(sensitive) == 4
    assert sensitive.isdisjoint(town_cols)
    assert sensitive <= muni_cols
    assert "incidents_bicycle_theft" in town_cols and "concerns_burglary" in town_cols


def test_count_columns_have_no_nulls(tables):
    t = tables["town_month"]
    derived = {"satisfaction_mean", "completion_rate", "incidents_per_1000_visited_households"}
    counts = [
        c for c in t.column_names if c not in {"municipality_code", "town", "month", *derived}
    ]
    assert len(counts) > 40
    assert all(t.column(c).null_count == 0 and t.schema.field(c).type == pa.int64() for c in counts)


def test_town_month_does_not_reveal_a_sensitive_only_town_month(contracts, categories):
    visits = visits_table(contracts, [dict(household_id=hh(1), town=W, visited_at=at(2026, 12, 1))])
    incidents = incidents_table(
        contracts, [dict(town=K, occurred_at=at(2026, 12, 3), crime_type="domestic_violence")]
    )
    out = outcome_tables(visits, incidents, categories)
    assert out["municipality_month"].column("incidents_domestic_violence").to_pylist() == [1]
    towns = out["town_month"].column("town").to_pylist()
    assert towns == [W]


# -- before / after the first completed visit ------------------------------------------------------
def test_before_after_windows(contracts, categories):
    d = date(2026, 6, 1)

    def day(offset: int, hour: int = 12, minute: int = 0) -> datetime:
        x = d + timedelta(days=offset)
        return at(x.year, x.month, x.day, hour, minute)

    visits = visits_table(
        contracts,
        [
            dict(household_id=hh(1), town=W, visited_at=day(-30), outcome="not_home"),  # not first
            # 00:15 on D in Tokyo (D-1 in UTC): the first completed visit is D
            dict(household_id=hh(2), town=W, visited_at=day(0, 0, 15)),
            dict(household_id=hh(3), town=W, visited_at=day(5)),
            dict(household_id=hh(4), town=K, visited_at=day(0), outcome="not_home"),
        ],
    )
    incidents = incidents_table(
        contracts,
        [
            dict(town=W, occurred_at=day(-91), crime_type="bicycle_theft"),  # outside
            # 00:30 on D-90 in Tokyo (D-91 in UTC): inside, before
            dict(town=W, occurred_at=day(-90, 0, 30), crime_type="bicycle_theft"),
            dict(town=W, occurred_at=day(-1), crime_type="burglary_vacant_home"),  # before
            dict(town=W, occurred_at=day(-1), crime_type="sexual_offence"),  # not counted
            dict(town=W, occurred_at=day(0), crime_type="bicycle_theft"),  # after
            dict(town=W, occurred_at=day(89, 23, 30), crime_type="vandalism"),  # after
            # 08:00 on D+90 in Tokyo (D+89 in UTC): outside
            dict(town=W, occurred_at=day(90, 8), crime_type="bicycle_theft"),
            dict(town=K, occurred_at=day(1), crime_type="bicycle_theft"),  # another town
        ],
    )
    out = before_after(visits, incidents, categories)
    assert out.to_pylist() == [
        {
            "municipality_code": MUNI,
            "town": W,
            "first_completed_visit": d,
            "incidents_before_90d": 2,  # D-90, D-1
            "incidents_after_90d": 2,  # D, D+89
        }
    ]


def test_before_after_town_without_incidents(contracts, categories):
    visits = visits_table(contracts, [dict(household_id=hh(1), town=W, visited_at=at(2026, 6, 1))])
    incidents = incidents_table(
        contracts, [dict(town=K, occurred_at=at(2026, 6, 2), crime_type="bicycle_theft")]
    )
    rows = before_after(visits, incidents, categories).to_pylist()
    assert [(r["town"], r["incidents_before_90d"], r["incidents_after_90d"]) for r in rows] == [
        (W, 0, 0)
    ]


# -- repeat victimization --------------------------------------------------------------------------
def test_repeat_victimization(contracts):
    visits = visits_table(
        contracts,
        [
            dict(household_id=hh(1), town=W, visited_at=at(2026, 6, 1)),
            dict(household_id=hh(1), town=W, visited_at=at(2026, 6, 10)),
            dict(household_id=hh(2), town=W, visited_at=at(2026, 6, 5)),
            dict(household_id=hh(3), town=K, visited_at=at(2026, 6, 2)),
        ],
    )
    incidents = incidents_table(
        contracts,
        [
            dict(town=W, occurred_at=at(2026, 6, 15, 9), crime_type="burglary_vacant_home",
                 victim_household_id=hh(1)),
            # before household 2's only visit: no row
            dict(town=W, occurred_at=at(2026, 6, 3), crime_type="bicycle_theft",
                 victim_household_id=hh(2)),
            # two identical incidents: two rows
            dict(town=K, occurred_at=at(2026, 6, 20), crime_type="bicycle_theft",
                 victim_household_id=hh(3)),
            dict(town=K, occurred_at=at(2026, 6, 20), crime_type="bicycle_theft",
                 victim_household_id=hh(3)),
            # no victim household: no row
            dict(town=W, occurred_at=at(2026, 6, 20), crime_type="shoplifting"),
        ],
    )  # fmt: skip
    out = repeat_victimization(visits, incidents)
    pseudonym = dict(
        zip(visits.column("household_id").to_pylist(), visits.column("household_pseudonym").to_pylist(), strict=True)
    )  # fmt: skip
    # ordered by municipality, town, occurred date: 歌舞伎町 (U+6B4C) before 西新宿 (U+897F)
    assert out.to_pylist() == [
        {
            "municipality_code": MUNI,
            "town": K,
            "household_pseudonym": pseudonym[hh(3)],
            "crime_type": "bicycle_theft",
            "occurred_date": date(2026, 6, 20),
            "last_visit_date": date(2026, 6, 2),
            "days_since_visit": 18,  # 20 - 2
            "visits_before": 1,
        }
    ] * 2 + [
        {
            "municipality_code": MUNI,
            "town": W,
            "household_pseudonym": pseudonym[hh(1)],
            "crime_type": "burglary_vacant_home",
            "occurred_date": date(2026, 6, 15),
            "last_visit_date": date(2026, 6, 10),
            "days_since_visit": 5,  # 15 - 10
            "visits_before": 2,  # 1 and 10 June
        }
    ]
    assert "household_id" not in out.column_names


# -- suppression -----------------------------------------------------------------------------------
def _town_month(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"municipality_code": MUNI, "month": "2026-11", **r} for r in rows],
        schema=pa.schema(
            [
                ("municipality_code", pa.string()),
                ("town", pa.string()),
                ("month", pa.string()),
                ("households_visited", pa.int64()),
                ("visits", pa.int64()),
                ("visits_completed", pa.int64()),
                ("satisfaction_mean", pa.float64()),
                ("incidents_burglary_vacant_home", pa.int64()),
                ("incidents_bicycle_theft", pa.int64()),
                ("incidents_total", pa.int64()),
                ("completion_rate", pa.float64()),
                ("incidents_per_1000_visited_households", pa.float64()),
            ]
        ),
    )


def test_suppress_town_month_by_hand():
    t = _town_month(
        [
            dict(town=W, households_visited=40, visits=50, visits_completed=12,
                 satisfaction_mean=4.0, incidents_burglary_vacant_home=3,
                 incidents_bicycle_theft=20, incidents_total=23, completion_rate=12 / 50,
                 incidents_per_1000_visited_households=575.0),
            dict(town=K, households_visited=5, visits=30, visits_completed=8,
                 satisfaction_mean=3.5, incidents_burglary_vacant_home=0,
                 incidents_bicycle_theft=12, incidents_total=12, completion_rate=8 / 30,
                 incidents_per_1000_visited_households=2400.0),
        ]
    )  # fmt: skip
    out, report = suppress(t, "town_month", ["municipality_code", "month"], 10, column_totals=False)
    w, k = out.to_pylist()
    # W: burglary 3 is primary; incidents_total is published, so bicycle theft 20 goes too
    assert w["incidents_burglary_vacant_home"] is None and w["incidents_bicycle_theft"] is None
    assert (w["households_visited"], w["visits"], w["visits_completed"]) == (40, 50, 12)
    assert w["incidents_total"] == 23
    assert w["completion_rate"] == pytest.approx(0.24) and w["satisfaction_mean"] == 4.0
    assert w["incidents_per_1000_visited_households"] == 575.0
    # K: households 5 and completed 8 are primary; 0 and 12 published
    assert k["households_visited"] is None and k["visits_completed"] is None
    assert k["visits"] == 30
    assert (k["incidents_burglary_vacant_home"], k["incidents_bicycle_theft"]) == (0, 12)
    assert k["incidents_total"] == 12
    # derived values of suppressed counts are withheld too
    assert k["completion_rate"] is None  # visits_completed suppressed
    assert k["satisfaction_mean"] is None  # mean over 8 < 10 completed visits
    assert k["incidents_per_1000_visited_households"] is None  # households_visited suppressed
    # 2 rows x (2 incident columns + households, visits, completed, total) = 12 cells
    assert (report.cells, report.primary, report.secondary) == (12, 3, 1)
    assert report.derived_nulled == 3
    assert report.table == "town_month"


def test_suppress_along_columns_within_a_group():
    t = _town_month(
        [
            dict(town=W, households_visited=40, visits=50, visits_completed=20,
                 satisfaction_mean=4.0, incidents_burglary_vacant_home=0,
                 incidents_bicycle_theft=0, incidents_total=0, completion_rate=0.4,
                 incidents_per_1000_visited_households=0.0),
            dict(town=K, households_visited=5, visits=30, visits_completed=15,
                 satisfaction_mean=3.5, incidents_burglary_vacant_home=0,
                 incidents_bicycle_theft=0, incidents_total=0, completion_rate=0.5,
                 incidents_per_1000_visited_households=0.0),
        ]
    )  # fmt: skip
    out, report = suppress(t, "town_month", ["municipality_code", "month"], 10, column_totals=True)
    # households_visited [40, 5]: 5 primary; the municipality total would reveal it: 40 too
    assert out.column("households_visited").to_pylist() == [None, None]
    assert out.column("visits").to_pylist() == [50, 30]
    # with its households withheld, the rate per 1000 households is withheld (both rows)
    assert out.column("incidents_per_1000_visited_households").to_pylist() == [None, None]
    assert out.column("satisfaction_mean").to_pylist() == [4.0, 3.5]  # 20 and 15 ≥ 10
    assert (report.primary, report.secondary, report.derived_nulled) == (1, 1, 2)


def test_suppressed_outcome_tables_publish_no_small_count(tables):
    t = tables["town_month"]
    out, report = suppress(t, "town_month", ["municipality_code", "month"], 10, column_totals=True)
    derived = {"satisfaction_mean", "completion_rate", "incidents_per_1000_visited_households"}
    counts = [
        c for c in out.column_names if c not in {"municipality_code", "town", "month", *derived}
    ]
    small = [
        (c, v) for c in counts for v in out.column(c).to_pylist() if v is not None and 1 <= v < 10
    ]
    assert small == []
    assert report.primary > 0
    # every count here is below 10, so no rate or mean survives
    assert all(out.column(c).null_count == out.num_rows for c in derived)


def test_suppress_empty_table():
    t = _town_month([])
    out, report = suppress(t, "town_month", ["municipality_code", "month"], 10, column_totals=True)
    assert out.num_rows == 0 and report.cells == 0


def test_suppress_report_counts_each_before_after_cell_once():
    t = pa.table(
        {
            "municipality_code": [MUNI],
            "town": [W],
            "first_completed_visit": pa.array([date(2026, 6, 1)]),
            "incidents_before_90d": pa.array([3], pa.int64()),
            "incidents_after_90d": pa.array([25], pa.int64()),
        }
    )
    out, report = suppress(t, "before_after_town", [], 10, column_totals=False)
    # 3 < 10 is withheld, 25 is published (no total of the two is published)
    assert out.column("incidents_before_90d").to_pylist() == [None]
    assert out.column("incidents_after_90d").to_pylist() == [25]
    # one row, two count cells, one of them primary
    assert (report.cells, report.primary, report.secondary) == (2, 1, 0)
