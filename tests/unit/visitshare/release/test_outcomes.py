"""Programme outcomes from police-zone visits and incidents: counts, rates, suppression."""

from datetime import date, datetime, timedelta, timezone

import pyarrow as pa
import pytest

from visitshare.contracts import geography
from visitshare.quality.validate import validated_schema
from visitshare.release.anonymize import pseudonymize
from visitshare.release.outcomes import (
    Categories,
    before_after,
    count_tables,
    derive_rates,
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


# -- town × month and municipality × month counts --------------------------------------------------
SHINJUKU = geography.municipalities()[MUNI].towns  # Japan Post's towns: the public domain
CHIYODA = geography.municipalities()["13101"].towns
QUIET = next(t for t in SHINJUKU if t not in (W, K))  # a town without any event


@pytest.fixture
def counts(contracts, categories):
    visits = visits_table(
        contracts,
        [
            # 西新宿, October: households 1 and 2, three visits, two completed
            dict(household_id=hh(1), town=W, visited_at=at(2026, 10, 5), satisfaction=5,
                 vulnerabilities=["weak_door_lock", "poor_lighting"], concerns=["burglary", "stalking"]),
            dict(household_id=hh(1), town=W, visited_at=at(2026, 10, 20), satisfaction=2,
                 vulnerabilities=["weak_door_lock"]),
            # not completed: its (invalid) satisfaction is not counted
            dict(household_id=hh(2), town=W, visited_at=at(2026, 10, 21), outcome="not_home",
                 vulnerabilities=None, concerns=None, satisfaction=5),
            # 西新宿, November in Tokyo (00:30 on 1 Nov +09:00 is 31 Oct in UTC)
            dict(household_id=hh(3), town=W, visited_at=at(2026, 11, 1, 0, 30), satisfaction=4,
                 concerns=["domestic_violence"]),
            # 歌舞伎町, October: two completed visits, one satisfaction answer
            dict(household_id=hh(4), town=K, visited_at=at(2026, 10, 10), satisfaction=3,
                 vulnerabilities=["no_intercom"], materials=["leaflet_burglary"]),
            dict(household_id=hh(5), town=K, visited_at=at(2026, 10, 11), satisfaction=None),
            # Chiyoda, November: a second municipality, one month only
            dict(household_id="HH-13101-0001-00001", municipality_code="13101", town="丸の内",
                 koban_id="13101-K01", visited_at=at(2026, 11, 3), satisfaction=5),
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
            # 00:30 on 1 December in Tokyo (30 November in UTC): December, a month without visits
            dict(town=W, occurred_at=at(2026, 12, 1, 0, 30), crime_type="vandalism"),
        ],
    )  # fmt: skip
    return count_tables(visits, incidents, categories)


def by_key(t: pa.Table) -> dict[tuple, dict]:
    """Rows by (municipality, town, month), or (municipality, month) for the municipality table."""
    return {
        tuple(r[k] for k in ("municipality_code", "town", "month") if k in r): r
        for r in t.to_pylist()
    }


def expected_columns(c: Categories, town_level: bool) -> list[str]:
    concerns = [x for x in c.concerns if not (town_level and x in c.concerns_sensitive)]
    crimes = [x for x in c.crimes if not (town_level and x in c.crimes_sensitive)]
    keys = ["municipality_code", "town", "month"] if town_level else ["municipality_code", "month"]
    return [
        *keys,
        "households_visited",
        "visits",
        "visits_completed",
        "satisfaction_points",
        "satisfaction_answers",
        *[f"vulnerabilities_{x}" for x in c.vulnerabilities],
        *[f"recommendations_{x}" for x in c.recommendations],
        *[f"materials_{x}" for x in c.materials],
        *[f"concerns_{x}" for x in concerns],
        *[f"incidents_{x}" for x in crimes],
        "incidents_total",
    ]


def count_columns(t: pa.Table) -> list[str]:
    return [c for c in t.column_names if c not in ("municipality_code", "town", "month")]


def test_count_tables_hold_counts_only(counts, categories):
    assert sorted(counts) == ["municipality_month", "town_month"]
    assert counts["town_month"].column_names == expected_columns(categories, town_level=True)
    assert counts["municipality_month"].column_names == expected_columns(categories, False)
    for t in counts.values():
        for c in count_columns(t):
            assert t.schema.field(c).type == pa.int64(), c
            assert t.column(c).null_count == 0, c


def test_town_month_covers_every_town_of_each_municipality_month_with_data(counts):
    keys = set(by_key(counts["town_month"]))
    expected = {(MUNI, t, m) for t in SHINJUKU for m in ("2026-10", "2026-11", "2026-12")}
    expected |= {("13101", t, "2026-11") for t in CHIYODA}  # Chiyoda has data in November only
    assert keys == expected
    assert counts["town_month"].num_rows == 3 * len(SHINJUKU) + len(CHIYODA)


def test_a_town_without_events_is_a_row_of_zeros(counts):
    quiet = by_key(counts["town_month"])[(MUNI, QUIET, "2026-10")]
    assert [quiet[c] for c in count_columns(counts["town_month"])] == [0] * (len(quiet) - 3)


def test_town_month_visits(counts):
    town = by_key(counts["town_month"])
    w10 = town[(MUNI, W, "2026-10")]
    assert w10["households_visited"] == 2  # hh1 (twice), hh2
    assert (w10["visits"], w10["visits_completed"]) == (3, 2)
    # Σ (satisfaction − 1) of the completed visits: (5 − 1) + (2 − 1); not the not_home one
    assert (w10["satisfaction_points"], w10["satisfaction_answers"]) == (5, 2)
    assert w10["vulnerabilities_weak_door_lock"] == 2 and w10["vulnerabilities_poor_lighting"] == 1
    assert w10["vulnerabilities_no_intercom"] == 0
    assert w10["concerns_burglary"] == 1

    w11 = town[(MUNI, W, "2026-11")]  # the 00:30 visit counts in November (Tokyo time)
    assert (w11["households_visited"], w11["visits"], w11["visits_completed"]) == (1, 1, 1)
    assert (w11["satisfaction_points"], w11["satisfaction_answers"]) == (3, 1)

    k10 = town[(MUNI, K, "2026-10")]
    assert (k10["households_visited"], k10["visits"], k10["visits_completed"]) == (2, 2, 2)
    assert (k10["satisfaction_points"], k10["satisfaction_answers"]) == (2, 1)  # 3 − 1; hh5: none
    assert (k10["vulnerabilities_no_intercom"], k10["materials_leaflet_burglary"]) == (1, 1)

    c11 = town[("13101", "丸の内", "2026-11")]
    assert (c11["visits"], c11["satisfaction_points"], c11["satisfaction_answers"]) == (1, 4, 1)


def test_town_month_incidents(counts):
    town = by_key(counts["town_month"])
    w10 = town[(MUNI, W, "2026-10")]
    # burglary_vacant_home + bicycle_theft; the sexual offence is not at town level
    assert w10["incidents_burglary_vacant_home"] == 1 and w10["incidents_bicycle_theft"] == 1
    assert w10["incidents_total"] == 2
    assert town[(MUNI, W, "2026-11")]["incidents_total"] == 0  # the 1 Dec 00:30 one is December
    w12 = town[(MUNI, W, "2026-12")]
    assert (w12["incidents_vandalism"], w12["incidents_total"], w12["visits"]) == (1, 1, 0)
    k11 = town[(MUNI, K, "2026-11")]
    assert (k11["households_visited"], k11["visits"], k11["visits_completed"]) == (0, 0, 0)
    assert k11["incidents_bicycle_theft"] == 1 and k11["incidents_total"] == 1
    assert town[(MUNI, K, "2026-10")]["incidents_total"] == 0


def test_municipality_month_rows(counts):
    muni = by_key(counts["municipality_month"])
    assert sorted(muni) == [
        ("13101", "2026-11"),
        (MUNI, "2026-10"),
        (MUNI, "2026-11"),
        (MUNI, "2026-12"),
    ]
    m10 = muni[(MUNI, "2026-10")]
    assert m10["households_visited"] == 4  # hh1, hh2, hh4, hh5
    assert (m10["visits"], m10["visits_completed"]) == (5, 4)
    assert (m10["satisfaction_points"], m10["satisfaction_answers"]) == (7, 3)  # 4 + 1 + 2
    assert m10["concerns_stalking"] == 1 and m10["concerns_domestic_violence"] == 0
    assert m10["concerns_burglary"] == 1
    assert m10["incidents_sexual_offence"] == 1
    assert m10["incidents_total"] == 3  # burglary + bicycle theft + sexual offence
    m11 = muni[(MUNI, "2026-11")]
    assert m11["households_visited"] == 1 and m11["concerns_domestic_violence"] == 1
    assert m11["incidents_total"] == 1  # the 歌舞伎町 bicycle theft
    m12 = muni[(MUNI, "2026-12")]
    assert (m12["visits"], m12["incidents_vandalism"], m12["incidents_total"]) == (0, 1, 1)
    assert muni[("13101", "2026-11")]["visits"] == 1
    assert muni[("13101", "2026-11")]["incidents_total"] == 0


def test_town_counts_add_up_to_the_municipality_counts_but_for_sensitive_ones(counts, categories):
    """Every visit and every non-sensitive incident is in exactly one town row."""
    town, muni = counts["town_month"], by_key(counts["municipality_month"])
    for (code, month), m in muni.items():
        rows = [
            r for r in town.to_pylist() if (r["municipality_code"], r["month"]) == (code, month)
        ]
        for c in ("visits", "visits_completed", "satisfaction_points", "concerns_burglary"):
            assert sum(r[c] for r in rows) == m[c], (code, month, c)
        sensitive = sum(m[f"incidents_{x}"] for x in categories.crimes_sensitive)
        assert sum(r["incidents_total"] for r in rows) == m["incidents_total"] - sensitive


def test_sensitive_categories_are_municipality_columns_only(counts, categories):
    town_cols = set(counts["town_month"].column_names)
    muni_cols = set(counts["municipality_month"].column_names)
    sensitive = {f"incidents_{c}" for c in categories.crimes_sensitive} | {
        f"concerns_{c}" for c in categories.concerns_sensitive
    }
    assert len(sensitive) == 4
    assert sensitive.isdisjoint(town_cols)
    assert sensitive <= muni_cols
    assert "incidents_bicycle_theft" in town_cols and "concerns_burglary" in town_cols


def test_a_sensitive_only_town_month_shows_nothing_at_town_level(contracts, categories):
    visits = visits_table(contracts, [dict(household_id=hh(1), town=W, visited_at=at(2026, 12, 1))])
    incidents = incidents_table(
        contracts, [dict(town=K, occurred_at=at(2026, 12, 3), crime_type="domestic_violence")]
    )
    out = count_tables(visits, incidents, categories)
    muni = out["municipality_month"]
    assert muni.column("incidents_domestic_violence").to_pylist() == [1]
    assert muni.column("incidents_total").to_pylist() == [1]
    # 歌舞伎町 is a row like every town of the domain, with no incident in any column
    k12 = by_key(out["town_month"])[(MUNI, K, "2026-12")]
    incident_counts = {c: v for c, v in k12.items() if c.startswith("incidents_")}
    assert len(incident_counts) == 13  # 12 non-sensitive crime types and the total
    assert set(incident_counts.values()) == {0}


def test_max_items_counts_the_first_items_of_each_list(contracts, categories):
    visits = visits_table(
        contracts,
        [
            dict(household_id=hh(1), town=W, visited_at=at(2026, 10, 5),
                 vulnerabilities=["weak_door_lock", "poor_lighting", "no_intercom"],
                 recommendations=["lock_windows", "add_sensor_light", "install_secondary_lock"],
                 materials=["leaflet_burglary"],
                 concerns=["burglary", "special_fraud", "stalking"]),
            dict(household_id=hh(2), town=W, visited_at=at(2026, 10, 6), vulnerabilities=None),
        ],
    )  # fmt: skip
    incidents = incidents_table(contracts, [])
    full = by_key(count_tables(visits, incidents, categories)["municipality_month"])
    two = by_key(count_tables(visits, incidents, categories, max_items=2)["municipality_month"])
    f, t = full[(MUNI, "2026-10")], two[(MUNI, "2026-10")]
    assert (f["vulnerabilities_no_intercom"], t["vulnerabilities_no_intercom"]) == (1, 0)
    assert t["vulnerabilities_weak_door_lock"] == t["vulnerabilities_poor_lighting"] == 1
    third = "recommendations_install_secondary_lock"
    assert (f[third], t[third]) == (1, 0)
    assert t["recommendations_lock_windows"] == t["recommendations_add_sensor_light"] == 1
    assert t["materials_leaflet_burglary"] == 1  # a shorter list is counted whole
    assert (f["concerns_stalking"], t["concerns_stalking"]) == (1, 0)
    assert t["concerns_burglary"] == t["concerns_special_fraud"] == 1
    # everything but the truncated lists is the same
    same = [c for c in f if not c.endswith(("no_intercom", "install_secondary_lock", "stalking"))]
    assert {c: f[c] for c in same} == {c: t[c] for c in same}
    # one visit adds at most 2 to each list's columns
    for prefix in ("vulnerabilities_", "recommendations_", "materials_", "concerns_"):
        assert sum(v for c, v in t.items() if c.startswith(prefix)) <= 2


# -- rates derived from the counts -----------------------------------------------------------------
RATES = ["completion_rate", "satisfaction_mean", "incidents_per_1000_visited_households"]


def test_derive_rates_from_count_tables(counts):
    t = derive_rates(counts["town_month"])
    assert t.column_names == counts["town_month"].column_names + RATES
    assert all(t.schema.field(c).type == pa.float64() for c in RATES)
    assert t.select(counts["town_month"].column_names) == counts["town_month"]  # counts untouched
    town = by_key(t)
    w10 = town[(MUNI, W, "2026-10")]
    assert w10["completion_rate"] == pytest.approx(2 / 3)
    assert w10["satisfaction_mean"] == pytest.approx(3.5)  # 1 + 5 / 2 = (5 + 2) / 2
    assert w10["incidents_per_1000_visited_households"] == pytest.approx(1000.0)  # 2 / 2 × 1000
    k10 = town[(MUNI, K, "2026-10")]
    assert k10["completion_rate"] == 1.0
    assert k10["satisfaction_mean"] == pytest.approx(3.0)  # 1 + 2 / 1: over the answers only
    assert k10["incidents_per_1000_visited_households"] == 0.0
    # incidents and no visited household: no rate per visited household
    assert town[(MUNI, K, "2026-11")]["incidents_per_1000_visited_households"] is None
    assert town[(MUNI, QUIET, "2026-10")]["incidents_per_1000_visited_households"] is None
    m10 = by_key(derive_rates(counts["municipality_month"]))[(MUNI, "2026-10")]
    assert m10["completion_rate"] == pytest.approx(4 / 5)
    assert m10["satisfaction_mean"] == pytest.approx(1 + 7 / 3)  # (5 + 2 + 3) / 3
    assert m10["incidents_per_1000_visited_households"] == pytest.approx(750.0)  # 3 / 4 × 1000


def test_town_months_without_visits_have_no_completion_rate_or_mean(counts):
    town = by_key(derive_rates(counts["town_month"]))
    for key in ((MUNI, K, "2026-11"), (MUNI, QUIET, "2026-10"), (MUNI, W, "2026-12")):
        assert [town[key][c] for c in RATES] == [None, None, None], key


def test_derive_rates_withholds_the_incident_rate_below_its_minimum_denominator(counts):
    least = {"visits": 3, "satisfaction_answers": 2, "households_visited": 3}
    town = by_key(derive_rates(counts["town_month"], least))
    w10 = town[(MUNI, W, "2026-10")]  # visits 3, answers 2, households 2
    assert w10["completion_rate"] == pytest.approx(2 / 3)
    assert w10["satisfaction_mean"] == pytest.approx(3.5)
    assert w10["incidents_per_1000_visited_households"] is None
    m10 = by_key(derive_rates(counts["municipality_month"], least))[(MUNI, "2026-10")]
    assert m10["incidents_per_1000_visited_households"] == pytest.approx(750.0)  # 4 ≥ 3


def test_derive_rates_withholds_completion_and_mean_below_their_minimum_denominator(counts):
    least = {"visits": 3, "satisfaction_answers": 2, "households_visited": 3}
    k10 = by_key(derive_rates(counts["town_month"], least))[(MUNI, K, "2026-10")]
    # visits 2 < 3, answers 1 < 2, households 2 < 3
    assert [k10[c] for c in RATES] == [None, None, None]


def _rates_input(**columns) -> pa.Table:
    return pa.table({name: pa.array(values, pa.int64()) for name, values in columns.items()})


def test_derive_rates_by_hand_caps_noisy_counts():
    t = _rates_input(
        households_visited=[4, 2],
        visits=[5, 4],
        visits_completed=[7, 2],  # 7 > 5: a noisy count
        satisfaction_points=[30, 0],
        satisfaction_answers=[5, 2],
        incidents_total=[1, None],
    )
    out = derive_rates(t)
    assert out.select(t.column_names) == t  # the counts are left as they are
    # row 0: 7/5 capped at 1; 1 + 30/5 = 7 capped at 5; 1/4 × 1000
    # row 1: 2/4; every answer the lowest score: mean 1; a withheld incident count: no rate
    assert out.column("completion_rate").to_pylist() == [1.0, 0.5]
    assert out.column("satisfaction_mean").to_pylist() == [5.0, 1.0]
    assert out.column("incidents_per_1000_visited_households").to_pylist() == [250.0, None]


def test_derive_rates_by_hand_zero_or_withheld_denominators():
    t = _rates_input(
        households_visited=[0, None],
        visits=[0, 10],
        visits_completed=[0, None],  # withheld (suppressed) numerator
        satisfaction_points=[0, 8],
        satisfaction_answers=[0, None],
        incidents_total=[3, 2],
    )
    out = derive_rates(t)
    assert out.column("incidents_per_1000_visited_households").to_pylist() == [None, None]
    assert out.column("completion_rate").to_pylist() == [None, None]
    assert out.column("satisfaction_mean").to_pylist() == [None, None]


def test_derive_rates_adds_only_the_rates_its_columns_allow():
    before_after_like = _rates_input(incidents_before_90d=[3], incidents_after_90d=[5])
    assert derive_rates(before_after_like).column_names == before_after_like.column_names
    incidents_only = _rates_input(incidents_total=[3])
    assert derive_rates(incidents_only).column_names == ["incidents_total"]


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
    out = repeat_victimization(visits, incidents, KEY)
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


# -- suppression (threshold mode) ------------------------------------------------------------------
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
                ("incidents_burglary_vacant_home", pa.int64()),
                ("incidents_bicycle_theft", pa.int64()),
                ("incidents_total", pa.int64()),
            ]
        ),
    )


