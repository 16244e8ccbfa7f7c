"""The feedback-loop contracts: visit requests, workshop sessions and attendance, surveys.

Every field is classified and has a disclosure rule the loader accepts; identifiers that link
the datasets share their shapes; what is shared at record level is exactly what is listed.
"""

import pytest

from visitshare.contracts import FieldType, PiiClass
from visitshare.quality.suites import load_suite
from visitshare.settings import REPO_ROOT

FEEDBACK = ("visit_request", "workshop_session", "workshop_attendance", "resident_survey")

# name → (topic, event time, {field: (pii, disclosure action)})
DESIGN = {
    "visit_request": ("visits.requests.v1", "requested_at", {
        "request_id": ("direct_identifier", "drop"),
        "requested_at": ("quasi_identifier", "coarsen"),
        "channel": ("quasi_identifier", "keep"),
        "reason": ("sensitive", "keep"),
        "municipality_code": ("quasi_identifier", "keep"),
        "town": ("quasi_identifier", "keep"),
        "household_id": ("direct_identifier", "pseudonymize"),
        "contact_name": ("direct_identifier", "drop"),
        "contact_phone": ("direct_identifier", "drop"),
        "status": ("public", "keep"),
        "answered_visit_id": ("direct_identifier", "drop"),
        "answered_at": ("quasi_identifier", "drop"),
    }),
    "workshop_session": ("workshops.sessions.v1", "starts_at", {
        "session_id": ("public", "drop"),
        "koban_id": ("quasi_identifier", "keep"),
        "municipality_code": ("quasi_identifier", "keep"),
        "town": ("quasi_identifier", "keep"),
        "starts_at": ("quasi_identifier", "coarsen"),
        "topic": ("public", "keep"),
        "capacity": ("public", "keep"),
        "venue_kind": ("public", "keep"),
    }),
    "workshop_attendance": ("workshops.attendance.v1", "attended_at", {
        "attendance_id": ("direct_identifier", "drop"),
        "session_id": ("quasi_identifier", "drop"),
        "household_id": ("direct_identifier", "pseudonymize"),
        "municipality_code": ("quasi_identifier", "keep"),
        "town": ("quasi_identifier", "keep"),
        "attended_at": ("quasi_identifier", "coarsen"),
        "invited_during_visit": ("public", "keep"),
        "invitation_visit_id": ("direct_identifier", "drop"),
    }),
    "resident_survey": ("surveys.responses.v1", "answered_at", {
        "survey_id": ("direct_identifier", "drop"),
        "answered_at": ("quasi_identifier", "coarsen"),
        "household_id": ("direct_identifier", "pseudonymize"),
        "municipality_code": ("quasi_identifier", "keep"),
        "town": ("quasi_identifier", "keep"),
        "satisfaction": ("public", "keep"),
        "feels_safer": ("public", "keep"),
        "concerns": ("sensitive", "keep"),
        "would_recommend": ("public", "keep"),
        "visit_id": ("direct_identifier", "drop"),
        "comment": ("free_text", "drop"),
    }),
}  # fmt: skip
ENVELOPE = {
    "event_id": ("public", "drop"),
    "schema_version": ("public", "drop"),
    "produced_at": ("quasi_identifier", "drop"),
}


@pytest.mark.parametrize("name", FEEDBACK)
def test_contract_loads_with_every_field_classified(contracts, name):
    topic, event_time, fields = DESIGN[name]
    c = contracts.get(name)
    assert c.id == f"{name}.v1" and c.topic == topic and c.event_time == event_time
    assert c.key == ["municipality_code", "town"]
    got = {f.name: (f.pii.value, f.disclosure.action if f.disclosure else "keep") for f in c.fields}
    assert got == {**ENVELOPE, **fields}
    for f in c.fields:
        assert f.description and len(f.description) > 20, f.name


