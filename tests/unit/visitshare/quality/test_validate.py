"""Validation, rule by rule: each case a row that passes or fails one rule (table-driven).

The input is the raw zone, written with landing's own code (`tests.helpers.land_values`).
"""

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow.compute as pc
import pytest

from tests.helpers import land_values
from visitshare.quality import quarantine
from visitshare.quality.validate import read_curated, reset, validate
from visitshare.settings import Settings

NOW = datetime.now(UTC)


def visit(**changes):
    day = (NOW - timedelta(days=2)).astimezone().date().isoformat()
    event = {
        "event_id": changes.pop("event_id", None)
        or str(uuid.uuid5(uuid.NAMESPACE_URL, repr(changes))),
        "schema_version": 1,
        "produced_at": f"{day}T11:30:00+09:00",
        "visit_id": "V-13104-00DDB073B8",
        "household_id": "HH-13104-0058-03375",
        "resident_name": "中村 和也",
        "phone": "080-6400-2141",
        "address_line": "東京都新宿区西新宿2丁目8番2号",
        "municipality_code": "13104",
        "town": "西新宿",
        "visited_at": f"{day}T10:15:00+09:00",
        "koban_id": "13104-K08",
        "officer_id": "P104080",
        "outcome": "completed",
        "vulnerabilities": ["poor_lighting"],
        "satisfaction": 4,
    }
    for k, v in changes.items():
        if v is DROP:
            event.pop(k)
        else:
            event[k] = v
    return event


DROP = object()
future = (NOW + timedelta(days=3)).isoformat(timespec="seconds")

# (case, value, expected reasons if quarantined (error rules) or None if valid, warnings)
VISIT_CASES = [
    ("good", visit(), None, []),
    ("missing required", visit(visit_id=DROP), ["missing_field:visit_id"], []),
    # The producer's reason codes, exactly: the suite runs only on rows that pass the contract.
    ("unknown outcome", visit(outcome="maybe"), ["unknown_value:outcome"], []),
    ("unknown municipality", visit(municipality_code="13999"), ["unknown_value:municipality_code"], []),
    ("town of another ward", visit(town="三軒茶屋"), ["unknown_value:town"], []),
    ("bad phone", visit(phone="+81 80 6400 2141"), ["bad_format:phone"], []),
    ("bad event id", visit(event_id="not-a-uuid-at-all-but-long-enough-xx"), ["bad_format:event_id"], []),
    ("notes too long", visit(notes="あ" * 2001), ["too_long:notes"], []),
    ("satisfaction out of range", visit(satisfaction=9), ["out_of_range:satisfaction"], []),
    ("future visit", visit(visited_at=future, produced_at=future), ["future_timestamp:produced_at", "future_timestamp:visited_at"], []),
    # Versions: each event against its own (visit_outcome v1 and v2 side by side).
    ("a v2 visit", visit(schema_version=2, preferred_language="vi", interpreter_used=True), None, []),
    ("a v2 visit without the new fields", visit(schema_version=2), None, []),
    ("a v1 visit with a v2 field", visit(preferred_language="vi"), ["unknown_field"], []),
    ("a v2 field's unknown value", visit(schema_version=2, preferred_language="xx"), ["unknown_value:preferred_language"], []),
    ("no such schema version", visit(schema_version=3), ["wrong_schema_version:schema_version"], []),
    ("unknown vulnerability", visit(vulnerabilities=["poor_lighting", "dragons"]), ["unknown_value:vulnerabilities"], []),
    ("too many materials", visit(materials=["leaflet_burglary"] * 11), ["too_long:materials"], []),
    ("satisfaction without visit", visit(outcome="not_home", vulnerabilities=DROP), ["rule:satisfaction_without_completed_visit"], []),
    ("completed without assessment", visit(vulnerabilities=DROP), ["rule:completed_visit_without_assessment"], []),
    ("assessment without visit", visit(outcome="declined", satisfaction=DROP), ["rule:assessment_without_completed_visit"], []),
    ("visit at 3 am", visit(visited_at=visit()["visited_at"].replace("T10:15", "T03:00")), None, ["rule:visit_outside_working_hours"]),
    ("recorded before visit", visit(produced_at=visit()["visited_at"].replace("T10:15", "T09:00")), None, ["rule:recorded_before_visit"]),
    ("wrong type", visit(residents_count="3"), ["wrong_type:residents_count"], []),
]  # fmt: skip


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory):
    """One validation run serves every case of this module (GX is slow to start)."""
    return Settings(home=tmp_path_factory.mktemp("validation") / "var")


