"""The simulator: reproducible, realistic, and every malformed kind is what it claims."""

import json
from collections import Counter
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from producers.simulator import BAD_KINDS, SimConfig, Simulator
from visitshare.clock import FixedClock
from visitshare.contracts import ContractRegistry, geography

# One fixed clock for the simulator and the validators that check its events: "future
# timestamp" events are built from now, and judged against now.
TODAY = date(2026, 11, 25)
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
CLOCK = FixedClock(NOW)


def _events(contracts, **kw):
    return list(Simulator(SimConfig(**kw), contracts, clock=CLOCK).events())


def _bytes(events):
    return [
        e.payload if isinstance(e.payload, bytes) else json.dumps(e.payload, ensure_ascii=False)
        for e in events
    ]


def test_same_seed_same_events(contracts):
    a = _events(contracts, days=3, seed=5, bad_rate=0.05)
    b = _events(contracts, days=3, seed=5, bad_rate=0.05)
    assert _bytes(a) == _bytes(b)
    assert _bytes(_events(contracts, days=3, seed=6, bad_rate=0.05)) != _bytes(a)


def test_a_wards_world_does_not_depend_on_the_others(contracts):
    alone = Simulator(SimConfig(municipalities=("13104",), seed=5), contracts, clock=CLOCK)
    together = Simulator(
        SimConfig(municipalities=("13112", "13104"), seed=5), contracts, clock=CLOCK
    )
    a = next(a for a in alone._areas if a.m.code == "13104")
    b = next(a for a in together._areas if a.m.code == "13104")
    assert [(t.name, t.koban, t.households) for t in a.towns] == [
        (t.name, t.koban, t.households) for t in b.towns
    ]


def test_default_window_is_the_full_days_before_today(contracts):
    sim = Simulator(SimConfig(days=7), contracts, clock=CLOCK)
    assert sim.start == date(2026, 11, 18)
    stamps = [e.payload.get("produced_at") for e in sim.events() if isinstance(e.payload, dict)]
    assert max(stamps) <= "2026-11-25T00:00:00+09:00"


@pytest.fixture(scope="module")
def month(contracts):
    """Four weeks of three wards, good events only."""
    return _events(contracts, days=28, seed=1, start=date(2026, 10, 5))


def test_all_good_events_pass_their_contract(contracts, month):
    validators = {c.name: contracts.validator(c.name, clock=CLOCK) for c in contracts}
    invalid = [e for e in month if validators[e.dataset].validate(e.payload)]
    assert invalid == []


def test_volumes_follow_tokyo_year_scale(contracts):
    sim = Simulator(SimConfig(days=7, municipalities=("all",), seed=2), contracts, clock=CLOCK)
    visits = sum(v for _, _, v, _ in sim.plan) / 7
    incidents = sum(i for _, _, _, i in sim.plan) / 7
    assert 2_000_000 / 365 * 0.9 < visits < 2_000_000 / 365 * 1.1
    assert 100_000 / 365 * 0.85 < incidents < 100_000 / 365 * 1.15


def test_visits_happen_in_working_hours_mostly_on_weekdays(month):
    visits = [e.payload for e in month if e.dataset == "visit_outcome"]
    times = [datetime.fromisoformat(v["visited_at"]) for v in visits]
    assert all(9 <= t.hour <= 18 for t in times)
    weekday = sum(t.weekday() < 5 for t in times) / len(times)
    assert weekday > 0.9


def test_outcome_mix_has_many_not_home(month):
    outcomes = Counter(e.payload["outcome"] for e in month if e.dataset == "visit_outcome")
    total = sum(outcomes.values())
    assert 0.25 < outcomes["not_home"] / total < 0.5
    assert 0.35 < outcomes["completed"] / total < 0.6
    assert outcomes["declined"] and outcomes["rescheduled"]


def test_only_completed_visits_carry_an_assessment(month):
    for e in month:
        p = e.payload
        if e.dataset == "visit_outcome":
            assessed = "vulnerabilities" in p or "satisfaction" in p
            assert assessed == (p["outcome"] == "completed")


