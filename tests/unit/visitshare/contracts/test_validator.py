"""Table-driven validation: one row per kind of malformed event, plus the clean case."""

from datetime import UTC, datetime, timedelta

import pytest

from visitshare.clock import FixedClock
from visitshare.contracts import EventValidator, Reason

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo

GOOD_VISIT = {
    "event_id": "857842d6-9b52-482b-812a-54874abc6394",
    "schema_version": 1,
    "produced_at": "2026-11-20T11:30:00+09:00",
    "visit_id": "V-13104-00DDB073B8",
    "household_id": "HH-13104-0058-03375",
    "resident_name": "中村 和也",
    "phone": "080-6400-2141",
    "address_line": "東京都新宿区西新宿2丁目8番2号",
    "municipality_code": "13104",
    "town": "西新宿",
    "visited_at": "2026-11-20T10:15:00+09:00",
    "koban_id": "13104-K08",
    "officer_id": "P104080",
    "outcome": "completed",
    "residents_count": 2,
    "elderly_only": True,
    "vulnerabilities": ["no_secondary_lock", "poor_lighting"],
    "recommendations": ["install_secondary_lock"],
    "materials": ["leaflet_special_fraud"],
    "workshop_invited": False,
    "concerns": ["special_fraud"],
    "follow_up_requested": False,
    "satisfaction": 5,
    "notes": "中村 和也様宅を訪問。連絡先 080-6400-2141。",
}


@pytest.fixture
def validator(contracts):
    # Each event against its own version (visit_outcome v1 and v2): GOOD_VISIT is a v1 event.
    return contracts.validator("visit_outcome", clock=FixedClock(NOW))


def test_a_good_event_has_no_violations(validator):
    assert validator.validate(GOOD_VISIT) == []


def _without(name):
    return {k: v for k, v in GOOD_VISIT.items() if k != name}


CASES = [
    ("missing required", _without("visit_id"), Reason.MISSING_FIELD, "visit_id"),
    ("required null", {**GOOD_VISIT, "town": None}, Reason.MISSING_FIELD, "town"),
    ("unknown field", {**GOOD_VISIT, "resident_email": "a@b.jp"}, Reason.UNKNOWN_FIELD, "resident_email"),
    ("string for int", {**GOOD_VISIT, "satisfaction": "5"}, Reason.WRONG_TYPE, "satisfaction"),
    ("bool is not int", {**GOOD_VISIT, "residents_count": True}, Reason.WRONG_TYPE, "residents_count"),
    ("int for bool", {**GOOD_VISIT, "elderly_only": 1}, Reason.WRONG_TYPE, "elderly_only"),
    ("string for list", {**GOOD_VISIT, "concerns": "special_fraud"}, Reason.WRONG_TYPE, "concerns"),
    ("epoch timestamp", {**GOOD_VISIT, "visited_at": 1763600000}, Reason.WRONG_TYPE, "visited_at"),
    ("unknown enum", {**GOOD_VISIT, "outcome": "maybe"}, Reason.UNKNOWN_VALUE, "outcome"),
    ("unknown list item", {**GOOD_VISIT, "materials": ["tissues"]}, Reason.UNKNOWN_VALUE, "materials"),
    ("unknown municipality", {**GOOD_VISIT, "municipality_code": "13999"}, Reason.UNKNOWN_VALUE, "municipality_code"),
    ("town of another ward", {**GOOD_VISIT, "town": "三軒茶屋"}, Reason.UNKNOWN_VALUE, "town"),
    ("above maximum", {**GOOD_VISIT, "satisfaction": 6}, Reason.OUT_OF_RANGE, "satisfaction"),
    ("below minimum", {**GOOD_VISIT, "residents_count": 0}, Reason.OUT_OF_RANGE, "residents_count"),
    ("too long", {**GOOD_VISIT, "notes": "あ" * 2001}, Reason.TOO_LONG, "notes"),
    ("too many items", {**GOOD_VISIT, "materials": ["leaflet_burglary"] * 11}, Reason.TOO_LONG, "materials"),
    ("repeated item", {**GOOD_VISIT, "concerns": ["burglary", "burglary"]}, Reason.BAD_FORMAT, "concerns"),
    ("not a uuid", {**GOOD_VISIT, "event_id": "not-a-uuid"}, Reason.BAD_FORMAT, "event_id"),
    ("phone format", {**GOOD_VISIT, "phone": "+81 80 6400 2141"}, Reason.BAD_FORMAT, "phone"),
    ("no utc offset", {**GOOD_VISIT, "visited_at": "2026-11-20T10:15:00"}, Reason.BAD_FORMAT, "visited_at"),
    ("not a date", {**GOOD_VISIT, "visited_at": "2026-02-30T10:15:00+09:00"}, Reason.BAD_FORMAT, "visited_at"),
    ("slashes", {**GOOD_VISIT, "visited_at": "2026/11/20 10:15"}, Reason.BAD_FORMAT, "visited_at"),
    ("future", {**GOOD_VISIT, "visited_at": "2026-11-20T12:10:00+09:00"}, Reason.FUTURE_TIMESTAMP, "visited_at"),
    ("no such version", {**GOOD_VISIT, "schema_version": 3}, Reason.WRONG_SCHEMA_VERSION, "schema_version"),
    ("v2 field in a v1 event", {**GOOD_VISIT, "preferred_language": "vi"}, Reason.UNKNOWN_FIELD, "preferred_language"),
    ("v2 field's unknown value", {**GOOD_VISIT, "schema_version": 2, "preferred_language": "xx"}, Reason.UNKNOWN_VALUE, "preferred_language"),
    ("not an object", [GOOD_VISIT], Reason.NOT_AN_OBJECT, None),
]  # fmt: skip