@pytest.fixture(scope="module")
def validated(module_settings):
    settings = module_settings
    topic = settings.topic("visits.outcomes.v1")
    values = [value for _, value, _, _ in VISIT_CASES]
    values += [b'{"event_id": ', "東京都".encode("cp932")]  # undecodable
    values.append(VISIT_CASES[0][1])  # a producer retry: same event_id
    land_values(settings, topic, values)
    dlq_headers = [
        [("dlq_reason", b"unknown_field"), ("dlq_detail", b"field 'x' is not in visit_outcome.v1")]
    ]
    land_values(settings, topic + ".dlq", [b'{"x": 1}'], headers=dlq_headers)
    run = validate(settings, "visit_outcome")
    quarantine = read_curated(settings, "visit_outcome", "quarantine")
    by_offset = {
        (t, o): r
        for t, o, r in zip(
            quarantine.column("kafka_topic").to_pylist(),
            quarantine.column("kafka_offset").to_pylist(),
            quarantine.column("reasons").to_pylist(),
            strict=True,
        )
    }
    return run, by_offset, read_curated(settings, "visit_outcome", "validated")


@pytest.mark.parametrize(
    ("case", "value", "reasons", "warnings"), VISIT_CASES, ids=[c[0] for c in VISIT_CASES]
)
def test_each_rule(module_settings, validated, case, value, reasons, warnings):
    settings = module_settings
    run, quarantined, valid = validated
    offset = [c[0] for c in VISIT_CASES].index(case)
    got = quarantined.get((settings.topic("visits.outcomes.v1"), offset))
    if reasons is None:
        assert got is None, f"{case} was quarantined: {got}"
        assert value["event_id"] in valid.column("event_id").to_pylist()
    else:
        assert sorted(got) == sorted(reasons)
    for w in warnings:
        assert run.warnings_by_reason.get(w, 0) >= 1


def test_undecodable_duplicates_and_producer_rejects_are_quarantined(module_settings, validated):
    settings = module_settings
    run, quarantined, _ = validated
    topic = settings.topic("visits.outcomes.v1")
    n = len(VISIT_CASES)
    assert quarantined[(topic, n)] == ["decode:invalid_json"]
    assert quarantined[(topic, n + 1)] == ["decode:invalid_utf8"]
    assert quarantined[(topic, n + 2)] == ["duplicate_event_id"]  # the retry, not the original
    assert quarantined[(topic + ".dlq", 0)] == ["producer:unknown_field"]
    assert run.duplicates == 1


def test_counts_reconcile_and_are_recorded(module_settings, validated):
    settings = module_settings
    run, quarantined, valid = validated
    assert run.rows_in == len(VISIT_CASES) + 4
    assert run.valid == valid.num_rows == 5  # good, two v2, 3 am, recorded before visit
    assert run.quarantined == len(quarantined)
    assert run.rows_in == run.valid + run.quarantined
    record = json.loads(
        (settings.reports_dir / "validation" / "visit_outcome" / f"{run.run_id}.json").read_text()
    )
    # The latest version (the validated zone's schema); each row was checked against its own.
    assert record["rows_in"] == run.rows_in and record["contract"] == "visit_outcome.v2"
    assert record["suite_version"].startswith("visit_outcome.v2+suite-1.0.0+")
    rules = {r["rule_id"]: r for r in record["rules"]}
    assert (
        rules["contract.bad_format.phone"]["failed"] == 1
        and rules["contract.bad_format.phone"]["severity"] == "error"
    )
    assert rules["contract.bad_format.phone"]["sample_rows"] == [
        f"{settings.topic('visits.outcomes.v1')}[0]@5"
    ]
    assert rules["visit_in_plausible_hours"]["severity"] == "warning"
    assert (settings.reports_dir / "data_docs" / "index.html").exists()