def test_visits_follow_town_size(month, contracts):
    """Bigger towns (by the simulator's size weight) get more visits."""
    sim = Simulator(SimConfig(days=28, seed=1, start=date(2026, 10, 5)), contracts, clock=CLOCK)
    area = next(a for a in sim._areas if a.m.code == "13112")
    counts = Counter(
        e.payload["town"] for e in month
        if e.dataset == "visit_outcome" and e.payload["municipality_code"] == "13112"
    )  # fmt: skip
    towns = sorted(area.towns, key=lambda t: t.weight)
    small = sum(counts[t.name] for t in towns[: len(towns) // 4])
    large = sum(counts[t.name] for t in towns[-len(towns) // 4 :])
    assert large > 3 * small


def test_vulnerabilities_vary_by_area(month):
    rates = {}
    for e in month:
        p = e.payload
        if e.dataset == "visit_outcome" and p["outcome"] == "completed":
            key = p["town"]
            n, k = rates.get(key, (0, 0))
            rates[key] = (n + 1, k + ("no_secondary_lock" in p["vulnerabilities"]))
    shares = [k / n for n, k in rates.values() if n >= 30]
    assert len(shares) > 5
    assert max(shares) - min(shares) > 0.15


def test_crime_mix_is_plausible(month):
    crimes = Counter(e.payload["crime_type"] for e in month if e.dataset == "incident_report")
    total = sum(crimes.values())
    assert crimes.most_common(1)[0][0] == "bicycle_theft"
    assert crimes["special_fraud"] / total > 0.05
    assert crimes["robbery"] / total < 0.01


def test_some_incidents_hit_previously_visited_households(month):
    visited = set()
    repeat = 0
    for e in month:  # stream order: a visit precedes the incidents that follow it
        p = e.payload
        if e.dataset == "visit_outcome":
            visited.add(p["household_id"])
        elif p.get("victim_household_id") in visited:
            repeat += 1
    assert repeat >= 5


def test_direct_identifiers_look_japanese_and_notes_leak_some(month):
    visits = [e.payload for e in month if e.dataset == "visit_outcome"]
    names = [v["resident_name"] for v in visits if "resident_name" in v]
    assert all(" " in n and not n.isascii() for n in names)
    assert all(v["address_line"].startswith("東京都") for v in visits)
    with_name = sum(
        1 for v in visits if v.get("resident_name") and v["resident_name"] in v.get("notes", "")
    )
    with_phone = sum(1 for v in visits if v.get("phone") and v["phone"] in v.get("notes", ""))
    assert with_name > 10 and with_phone > 10


def test_incidents_are_reported_after_they_occur(month):
    for e in month:
        if e.dataset == "incident_report":
            assert e.payload["occurred_at"] <= e.payload["reported_at"] <= e.payload["produced_at"]


def test_coordinates_lie_in_the_municipality(month):
    for e in month:
        p = e.payload
        if e.dataset == "incident_report" and "latitude" in p:
            m = geography.municipality(p["municipality_code"])
            assert abs(p["latitude"] - m.latitude) < 0.05
            assert abs(p["longitude"] - m.longitude) < 0.06


def test_bad_rate_makes_every_kind_and_each_fails_with_its_reason(contracts):
    # v2 visits too: each goes wrong against its own version and is refused for it.
    events = _events(contracts, days=2, seed=9, bad_rate=1.0, visit_v2_share=0.5)
    validators = {c.name: contracts.validator(c.name, clock=CLOCK) for c in contracts}
    kinds = Counter(e.bad_kind for e in events)
    assert set(kinds) == set(BAD_KINDS)
    for e in events:
        v = validators[e.dataset]
        if isinstance(e.payload, bytes):
            _, problems = v.check_bytes(e.payload)
        else:
            problems = v.validate(e.payload)
        assert BAD_KINDS[e.bad_kind] in {p.reason for p in problems}, e.bad_kind


def test_bad_rate_is_a_share(contracts):
    events = _events(contracts, days=7, seed=9, bad_rate=0.1)
    share = sum(e.bad_kind is not None for e in events) / len(events)
    assert 0.08 < share < 0.12


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"days": 0}, "days"),
        ({"bad_rate": 1.5}, "bad rate"),
        ({"scale": 0}, "scale"),
        ({"datasets": ("parking",)}, "unknown datasets"),
        ({"visit_v2_share": 1.2}, "v2 visits"),
    ],
)
def test_invalid_configuration(kw, message):
    with pytest.raises(ValueError, match=message):
        SimConfig(**kw)


