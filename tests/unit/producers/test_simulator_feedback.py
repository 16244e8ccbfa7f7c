"""The simulator's feedback datasets: reproducible, tied to the visits, and leaving the visits
and incidents of a seed exactly as they were."""

import json
import statistics
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from producers.simulator import (
    BAD_KINDS,
    CORE_DATASETS,
    DATASETS,
    FEEDBACK_DATASETS,
    SimConfig,
    Simulator,
)
from visitshare.clock import FixedClock
from visitshare.contracts import EventValidator

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
CLOCK = FixedClock(NOW)


def _events(contracts, **kw):
    return list(Simulator(SimConfig(**kw), contracts, clock=CLOCK).events())


def _bytes(events):
    return [
        (e.dataset, e.payload if isinstance(e.payload, bytes) else json.dumps(e.payload))
        for e in events
    ]


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_every_contract_is_simulated(contracts):
    assert set(DATASETS) == set(contracts.names())
    assert SimConfig().datasets == DATASETS


def test_same_seed_same_events(contracts):
    a = _events(contracts, days=3, seed=5, bad_rate=0.05)
    assert _bytes(a) == _bytes(_events(contracts, days=3, seed=5, bad_rate=0.05))
    assert {e.dataset for e in a} == set(DATASETS)
    other = _events(contracts, days=3, seed=6, bad_rate=0.05)
    for dataset in FEEDBACK_DATASETS:
        assert [p for d, p in _bytes(a) if d == dataset] != [
            p for d, p in _bytes(other) if d == dataset
        ]


@pytest.mark.parametrize("bad_rate", [0.0, 0.1])
def test_the_feedback_streams_leave_visits_and_incidents_as_they_were(contracts, bad_rate):
    """Choosing the core datasets alone (what the simulator made before the feedback datasets
    existed) gives the same core events, byte for byte, as choosing everything."""
    core = _events(contracts, days=4, seed=3, bad_rate=bad_rate, datasets=CORE_DATASETS)
    everything = _events(contracts, days=4, seed=3, bad_rate=bad_rate)
    assert _bytes(core) == [x for x in _bytes(everything) if x[0] in CORE_DATASETS]
    assert len(everything) > len(core)


@pytest.mark.parametrize("dataset", FEEDBACK_DATASETS)
def test_a_feedback_dataset_does_not_depend_on_the_others_chosen(contracts, dataset):
    alone = _events(contracts, days=3, seed=4, bad_rate=0.1, datasets=(dataset,))
    everything = _events(contracts, days=3, seed=4, bad_rate=0.1)
    assert {e.dataset for e in alone} <= {dataset}
    assert _bytes(alone) == [x for x in _bytes(everything) if x[0] == dataset]


def test_datasets_choose_what_is_emitted_and_total_counts_it(contracts):
    chosen = ("visit_request", "workshop_session")
    sim = Simulator(SimConfig(days=3, seed=4, datasets=chosen), contracts, clock=CLOCK)
    events = list(sim.events())
    assert {e.dataset for e in events} == set(chosen)
    assert sim.total == len(events)
    core = Simulator(SimConfig(days=3, seed=4, datasets=CORE_DATASETS), contracts, clock=CLOCK)
    assert core.total == len(list(core.events()))


def test_each_day_is_in_the_order_events_were_written(contracts):
    events = _events(contracts, days=5, seed=8)
    stamps = [e.payload["produced_at"] for e in events if e.dataset != "incident_report"]
    assert stamps == sorted(stamps)  # incidents are reported days late, as before
    end = "2026-11-25T00:00:00+09:00"
    assert max(e.payload["produced_at"] for e in events) <= end


@pytest.fixture(scope="module")
def month(contracts):
    """Four weeks of three wards, good events only, by dataset."""
    events = _events(contracts, days=28, seed=1, start=date(2026, 10, 5))
    by: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        by[e.dataset].append(e.payload)
    return by


@pytest.fixture(scope="module")
def visits(month):
    return {v["visit_id"]: v for v in month["visit_outcome"]}


def test_good_feedback_events_pass_their_contract(contracts, month):
    for dataset in FEEDBACK_DATASETS:
        validator = EventValidator(contracts.get(dataset), clock=CLOCK)
        assert month[dataset], dataset
        assert [p for p in month[dataset] if validator.validate(p)] == []


def test_answered_requests_name_a_visit_that_came_after_them(month, visits):
    requests = month["visit_request"]
    status = Counter(r["status"] for r in requests)
    assert set(status) == {"open", "scheduled", "answered", "cancelled"}
    assert 0.55 < status["answered"] / len(requests) < 0.85
    delays = []
    for r in requests:
        if r["status"] != "answered":
            assert "answered_visit_id" not in r and "answered_at" not in r
            continue
        visit = visits[r["answered_visit_id"]]
        assert visit["outcome"] == "completed"
        assert visit["household_id"] == r["household_id"] and visit["town"] == r["town"]
        assert r["answered_at"] == visit["visited_at"]
        assert _ts(visit["visited_at"]) >= _ts(r["requested_at"])
        delays.append((_ts(visit["visited_at"]) - _ts(r["requested_at"])) / timedelta(days=1))
    assert 2 < statistics.median(delays) < 7  # a few days from request to visit
    assert max(delays) <= 46
    completed = sum(v["outcome"] == "completed" for v in visits.values())
    assert 0.08 < status["answered"] / completed < 0.25
    channels = Counter(r["channel"] for r in requests)
    assert set(channels) == {"app", "phone", "counter", "welfare_referral"}
    assert all("contact_phone" in r for r in requests if r["channel"] == "phone")