def test_v1_and_v2_rows_share_the_validated_zone(validated):
    """The latest version's columns: a v2 row carries the new fields, a v1 row has them null."""
    _, _, valid = validated
    rows = {r["event_id"]: r for r in valid.to_pylist()}
    for case, value, _, _ in VISIT_CASES:
        if case in ("good", "a v2 visit", "a v2 visit without the new fields"):
            row = rows[value["event_id"]]
            assert row["schema_version"] == value["schema_version"], case
            assert row["preferred_language"] == value.get("preferred_language"), case
            assert row["interpreter_used"] == value.get("interpreter_used"), case
    assert valid.schema.field("preferred_language").metadata[b"pii"] == b"quasi_identifier"


def test_validated_rows_are_typed_and_partitioned_by_municipality_and_month(
    module_settings, validated
):
    settings = module_settings
    _, _, valid = validated
    assert valid.schema.field("visited_at").type.tz == "Asia/Tokyo"
    assert set(valid.column("source_topic").to_pylist()) == {settings.topic("visits.outcomes.v1")}
    month = (NOW - timedelta(days=2)).astimezone().strftime("%Y-%m")
    folder = (
        settings.lake / "validated" / "visit_outcome" / "municipality_code=13104" / f"month={month}"
    )
    assert len(list(folder.glob("*.parquet"))) == 1


def test_nothing_new_means_nothing_done(module_settings, validated):
    settings = module_settings
    again = validate(settings, "visit_outcome")
    assert again.status.value == "nothing_new" and again.rows_in == 0


def test_a_rerun_reproduces_the_same_files(module_settings, validated):
    settings = module_settings
    import sqlalchemy as sa

    from visitshare.db import engine_for
    from visitshare.db.tables import curated_files

    def files():
        with engine_for(settings).connect() as conn:
            return dict(conn.execute(sa.select(curated_files.c.path, curated_files.c.sha256)).all())

    before = files()
    reset(settings, "visit_outcome")
    assert files() == {}
    validate(settings, "visit_outcome")
    assert files() == before
    for path, digest in before.items():
        assert hashlib.sha256((settings.lake / path).read_bytes()).hexdigest() == digest


def test_duplicates_across_batches(settings):
    topic = settings.topic("visits.outcomes.v1")
    first = visit()
    land_values(settings, topic, [first])
    assert validate(settings, "visit_outcome").valid == 1
    land_values(
        settings, topic, [first, visit(outcome="declined", vulnerabilities=DROP, satisfaction=DROP)]
    )
    run = validate(settings, "visit_outcome")
    assert run.duplicates == 1 and run.valid == 1


def test_incident_rules(settings):
    from tests.unit.visitshare.quality.cases import incident

    topic = settings.topic("incidents.reports.v1")
    good = incident()
    backwards = incident(reported_at=good["occurred_at"], occurred_at=good["reported_at"])
    burglary = incident(crime_type="burglary_vacant_home")
    land_values(settings, topic, [good, backwards, burglary])
    run = validate(settings, "incident_report")
    quarantine = read_curated(settings, "incident_report", "quarantine")
    assert quarantine.column("reasons").to_pylist() == [["rule:reported_before_occurred"]]
    assert run.valid == 2 and run.warnings_by_reason == {
        "rule:household_crime_without_household": 1
    }
    assert (
        pc.sum(
            pc.equal(
                read_curated(settings, "incident_report", "validated").column("crime_type"),
                "burglary_vacant_home",
            )
        ).as_py()
        == 1
    )