def test_scale_changes_volume_proportionally(contracts):
    one = Simulator(SimConfig(days=14, seed=4), contracts, clock=CLOCK).total
    half = Simulator(SimConfig(days=14, seed=4, scale=0.5), contracts, clock=CLOCK).total
    assert abs(half / one - 0.5) < 0.05


# -- visit_outcome v1 and v2 side by side -------------------------------------------------------
def test_v2_visits_are_an_opt_in_share_drawn_apart_from_the_v1_stream(contracts):
    base = _events(contracts, days=3, seed=5, bad_rate=0.05)
    mixed = _events(contracts, days=3, seed=5, bad_rate=0.05, visit_v2_share=0.3)
    assert _bytes(mixed) == _bytes(
        _events(contracts, days=3, seed=5, bad_rate=0.05, visit_v2_share=0.3)
    )  # deterministic per seed
    assert len(base) == len(mixed)
    assert all(e.payload.get("schema_version") == 1 for e in base if isinstance(e.payload, dict)
               and e.dataset == "visit_outcome" and e.bad_kind is None)  # fmt: skip
    v2 = 0
    for a, b in zip(base, mixed, strict=True):
        assert (a.dataset, a.bad_kind) == (b.dataset, b.bad_kind)
        if a.payload == b.payload:
            continue  # every v1 event is byte for byte what it is without v2 visits
        assert b.dataset == "visit_outcome"
        if b.bad_kind is None:  # a v2 visit: the v1 event, plus what v2 adds
            v2 += 1
            extra = {k: v for k, v in b.payload.items() if k not in a.payload}
            assert {**a.payload, **extra, "schema_version": 2} == b.payload
            assert set(extra) <= {"preferred_language", "interpreter_used"}
    good_visits = sum(e.dataset == "visit_outcome" and e.bad_kind is None for e in mixed)
    assert 0.25 < v2 / good_visits < 0.35


def test_v2_visits_carry_the_households_language_on_completed_visits(contracts):
    events = _events(contracts, days=7, seed=3, visit_v2_share=1.0)
    visits = [e.payload for e in events if e.dataset == "visit_outcome"]
    assert {v["schema_version"] for v in visits} == {2}
    asked = [v for v in visits if "preferred_language" in v]
    assert all(v["outcome"] == "completed" for v in asked) and len(asked) > 100
    languages = Counter(v["preferred_language"] for v in asked)
    assert 0.75 < languages["ja"] / len(asked) < 0.99 and len(languages) >= 4
    assert all(v["interpreter_used"] is False for v in asked if v["preferred_language"] == "ja")
    assert any(v["interpreter_used"] for v in asked)
    # A household's language is its own: the same on every visit.
    by_household: dict[str, set] = {}
    for v in asked:
        by_household.setdefault(v["household_id"], set()).add(v["preferred_language"])
    assert all(len(s) == 1 for s in by_household.values())
    validator = contracts.validator("visit_outcome", clock=CLOCK)
    assert [v for v in visits if validator.validate(v)] == []


def test_v2_visits_need_the_v2_contract(contracts, tmp_path):
    v1_only = ContractRegistry([c for c in contracts.all() if c.id != "visit_outcome.v2"])
    with pytest.raises(ValueError, match=r"visit_outcome\.v2"):
        Simulator(SimConfig(visit_v2_share=0.1), v1_only, clock=CLOCK)