def test_sessions_are_held_by_every_koban_about_twice_a_month(month, contracts):
    sessions = month["workshop_session"]
    sim = Simulator(SimConfig(days=28, seed=1, start=date(2026, 10, 5)), contracts, clock=CLOCK)
    kobans = {t.koban: t for a in sim._areas for t in a.towns}
    per_koban = Counter(s["koban_id"] for s in sessions)
    assert set(per_koban) <= set(kobans)
    assert 1.0 < len(sessions) / len(kobans) * 30 / 28 < 3.0
    for s in sessions:
        starts = _ts(s["starts_at"])
        assert s["session_id"].startswith(f"WS-{s['koban_id']}-{starts:%Y%m}-")
        assert starts.weekday() != 6 and 8 <= starts.hour <= 19
        koban_towns = {t.name for a in sim._areas for t in a.towns if t.koban == s["koban_id"]}
        assert s["town"] in koban_towns
        assert _ts(s["produced_at"]) > starts
    assert len({s["session_id"] for s in sessions}) == len(sessions)


def test_a_session_is_the_same_whatever_window_is_simulated(contracts):
    """Sessions are drawn per koban and month: two overlapping windows agree on their days."""
    kw = {"datasets": ("workshop_session",), "municipalities": ("13104",), "seed": 2}
    a = _events(contracts, days=10, start=date(2026, 10, 1), **kw)
    b = _events(contracts, days=10, start=date(2026, 10, 6), **kw)

    def key(e):
        return {k: v for k, v in e.payload.items() if k not in ("event_id", "produced_at")}

    overlap = sorted(
        (key(e) for e in a if e.payload["starts_at"] >= "2026-10-06"), key=lambda s: s["session_id"]
    )
    assert len(overlap) > 2
    assert overlap == sorted(
        (key(e) for e in b if e.payload["starts_at"] < "2026-10-11"), key=lambda s: s["session_id"]
    )


def test_attendance_is_to_sessions_held_by_invited_and_walk_in_households(month, visits, contracts):
    sessions = {s["session_id"]: s for s in month["workshop_session"]}
    attendance = month["workshop_attendance"]
    sim = Simulator(SimConfig(days=28, seed=1, start=date(2026, 10, 5)), contracts, clock=CLOCK)
    koban_of = {(t.code, t.name): t.koban for a in sim._areas for t in a.towns}
    per_session = Counter(a["session_id"] for a in attendance)
    for a in attendance:
        s = sessions[a["session_id"]]  # only sessions that were held (and written)
        assert koban_of[(a["municipality_code"], a["town"])] == s["koban_id"]
        assert abs(_ts(a["attended_at"]) - _ts(s["starts_at"])) <= timedelta(minutes=20)
        if "invitation_visit_id" in a:
            visit = visits[a["invitation_visit_id"]]
            assert a["invited_during_visit"] and visit.get("workshop_invited") is True
            assert visit["household_id"] == a["household_id"]
            assert _ts(s["starts_at"]) - _ts(visit["visited_at"]) >= timedelta(days=1)
    assert all(per_session[sid] <= s["capacity"] for sid, s in sessions.items())
    pairs = [(a["session_id"], a["household_id"]) for a in attendance]
    assert len(set(pairs)) == len(pairs)
    linked = sum("invitation_visit_id" in a for a in attendance)
    invited = sum(a["invited_during_visit"] for a in attendance)
    assert 0.2 < linked / len(attendance) < 0.8  # the rest are walk-ins
    assert invited > linked  # a few invited before the window (visit unknown)
    fill = statistics.mean(per_session[sid] / s["capacity"] for sid, s in sessions.items())
    assert 0.3 < fill < 0.95


def test_surveys_follow_visits_or_stand_alone(month, visits):
    surveys = month["resident_survey"]
    linked = [s for s in surveys if "visit_id" in s]
    for s in linked:
        visit = visits[s["visit_id"]]
        assert visit["outcome"] == "completed" and visit["household_id"] == s["household_id"]
        assert _ts(visit["visited_at"]) < _ts(s["answered_at"]) <= _ts(s["produced_at"])
        assert abs(s["satisfaction"] - visit["satisfaction"]) <= 1
    completed = sum(v["outcome"] == "completed" for v in visits.values())
    assert 0.1 < len(linked) / completed < 0.25
    assert 0.1 < (len(surveys) - len(linked)) / len(surveys) < 0.5
    recommend = defaultdict(list)
    for s in surveys:
        if "would_recommend" in s:
            recommend[s["satisfaction"]].append(s["would_recommend"])
    assert statistics.mean(recommend[5]) > 0.8 > 0.3 > statistics.mean(recommend[1])
    assert any("comment" in s for s in surveys)


def test_bad_rate_applies_to_the_feedback_datasets(contracts):
    events = _events(contracts, days=7, seed=9, bad_rate=0.1)
    feedback = [e for e in events if e.dataset in FEEDBACK_DATASETS]
    share = sum(e.bad_kind is not None for e in feedback) / len(feedback)
    assert 0.07 < share < 0.13
    validators = {d: EventValidator(contracts.get(d), clock=CLOCK) for d in FEEDBACK_DATASETS}
    kinds = set()
    for e in feedback:
        if e.bad_kind is None:
            continue
        kinds.add(e.bad_kind)
        v = validators[e.dataset]
        if isinstance(e.payload, bytes):
            _, problems = v.check_bytes(e.payload)
        else:
            problems = v.validate(e.payload)
        assert BAD_KINDS[e.bad_kind] in {p.reason for p in problems}, (e.dataset, e.bad_kind)
    assert len(kinds) >= 10
