"""An adversarial corpus of message values: decode tricks, encodings, types, formats, lists,
timestamps, geography, unknown fields, duplicates, keys, headers and sizes.

Each case says where its record must end: validated with exactly its own content (`expect` is
None), or quarantined with at least the given reasons (the producer's own reason codes).
Used by the end-to-end corpus test and by the unit tests that make the fast and reference
paths agree on every value.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from visitshare.clock import FixedClock

# One fixed "now" for the corpus and for every stage (VISITSHARE_NOW in their environment).
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
CLOCK = FixedClock(NOW)
DAY = (NOW - timedelta(days=2)).date().isoformat()
VISITS, INCIDENTS = "visit_outcome", "incident_report"
REQUESTS, SESSIONS, ATTENDANCE, SURVEYS = (
    "visit_request", "workshop_session", "workshop_attendance", "resident_survey"
)  # fmt: skip
VALID = None
PERSONAL_FIELD_NAME = "yamada_taro_09012345678"


def visit(**changes) -> dict:
    event = {
        "event_id": str(uuid.uuid4()),
        "schema_version": 1,
        "produced_at": f"{DAY}T11:30:00+09:00",
        "visit_id": "V-13104-00DDB073B8",
        "household_id": "HH-13104-0058-03375",
        "resident_name": "中村 和也",
        "phone": "080-6400-2141",
        "address_line": "東京都新宿区西新宿2丁目8番2号",
        "municipality_code": "13104",
        "town": "西新宿",
        "visited_at": f"{DAY}T10:15:00+09:00",
        "koban_id": "13104-K08",
        "officer_id": "P104080",
        "outcome": "completed",
        "residents_count": 2,
        "vulnerabilities": ["poor_lighting"],
        "satisfaction": 4,
    }
    event.update(changes)
    return {k: v for k, v in event.items() if v is not DROP}


def incident(**changes) -> dict:
    event = {
        "event_id": str(uuid.uuid4()),
        "schema_version": 1,
        "produced_at": f"{DAY}T12:00:00+09:00",
        "incident_id": "I-13104-0000ABCDEF",
        "reported_at": f"{DAY}T09:00:00+09:00",
        "occurred_at": f"{DAY}T02:00:00+09:00",
        "crime_type": "bicycle_theft",
        "municipality_code": "13104",
        "town": "西新宿",
        "latitude": 35.69,
        "longitude": 139.69,
        "status": "reported",
        "victim_age_band": "20-29",
    }
    event.update(changes)
    return {k: v for k, v in event.items() if v is not DROP}


def _event(produced: str, **fields) -> dict:
    return {"event_id": str(uuid.uuid4()), "schema_version": 1,
            "produced_at": f"{DAY}T{produced}+09:00", **fields}  # fmt: skip


def _changed(event: dict, changes: dict) -> dict:
    event.update(changes)
    return {k: v for k, v in event.items() if v is not DROP}


def request(**changes) -> dict:
    event = _event(
        "16:00:00",
        request_id="R-13104-00000A1B2C",
        requested_at=f"{DAY}T09:05:00+09:00",
        channel="phone",
        reason="fraud_worry",
        municipality_code="13104",
        town="西新宿",
        household_id="HH-13104-0058-03375",
        contact_name="中村 和也",
        contact_phone="080-6400-2141",
        status="answered",
        answered_visit_id="V-13104-00DDB073B8",
        answered_at=f"{DAY}T10:15:00+09:00",
    )
    return _changed(event, changes)


def session(**changes) -> dict:
    event = _event(
        "17:00:00",
        session_id="WS-13104-K08-" + DAY[:4] + DAY[5:7] + "-01",
        koban_id="13104-K08",
        municipality_code="13104",
        town="西新宿",
        starts_at=f"{DAY}T14:00:00+09:00",
        topic="special_fraud",
        capacity=30,
        venue_kind="community_center",
    )
    return _changed(event, changes)


def attendance(**changes) -> dict:
    event = _event(
        "18:00:00",
        attendance_id="WA-13104-0000000001",
        session_id="WS-13104-K08-" + DAY[:4] + DAY[5:7] + "-01",
        household_id="HH-13104-0058-03375",
        municipality_code="13104",
        town="西新宿",
        attended_at=f"{DAY}T13:55:00+09:00",
        invited_during_visit=True,
        invitation_visit_id="V-13104-00DDB073B8",
    )
    return _changed(event, changes)


def survey(**changes) -> dict:
    event = _event(
        "19:00:00",
        survey_id="S-13104-0000000001",
        answered_at=f"{DAY}T18:00:00+09:00",
        household_id="HH-13104-0058-03375",
        municipality_code="13104",
        town="西新宿",
        satisfaction=5,
        feels_safer=4,
        concerns=["special_fraud"],
        would_recommend=True,
        visit_id="V-13104-00DDB073B8",
        comment="丁寧に説明していただき安心しました。",
    )
    return _changed(event, changes)


DROP = object()


def js(event: dict, **kw) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), **kw).encode()


@dataclass
class Case:
    name: str
    value: bytes | None
    expect: set[str] | None  # reasons that must all be among the row's reasons; None: valid
    dataset: str = VISITS
    event: dict | None = None  # for valid rows: the content the validated row must have
    key: bytes | None = "13104:西新宿".encode()
    headers: list = field(default_factory=lambda: [("source_system", b"someone-else")])


def _valid(name: str, event: dict, dataset: str = VISITS, value: bytes | None = None, **kw) -> Case:
    return Case(name, js(event) if value is None else value, VALID, dataset, event, **kw)


def _bad(name: str, value: bytes | None, *reasons: str, dataset: str = VISITS) -> Case:
    return Case(name, value, set(reasons), dataset)


def corpus() -> list[Case]:
    a, b = visit(), visit()
    year = NOW.year
    dup = visit()
    cases = [
        # -- decode: exactly one JSON object per value ----------------------------------------
        _bad("two documents on two lines", js(a) + b"\n" + js(b), "decode:invalid_json"),
        _bad("two documents on one line", js(visit()) + js(visit()), "decode:invalid_json"),
        _bad("two documents, a space apart", js(visit()) + b" " + js(visit()), "decode:invalid_json"),
        _bad("empty value", b"", "decode:invalid_json"),
        _bad("tombstone", None, "decode:null_value"),
        _bad("JSON null", b"null", "decode:not_an_object"),
        _bad("JSON array", b"[1,2]", "decode:not_an_object"),
        _bad("JSON number", b"42", "decode:not_an_object"),
        _bad("JSON string", b'"visit"', "decode:not_an_object"),
        _bad("truncated", js(visit())[:-5], "decode:invalid_json"),
        _bad("trailing garbage", js(visit()) + b"xyz", "decode:invalid_json"),
        _bad("byte order mark", b"\xef\xbb\xbf" + js(visit()), "decode:invalid_json"),
        _bad("NaN", js(visit()).replace(b'"satisfaction":4', b'"satisfaction":NaN'), "decode:invalid_json"),
        _bad("duplicate key", js(visit())[:-1] + ',"town":"西新宿"}'.encode(), "decode:duplicate_key"),
        _bad("duplicate key, spaced", js(visit())[:-1] + ',"town" :"西新宿"}'.encode(), "decode:duplicate_key"),
        _bad("duplicate key in a nested object", js(visit(x={"a": 1}))[:-2] + b',"a":2}}', "decode:duplicate_key"),
        _bad("nesting deeper than a parser allows", js(visit())[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}", "decode:invalid_json"),
        _bad("one brace", b"{", "decode:invalid_json"),
        _valid("whitespace around the object", (w := visit()), value=b"  " + js(w) + b"\n"),
        _valid("pretty-printed", (p := visit()), value=js(p, indent=2)),
        _bad("empty object", b"{}", "missing_field:event_id", "missing_field:visit_id"),
        # -- encodings ----------------------------------------------------------------------------
        _bad("Shift_JIS", json.dumps(visit(), ensure_ascii=False).encode("cp932"), "decode:invalid_utf8"),
        _bad("a Latin-1 byte in a string", js(visit(notes="café")).replace("é".encode(), b"\xe9"), "decode:invalid_utf8"),
        _bad("CESU-8 surrogate bytes", js(visit(notes="XX")).replace(b"XX", b"\xed\xa0\x80"), "decode:invalid_utf8"),
        _bad("invalid UTF-8 in an unknown field", js(visit(extra="YY")).replace(b"YY", b"\xff\xfe"), "decode:invalid_utf8"),
        _bad("an escaped lone surrogate", js(visit(notes="ZZ")).replace(b"ZZ", b"\\ud800"), "decode:invalid_json"),
        _valid("escaped unicode town", (u := visit()), value=json.dumps(u).encode()),
        _bad("full-width digits in a timestamp", js(visit(visited_at=f"{DAY}T10:15:00+09:00".replace("2", "２"))), "bad_format:visited_at"),
        # -- types ----------------------------------------------------------------------------------
        _bad("integer as text", js(visit(residents_count="3")), "wrong_type:residents_count"),
        _bad("integer as float", js(visit(residents_count=2.0)), "wrong_type:residents_count"),
        _bad("integer as boolean", js(visit(residents_count=True)), "wrong_type:residents_count"),
        _bad("integer too large", js(visit(residents_count=10**30)), "wrong_type:residents_count"),  # JSON parsers read it as a float
        _bad("integer beyond int32", js(visit(residents_count=2**40)), "out_of_range:residents_count"),
        _bad("satisfaction out of range", js(visit(satisfaction=9)), "out_of_range:satisfaction"),
        _bad("boolean as text", js(visit(elderly_only="yes")), "wrong_type:elderly_only"),
        _bad("no such schema version", js(visit(schema_version=3)), "wrong_schema_version:schema_version"),
        _bad("schema version as a float", js(visit(schema_version=2.0)), "wrong_type:schema_version"),
        _bad("schema version as a boolean", js(visit(schema_version=True)), "wrong_type:schema_version"),
        # -- versions: visit_outcome v1 and v2 side by side, each against its own -----------------
        _valid("a v2 visit", visit(schema_version=2, preferred_language="ne", interpreter_used=True)),
        _valid("a v2 visit without the new fields", visit(schema_version=2)),
        _bad("a v1 visit with a v2 field", js(visit(interpreter_used=False)), "unknown_field"),
        _bad("a v2 field's unknown value", js(visit(schema_version=2, preferred_language="xx")), "unknown_value:preferred_language"),
        _bad("schema version as text", js(visit(schema_version="1")), "wrong_type:schema_version"),
        _bad("object in a string field", js(visit(town={"name": "西新宿"})), "wrong_type:town"),
        _bad("required field null", js(visit(town=None)), "missing_field:town"),
        _bad("municipality as a number", js(visit(municipality_code=13104)), "wrong_type:municipality_code"),
        # -- formats ----------------------------------------------------------------------------
        _bad("pattern with a trailing newline", js(visit(koban_id="13104-K01\n")), "bad_format:koban_id"),
        _bad("event id with a trailing newline", js(visit(event_id=str(uuid.uuid4()) + "\n")), "bad_format:event_id"),
        _bad("malformed phone", js(visit(phone="+81 80 6400 2141")), "bad_format:phone"),
        _bad("lower-case case number", js(visit(visit_id="v-13104-00ddb073b8")), "bad_format:visit_id"),
        _bad("town too long", js(visit(town="西" * 61)), "too_long:town"),
        # -- lists ------------------------------------------------------------------------------
        _bad("repeated list item", js(visit(vulnerabilities=["poor_lighting", "poor_lighting"])), "bad_format:vulnerabilities"),
        _bad("null list item", js(visit(vulnerabilities=["poor_lighting", None])), "wrong_type:vulnerabilities"),
        _bad("empty list item", js(visit(vulnerabilities=[""])), "unknown_value:vulnerabilities"),
        _bad("separator inside an item", js(visit(concerns=["burglary;stalking"])), "unknown_value:concerns"),
        _bad("list as text", js(visit(vulnerabilities="poor_lighting")), "wrong_type:vulnerabilities"),
        _bad("nested list", js(visit(vulnerabilities=[["poor_lighting"]])), "wrong_type:vulnerabilities"),
        _bad("too many items", js(visit(materials=["leaflet_burglary"] * 11)), "too_long:materials"),
        _valid("empty list when nothing was found", visit(vulnerabilities=[])),
        # -- timestamps -------------------------------------------------------------------------
        _bad("naive timestamp", js(visit(visited_at=f"{DAY}T10:15:00")), "bad_format:visited_at"),
        _bad("date only", js(visit(visited_at=DAY)), "bad_format:visited_at"),
        _bad("space instead of T", js(visit(visited_at=f"{DAY} 10:15:00+09:00")), "bad_format:visited_at"),
        _bad("offset without colon", js(visit(visited_at=f"{DAY}T10:15:00+0900")), "bad_format:visited_at"),
        _bad("year 0001", js(visit(visited_at="0001-01-01T10:00:00+09:00")), "out_of_range:visited_at"),
        _bad("year 1970", js(visit(visited_at="1970-01-01T10:00:00+09:00")), "out_of_range:visited_at"),
        _bad("impossible date", js(visit(visited_at=f"{year}-02-30T10:00:00+09:00")), "bad_format:visited_at"),
        _bad("trailing newline in a timestamp", js(visit(visited_at=f"{DAY}T10:15:00+09:00\n")), "bad_format:visited_at"),
        _bad("in the future", js(visit(visited_at=(NOW + timedelta(days=3)).isoformat())), "future_timestamp:visited_at"),
        _valid("UTC with Z", visit(visited_at=f"{DAY}T01:15:00Z")),
        _valid("fractional seconds", visit(visited_at=f"{DAY}T10:15:00.123456+09:00")),
        # -- geography --------------------------------------------------------------------------
        _bad("unknown municipality", js(visit(municipality_code="13999")), "unknown_value:municipality_code"),
        _bad("town of another ward", js(visit(town="三軒茶屋")), "unknown_value:town"),
        _bad("town with a trailing space", js(visit(town="西新宿 ")), "unknown_value:town"),
        # -- unknown fields ----------------------------------------------------------------------
        _bad("unknown field", js(visit(resident_email="a@b.jp")), "unknown_field"),
        _bad("unknown nested object", js(visit(extra={"nested": {"deep": 1}})), "unknown_field"),
        _bad("personal data as a field name", js(visit(**{PERSONAL_FIELD_NAME: 1})), "unknown_field"),
        # -- duplicates --------------------------------------------------------------------------
        _valid("first of two identical", dup),
        _bad("second of two identical", js(dup), "duplicate_event_id"),
        _bad("same id, other content", js({**dup, "satisfaction": 1}), "duplicate_event_id"),
        # -- keys and headers --------------------------------------------------------------------
        _valid("no key", visit(), key=None),
        _valid("a key that is not UTF-8", visit(), key=b"\xff\x00\xfe"),
        _valid("binary header values", visit(), headers=[("x", b"\x00\xff"), ("y", b"")]),
        _valid("no headers", visit(), headers=[]),
        # -- sizes --------------------------------------------------------------------------------
        _bad("oversized", js(visit(notes="あ" * 30_000)), "oversized_event"),
        # -- the suite's own rules (after the contract) ------------------------------------------
        _bad("satisfaction on a visit nobody answered", js(visit(outcome="not_home", vulnerabilities=DROP)), "rule:satisfaction_without_completed_visit"),
        # -- incidents ------------------------------------------------------------------------------
        _valid("an incident", incident(), INCIDENTS),
        _valid("a sensitive crime", incident(crime_type="domestic_violence"), INCIDENTS),
        _bad("latitude NaN", js(incident()).replace(b'"latitude":35.69', b'"latitude":NaN'), "decode:invalid_json", dataset=INCIDENTS),
        _bad("latitude Infinity", js(incident()).replace(b'"latitude":35.69', b'"latitude":Infinity'), "decode:invalid_json", dataset=INCIDENTS),
        _bad("latitude beyond a double", js(incident()).replace(b'"latitude":35.69', b'"latitude":1e400'), "decode:invalid_json", dataset=INCIDENTS),
        _bad("latitude as text", js(incident(latitude="35.69")), "wrong_type:latitude", dataset=INCIDENTS),
        _bad("age band not in the contract", js(incident(victim_age_band="65+")), "unknown_value:victim_age_band", dataset=INCIDENTS),
        _bad("reported before it occurred", js(incident(occurred_at=f"{DAY}T10:00:00+09:00")), "rule:reported_before_occurred", dataset=INCIDENTS),
        # -- the feedback loop: requests, workshops, surveys --------------------------------------
        _valid("an answered request", request(), REQUESTS),
        _valid("an open request", request(status="open", answered_visit_id=DROP, answered_at=DROP), REQUESTS),
        _bad("a request answered before it was made", js(request(answered_at=f"{DAY}T08:00:00+09:00")), "rule:answered_before_requested", dataset=REQUESTS),
        _bad("an answered request without its visit", js(request(answered_visit_id=DROP)), "rule:answered_without_visit", dataset=REQUESTS),
        _bad("a request by fax", js(request(channel="fax")), "unknown_value:channel", dataset=REQUESTS),
        _valid("a session", session(), SESSIONS),
        _bad("capacity as text", js(session(capacity="30")), "wrong_type:capacity", dataset=SESSIONS),
        _bad("capacity zero", js(session(capacity=0)), "out_of_range:capacity", dataset=SESSIONS),
        _bad("a session id of another shape", js(session(session_id="WS-13104-1")), "bad_format:session_id", dataset=SESSIONS),
        _valid("an attendance", attendance(), ATTENDANCE),
        _bad("invited as text", js(attendance(invited_during_visit="true")), "wrong_type:invited_during_visit", dataset=ATTENDANCE),
        _bad("an invitation visit without an invitation", js(attendance(invited_during_visit=False, household_id="HH-13104-0058-00001")), "rule:invitation_visit_without_invitation", dataset=ATTENDANCE),
        _valid("a survey", survey(), SURVEYS),
        _bad("satisfaction zero", js(survey(satisfaction=0)), "out_of_range:satisfaction", dataset=SURVEYS),
        _bad("a concern twice", js(survey(concerns=["burglary", "burglary"])), "bad_format:concerns", dataset=SURVEYS),
        _bad("a concern not on the questionnaire", js(survey(concerns=["ghosts"])), "unknown_value:concerns", dataset=SURVEYS),
        _bad("a comment too long", js(survey(comment="あ" * 2001)), "too_long:comment", dataset=SURVEYS),
    ]  # fmt: skip
    return cases