def test_release_after_fixing_the_suite_moves_rows_and_keeps_counts(
    settings, tmp_path, monkeypatch
):
    from visitshare.quality import quarantine

    topic = settings.topic("visits.outcomes.v1")
    early = visit(visited_at=visit()["visited_at"].replace("T10:15", "T03:00"))
    land_values(settings, topic, [visit(), early, visit(outcome="maybe"), visit(), b"{broken"])
    # A stricter suite: visits at night are an error here.
    suite = json.loads((settings.expectations_dir / "visit_outcome.json").read_text())
    for e in suite["expectations"]:
        if e["meta"]["rule_id"] == "visit_in_plausible_hours":
            e["meta"]["severity"] = "error"
    strict = tmp_path / "strict"
    strict.mkdir()
    (strict / "visit_outcome.json").write_text(json.dumps(suite))
    (strict / "incident_report.json").write_text(
        (settings.expectations_dir / "incident_report.json").read_text()
    )
    monkeypatch.setenv("VISITSHARE_EXPECTATIONS_DIR", str(strict))
    run = validate(Settings(), "visit_outcome")
    assert (run.valid, run.quarantined) == (1, 4)
    listed = {c.reason: c.rows for c in quarantine.counts(Settings(), "visit_outcome")}
    assert listed["rule:visit_outside_working_hours"] == 1 and listed["duplicate_event_id"] == 1
    shown = quarantine.rows(Settings(), "visit_outcome", reason="rule:visit_outside_working_hours")
    assert shown[0]["fields"]["phone"] == "•••" and shown[0]["fields"]["town"] == "西新宿"

    monkeypatch.delenv("VISITSHARE_EXPECTATIONS_DIR")  # the fix: back to the real suite
    released = quarantine.release(Settings(), "visit_outcome")
    assert (released.rows_in, released.valid, released.quarantined) == (
        2,
        1,
        1,
    )  # night visit moves
    valid = read_curated(settings, "visit_outcome", "validated")
    assert sorted(valid.column("event_id").to_pylist()) == sorted(
        [visit()["event_id"], early["event_id"]]
    )
    remaining = read_curated(settings, "visit_outcome", "quarantine")
    assert remaining.num_rows == 3  # unknown outcome, the duplicate, the broken value
    assert valid.num_rows + remaining.num_rows == 5  # still reconciles with what landed


def test_quarantine_show_masks_personal_data_put_into_the_wrong_field(settings):
    """Regression: masking by the field's PII class alone showed a name put into `town`, a
    phone number into `koban_id` and text into `concerns`."""
    topic = settings.topic("visits.outcomes.v1")
    misplaced = visit(
        town="山田 太郎", koban_id="090-1234-5678", concerns=["call me on 090-1234-5678"]
    )
    land_values(settings, topic, [json.dumps(misplaced, ensure_ascii=False).encode(), b"\xff"])
    validate(settings, "visit_outcome")
    shown = quarantine.rows(settings, "visit_outcome")
    fields = shown[0]["fields"]
    text = json.dumps(shown, ensure_ascii=False)
    assert "山田" not in text and "090-1234-5678" not in text
    assert fields["town"] == fields["koban_id"] == fields["concerns"] == "•••"
    assert fields["outcome"] == "completed" and fields["municipality_code"] == "13104"
    assert shown[1]["fields"] == {}  # a value that does not decode shows nothing
    revealed = quarantine.rows(settings, "visit_outcome", reveal=True)
    assert revealed[0]["fields"]["town"] == "山田 太郎"


def test_a_crafted_dlq_header_cannot_put_a_value_into_reports(settings):
    """Anyone can write to a DLQ topic: only reason codes the project knows are reported."""
    topic = settings.topic("visits.outcomes.v1") + ".dlq"
    headers = [[("dlq_reason", "山田 太郎 090-1234-5678".encode())], [("dlq_reason", b"too_long")]]
    land_values(settings, topic, [b"{}", b"{}"], headers=headers)
    run = validate(settings, "visit_outcome")
    assert run.quarantined_by_reason == {"producer:unknown": 1, "producer:too_long": 1}
