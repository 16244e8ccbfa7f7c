"""The feedback datasets through landing and validation: simulated events of each land in the
raw zone and validate (contract check + GX suite) with counts reconciling, malformed events
quarantined with their reasons, and the suites' cross-field rules enforced."""

from datetime import timedelta

import pytest

from producers.simulator import BAD_KINDS, FEEDBACK_DATASETS, SimConfig, Simulator
from tests.helpers import land_values
from visitshare.quality.validate import read_curated, validate


def _simulate(settings, contracts, dataset: str, **kw) -> list:
    start = (settings.clock.now() - timedelta(days=20)).date()
    config = SimConfig(days=14, seed=17, start=start, datasets=(dataset,), **kw)
    return list(Simulator(config, contracts, clock=settings.clock).events())


@pytest.mark.parametrize("dataset", FEEDBACK_DATASETS)
def test_simulated_events_land_and_validate_with_counts_reconciling(settings, contracts, dataset):
    events = _simulate(settings, contracts, dataset, bad_rate=0.15)
    good = [e.payload for e in events if e.bad_kind is None]
    bad = [e for e in events if e.bad_kind is not None]
    assert good and bad
    land_values(settings, settings.topic(contracts.get(dataset).topic), [e.payload for e in events])

    run = validate(settings, dataset)
    assert run.rows_in == len(events) == run.valid + run.quarantined
    assert (run.valid, run.quarantined, run.duplicates) == (len(good), len(bad), 0)
    validated = read_curated(settings, dataset, "validated")
    assert sorted(validated.column("event_id").to_pylist()) == sorted(e["event_id"] for e in good)
    quarantine = read_curated(settings, dataset, "quarantine")
    offsets = quarantine.column("kafka_offset").to_pylist()
    by_offset = {i: e for i, e in enumerate(events)}
    for offset, reasons in zip(offsets, quarantine.column("reasons").to_pylist(), strict=True):
        kind = by_offset[offset].bad_kind
        assert kind is not None and reasons
        assert any(BAD_KINDS[kind].value in r for r in reasons), (kind, reasons)
    assert sum(run.quarantined_by_reason.values()) >= run.quarantined
    # Nothing on the good rows breaks a suite rule with severity error.
    assert not [r for r in run.quarantined_by_reason if r.startswith("rule:")]


def _clone(event: dict, **changes) -> dict:
    import uuid

    out = {**event, "event_id": str(uuid.uuid4()), **changes}
    return {k: v for k, v in out.items() if v is not DROP}


DROP = object()


def _reasons(settings, dataset) -> dict[str, list[str]]:
    quarantine = read_curated(settings, dataset, "quarantine")
    ids = quarantine.column("event_id").to_pylist()
    return dict(zip(ids, quarantine.column("reasons").to_pylist(), strict=True))


def test_request_rules(settings, contracts):
    events = [e.payload for e in _simulate(settings, contracts, "visit_request")]
    answered = next(e for e in events if e["status"] == "answered")
    opened = next(e for e in events if e["status"] == "open")
    early = _clone(answered, answered_at="2000-01-02T10:00:00+09:00")
    no_visit = _clone(answered, answered_visit_id=DROP)
    no_time = _clone(answered, answered_at=DROP)
    stray = _clone(opened, answered_visit_id=answered["answered_visit_id"])
    silent = _clone(opened, channel="phone", contact_phone=DROP)
    land_values(
        settings,
        settings.topic("visits.requests.v1"),
        [*events, early, no_visit, no_time, stray, silent],
    )
    run = validate(settings, "visit_request")
    reasons = _reasons(settings, "visit_request")
    assert reasons == {
        early["event_id"]: ["rule:answered_before_requested"],
        no_visit["event_id"]: ["rule:answered_without_visit"],
        no_time["event_id"]: ["rule:answered_without_time"],
        stray["event_id"]: ["rule:visit_on_unanswered_request"],
    }
    assert run.valid == len(events) + 1  # the phone request without a number: a warning
    assert run.warnings_by_reason == {"rule:phone_request_without_number": 1}


def test_workshop_rules(settings, contracts):
    sessions = [e.payload for e in _simulate(settings, contracts, "workshop_session")]
    attendance = [e.payload for e in _simulate(settings, contracts, "workshop_attendance")]
    early = _clone(sessions[0], produced_at="2000-01-02T10:00:00+09:00")
    land_values(settings, settings.topic("workshops.sessions.v1"), [*sessions, early])
    validate(settings, "workshop_session")
    assert _reasons(settings, "workshop_session") == {
        early["event_id"]: ["rule:session_recorded_before_it_began"]
    }

    invited = next(a for a in attendance if "invitation_visit_id" in a)
    not_invited = _clone(invited, invited_during_visit=False)
    twice = _clone(attendance[0], attendance_id="WA-13104-0000000001")
    land_values(
        settings, settings.topic("workshops.attendance.v1"), [*attendance, not_invited, twice]
    )
    run = validate(settings, "workshop_attendance")
    reasons = _reasons(settings, "workshop_attendance")
    assert sorted(reasons.pop(not_invited["event_id"])) == [
        "rule:household_attended_twice",  # the same household and session as `invited`
        "rule:invitation_visit_without_invitation",
    ]
    # GX flags every row of a repeated (session, household): both copies wait for a person.
    assert set(reasons) == {attendance[0]["event_id"], twice["event_id"], invited["event_id"]}
    assert all(r == ["rule:household_attended_twice"] for r in reasons.values())
    assert run.valid == len(attendance) - 2


def test_survey_rules(settings, contracts):
    surveys = [e.payload for e in _simulate(settings, contracts, "resident_survey")]
    again = _clone(surveys[0])
    odd = _clone(surveys[1], survey_id="S-13104-0000000001", satisfaction=1, would_recommend=True)
    land_values(settings, settings.topic("surveys.responses.v1"), [*surveys, again, odd])
    run = validate(settings, "resident_survey")
    assert _reasons(settings, "resident_survey") == {
        surveys[0]["event_id"]: ["rule:questionnaire_entered_twice"],
        again["event_id"]: ["rule:questionnaire_entered_twice"],
    }
    assert run.valid == len(surveys)
    assert run.warnings_by_reason.get("rule:recommends_despite_poor_satisfaction", 0) >= 1