def test_suppress_town_month_by_hand():
    t = _town_month(
        [
            dict(town=W, households_visited=40, visits=50, visits_completed=12,
                 incidents_burglary_vacant_home=3, incidents_bicycle_theft=20, incidents_total=23),
            dict(town=K, households_visited=5, visits=30, visits_completed=8,
                 incidents_burglary_vacant_home=0, incidents_bicycle_theft=12, incidents_total=12),
        ]
    )  # fmt: skip
    out, report = suppress(t, "town_month", ["municipality_code", "month"], 10, column_totals=False)
    assert out.schema == t.schema
    w, k = out.to_pylist()
    # W: burglary 3 is primary; incidents_total is published, so bicycle theft 20 goes too
    assert w["incidents_burglary_vacant_home"] is None and w["incidents_bicycle_theft"] is None
    assert (w["households_visited"], w["visits"], w["visits_completed"]) == (40, 50, 12)
    assert w["incidents_total"] == 23
    # K: households 5 and completed 8 are primary; 0 and 12 published
    assert k["households_visited"] is None and k["visits_completed"] is None
    assert k["visits"] == 30
    assert (k["incidents_burglary_vacant_home"], k["incidents_bicycle_theft"]) == (0, 12)
    assert k["incidents_total"] == 12
    # 2 rows x (2 incident columns + households, visits, completed, total) = 12 cells
    assert (report.cells, report.primary, report.secondary) == (12, 3, 1)
    assert report.table == "town_month"