@pytest.mark.parametrize(("case", "event", "reason", "field"), CASES, ids=[c[0] for c in CASES])
def test_each_kind_of_bad_event_gets_its_reason(validator, case, event, reason, field):
    problems = validator.validate(event)
    assert [(p.reason, p.field) for p in problems] == [(reason, field)]


def test_future_tolerance_is_a_boundary(contracts):
    v = contracts.validator(
        "visit_outcome", clock=FixedClock(NOW), future_tolerance=timedelta(minutes=5)
    )
    at_limit = (NOW + timedelta(minutes=5)).astimezone().isoformat(timespec="seconds")
    past_limit = (NOW + timedelta(minutes=5, seconds=1)).astimezone().isoformat(timespec="seconds")
    assert v.validate({**GOOD_VISIT, "produced_at": at_limit}) == []
    assert [p.reason for p in v.validate({**GOOD_VISIT, "produced_at": past_limit})] == [
        Reason.FUTURE_TIMESTAMP
    ]


def test_messages_never_contain_the_offending_value(validator):
    """Reasons go into DLQ headers and logs: a bad phone number must not be repeated there."""
    secrets = {
        "phone": "090-1234-567X",
        "resident_name": "山田 花子" * 30,
        "town": "山田花子の家",
        "household_id": "HH-山田花子",
        "notes": "山田花子 090-1234-5678 " * 200,
    }
    for name, value in secrets.items():
        for p in validator.validate({**GOOD_VISIT, name: value}):
            assert value not in p.message and "山田" not in p.message and "1234" not in p.message


def test_all_violations_are_reported_not_just_the_first(validator):
    event = {**_without("visit_id"), "satisfaction": 9, "outcome": "maybe"}
    assert {p.field for p in validator.validate(event)} == {"visit_id", "satisfaction", "outcome"}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"event_id": "x"', Reason.INVALID_JSON),
        (b"\x93\x8c\x8b\x9e\x93s", Reason.INVALID_UTF8),  # 東京都 in Shift_JIS
        (b'{"a": 1}' + b" " * 70_000, Reason.OVERSIZED_EVENT),
        (b"NaN", Reason.INVALID_JSON),
    ],
)
def test_bytes_that_do_not_decode(validator, raw, reason):
    event, problems = validator.check_bytes(raw)
    assert event is None and [p.reason for p in problems] == [reason]


def test_good_bytes_decode_and_validate(validator):
    import json

    event, problems = validator.check_bytes(json.dumps(GOOD_VISIT, ensure_ascii=False).encode())
    assert problems == [] and event == GOOD_VISIT


@pytest.mark.parametrize(("case", "event", "reason", "field"), CASES, ids=[c[0] for c in CASES])
def test_fast_check_rejects_what_the_detailed_validator_rejects(
    validator, case, event, reason, field
):
    assert not validator.is_valid(event)
    assert validator.explain(event)


def test_fast_check_and_detailed_validator_agree_on_simulated_streams(contracts):
    from producers.simulator import SimConfig, Simulator

    events = list(Simulator(SimConfig(days=3, seed=17, bad_rate=0.3), contracts).events())
    validators = {c.name: contracts.validator(c.name) for c in contracts}
    decoded = [e for e in events if isinstance(e.payload, dict)]
    assert (
        sum(e.bad_kind is None for e in decoded) > 1000
        and sum(e.bad_kind is not None for e in decoded) > 300
    )
    for e in decoded:
        v = validators[e.dataset]
        assert v.is_valid(e.payload) == (v.explain(e.payload) == []) == (e.bad_kind is None), (
            e.bad_kind
        )