@pytest.mark.parametrize("name", FEEDBACK)
def test_nothing_personal_is_published(contracts, name):
    c = contracts.get(name)
    for f in c.fields_by_pii(PiiClass.DIRECT_IDENTIFIER, PiiClass.FREE_TEXT):
        assert f.disclosure is not None and f.disclosure.action in ("drop", "pseudonymize")
    for f in c.fields:
        if f.disclosure and f.disclosure.action == "pseudonymize":
            assert f.disclosure.namespace == "household"  # joins visits, requests, attendance
    # Published place and time are quasi-identifiers with hierarchies; timestamps by day.
    qis = c.disclosure.quasi_identifiers
    assert qis["town"].levels == ["town", "town_group", "municipality"]
    assert qis["municipality_code"].levels == ["exact"]
    assert qis[c.event_time].levels == ["day", "week", "month"]
    assert c.field(c.event_time).disclosure.coarsen == "day"
    published = {f.name for f in c.fields if f.disclosure is None or f.disclosure.action
                 not in ("drop", "pseudonymize")}  # fmt: skip
    for f in c.fields:
        if f.name in published and (f.carries or f.pii is PiiClass.QUASI_IDENTIFIER):
            assert f.name in qis, f.name


def test_disclosure_blocks(contracts):
    request = contracts.get("visit_request")
    assert request.disclosure.sensitive == ["reason"]
    assert request.disclosure.quasi_identifiers["channel"].levels == ["exact", "any"]
    session = contracts.get("workshop_session")
    assert session.disclosure.k_anonymity == 2  # public events: the loader's minimum
    assert session.disclosure.quasi_identifiers["koban_id"].follows == "town"
    assert set(session.field("session_id").narrows) == {"place", "time"}
    assert contracts.get("workshop_attendance").disclosure.sensitive == []
    survey = contracts.get("resident_survey")
    assert survey.disclosure.sensitive == ["concerns"]
    for name in ("visit_request", "workshop_attendance", "resident_survey"):
        d = contracts.get(name).disclosure
        assert (d.k_anonymity, d.l_diversity, d.close_after_days) == (5, 3, 3)
        assert d.aggregates.mode == "dp"


def test_links_share_the_shapes_of_what_they_point_to(contracts):
    visit = contracts.get("visit_outcome")
    survey = contracts.get("resident_survey")
    pairs = [
        (contracts.get("visit_request").field("answered_visit_id"), visit.field("visit_id")),
        (contracts.get("workshop_attendance").field("invitation_visit_id"),
         visit.field("visit_id")),
        (survey.field("visit_id"), visit.field("visit_id")),
        (contracts.get("workshop_attendance").field("session_id"),
         contracts.get("workshop_session").field("session_id")),
    ]  # fmt: skip
    for name in FEEDBACK:
        c = contracts.get(name)
        if "household_id" in c.field_names:
            pairs.append((c.field("household_id"), visit.field("household_id")))
    for link, target in pairs:
        assert (link.type, link.pattern, link.max_length) == (
            target.type,
            target.pattern,
            target.max_length,
        )
    assert survey.field("concerns").item_values == visit.field("concerns").item_values
    assert survey.field("concerns").sensitive_values == visit.field("concerns").sensitive_values
    assert not contracts.get("visit_request").field("answered_at").required
    capacity = contracts.get("workshop_session").field("capacity")
    assert capacity.type is FieldType.INTEGER and (capacity.minimum, capacity.maximum) == (5, 200)
    for name in ("satisfaction", "feels_safer"):
        assert (survey.field(name).minimum, survey.field(name).maximum) == (1, 5)


@pytest.mark.parametrize("name", FEEDBACK)
def test_suite_loads(contracts, name):
    suite = load_suite(REPO_ROOT / "expectations", contracts.get(name))
    assert suite.version.startswith(f"{name}.v1+suite-1.0.0+")
    assert suite.rule_ids()[0] == "event_id_unique"
    assert len(suite.gx_suite().expectations) == len(suite.rules) >= 4