def test_suppress_along_columns_within_a_group():
    t = _town_month(
        [
            dict(town=W, households_visited=40, visits=50, visits_completed=20,
                 incidents_burglary_vacant_home=0, incidents_bicycle_theft=0, incidents_total=0),
            dict(town=K, households_visited=5, visits=30, visits_completed=15,
                 incidents_burglary_vacant_home=0, incidents_bicycle_theft=0, incidents_total=0),
            # another month: its own group, the 5 above does not reach it
            dict(town=W, month="2026-12", households_visited=40, visits=50, visits_completed=20,
                 incidents_burglary_vacant_home=0, incidents_bicycle_theft=0, incidents_total=0),
        ]
    )  # fmt: skip
    out, report = suppress(t, "town_month", ["municipality_code", "month"], 10, column_totals=True)
    # households_visited [40, 5]: 5 primary; the municipality total would reveal it: 40 too
    assert out.column("households_visited").to_pylist() == [None, None, 40]
    assert out.column("visits").to_pylist() == [50, 30, 50]
    assert out.column("visits_completed").to_pylist() == [20, 15, 20]
    assert (report.primary, report.secondary) == (1, 1)


def test_suppressed_count_tables_publish_no_small_count(counts):
    # as the release does: the inputs of the mean are not published, so not suppressed
    t = counts["town_month"].drop_columns(["satisfaction_points", "satisfaction_answers"])
    out, report = suppress(t, "town_month", ["municipality_code", "month"], 10, column_totals=True)
    columns = count_columns(t)
    small = [
        (c, v) for c in columns for v in out.column(c).to_pylist() if v is not None and 1 <= v < 10
    ]
    assert small == []
    # every non-zero count here is below 10: each one is a primary
    assert report.primary == sum(1 for c in columns for v in t.column(c).to_pylist() if 1 <= v < 10)
    assert report.primary > 0
    assert sum(out.column(c).null_count for c in columns) == report.primary + report.secondary
    assert report.cells == len(columns) * t.num_rows
    # what is published is the true count
    for c in columns:
        for before, after in zip(t.column(c).to_pylist(), out.column(c).to_pylist(), strict=True):
            assert after is None or after == before


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