def test_fast_check_source_is_readable(validator):
    source = validator._fast.source
    assert source.startswith("def check(e):") and "g('phone')" in source


def test_fast_and_detailed_checks_agree_on_the_adversarial_corpus(contracts):
    """Regression (validation weaker than the producer): one decoder and one validator decide
    for the producer, landing and validation; its two paths agree on every corpus value."""
    from tests.corpus import CLOCK, corpus

    for case in corpus():
        v = contracts.validator(case.dataset, clock=CLOCK)
        event, problems = v.decode(case.value)
        if problems:
            assert case.expect is not None, case.name
            continue
        fast, detailed = v.is_valid(event), v.explain(event)
        assert fast == (detailed == []), case.name
        if case.expect is None:
            assert detailed == [], f"{case.name}: {detailed}"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, Reason.NULL_VALUE),
        (b"\xef\xbb\xbf{}", Reason.INVALID_JSON),
        (b'{"satisfaction": NaN}', Reason.INVALID_JSON),
        (b'{"a": 1, "a": 2}', Reason.DUPLICATE_KEY),
        (b'{"a" : 1, "a" : 2}', Reason.DUPLICATE_KEY),
        (b'{"a": {"b": 1, "b": 2}}', Reason.DUPLICATE_KEY),
        (b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", Reason.INVALID_JSON),
        (b'{"a": 1}\n{"b": 2}', Reason.INVALID_JSON),
        (b"null", Reason.NOT_AN_OBJECT),
    ],
)
def test_a_value_that_is_not_exactly_one_json_object_is_named(validator, value, reason):
    _, problems = validator.decode(value)
    assert [p.reason for p in problems] == [reason]


def test_a_key_with_a_colon_in_a_string_is_not_a_duplicate(validator):
    event, problems = validator.decode(b'{"a": "x\\":y", "b": "\\"c\\":"}')
    assert problems == [] and event == {"a": 'x":y', "b": '"c":'}


# -- versions: each event against the contract version its schema_version names --------------
V2_VISIT = {**GOOD_VISIT, "schema_version": 2, "preferred_language": "vi", "interpreter_used": True}


def test_each_event_is_checked_against_its_own_version(validator):
    for event in (GOOD_VISIT, V2_VISIT, {**GOOD_VISIT, "schema_version": 2}):
        assert validator.validate(event) == [] and validator.is_valid(event)
    assert validator.contract_of(GOOD_VISIT).id == "visit_outcome.v1"
    assert validator.contract_of(V2_VISIT).id == "visit_outcome.v2"
    assert validator.contract.id == "visit_outcome.v2"  # the latest: the zones' schema


def test_a_v2_field_in_a_v1_event_is_unknown_and_says_where_it_belongs(validator):
    (p,) = validator.validate({**GOOD_VISIT, "interpreter_used": False})
    assert (p.reason, p.field) == (Reason.UNKNOWN_FIELD, "interpreter_used")
    assert "visit_outcome.v1" in p.message and "schema_version 2" in p.message


@pytest.mark.parametrize(("number", "reason"), [(3, Reason.WRONG_SCHEMA_VERSION),
                                                (0, Reason.WRONG_SCHEMA_VERSION),
                                                (True, Reason.WRONG_TYPE),
                                                (1.0, Reason.WRONG_TYPE),
                                                ("2", Reason.WRONG_TYPE)])  # fmt: skip
def test_a_version_with_no_contract_is_named(validator, number, reason):
    event = {**V2_VISIT, "schema_version": number}
    assert not validator.is_valid(event)
    problems = validator.validate(event)
    assert [(p.reason, p.field) for p in problems] == [(reason, "schema_version")]
    if reason is Reason.WRONG_SCHEMA_VERSION:
        assert problems[0].message == (
            "field 'schema_version' names no version of visit_outcome with a contract (1, 2)"
        )


def test_one_contract_alone_checks_its_own_version_only(contracts):
    alone = EventValidator(contracts.get("visit_outcome.v2"), clock=FixedClock(NOW))
    assert [p.reason for p in alone.validate(GOOD_VISIT)] == [Reason.WRONG_SCHEMA_VERSION]
    assert alone.validate(V2_VISIT) == []


def test_one_fast_check_per_version(validator):
    v1, v2 = validator._versions[1]._fast.source, validator._versions[2]._fast.source
    assert "preferred_language" in v2 and "preferred_language" not in v1
    assert "v != 1" in v1 and "v != 2" in v2


def test_value_fits_in_the_events_own_version(validator):
    assert validator.value_fits("preferred_language", V2_VISIT)
    assert not validator.value_fits(
        "preferred_language", {**GOOD_VISIT, "preferred_language": "vi"}
    )
