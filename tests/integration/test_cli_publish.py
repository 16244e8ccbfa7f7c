"""The producer commands end to end, as a user runs them (subprocess, real broker)."""

import json
import os
import re
import subprocess
import sys

from tests.helpers import read_topic


def cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "visitshare.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def _count(pattern: str, text: str) -> int:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in:\n{text}"
    return int(m.group(1).replace(",", ""))


def test_external_bootstrap_is_used_and_no_broker_is_started(kafka_settings, isolated_env):
    out = cli("simulate", "--days", "1", "--municipalities", "shinjuku", "--publish")
    assert out.returncode == 0, out.stderr
    published = _count(r"visits\.outcomes\.v1\s+│\s+([\d,]+)", out.stdout)
    records = read_topic(
        kafka_settings, kafka_settings.topic("visits.outcomes.v1"), expected=published
    )
    assert len(records) == published > 0
    assert not (isolated_env / "broker").exists()  # nothing of ours was started
    status = cli("broker", "status")
    assert status.returncode == 0 and kafka_settings.bootstrap in status.stdout


def test_produce_from_jsonl_and_csv_exports(kafka_settings, tmp_path):
    out = cli("simulate", "--days", "1", "--seed", "4", "--bad-rate", "0.1", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = (tmp_path / "visit_outcome.jsonl").read_bytes().splitlines()
    good = [json.loads(x) for x in lines if _is_json_object(x)]

    run = cli("produce", "--from", str(tmp_path / "visit_outcome.jsonl"))
    assert run.returncode == 0, run.stderr
    assert _count(r"events in\s+│\s+([\d,]+)", run.stdout) == len(lines)
    dlq = _count(r"visits\.outcomes\.v1\.dlq\s+│\s+([\d,]+)", run.stdout)
    delivered = _count(r"visits\.outcomes\.v1\s+│\s+([\d,]+)", run.stdout)
    assert (
        delivered + dlq == len(lines) and delivered <= len(good) and dlq >= len(lines) - len(good)
    )

    # The export below was written on 2026-11-20: judge its timestamps as of the next day.
    csv_path = tmp_path / "incident_report_export.csv"
    csv_path.write_text(
        "event_id,schema_version,produced_at,incident_id,reported_at,occurred_at,crime_type,"
        "municipality_code,town,status,victim_age_band\n"
        "7b0b5a2e-8a39-4c8e-9d4e-1f1e0c6a9b11,1,2026-11-20T10:00:00+09:00,I-13104-0000ABCDEF,"
        "2026-11-20T09:00:00+09:00,2026-11-19T22:00:00+09:00,bicycle_theft,13104,西新宿,reported,20-29\n"
        "7b0b5a2e-8a39-4c8e-9d4e-1f1e0c6a9b12,one,2026-11-20T10:00:00+09:00,I-13104-0000ABCDEG,"
        "2026-11-20T09:00:00+09:00,2026-11-19T22:00:00+09:00,arson,13104,西新宿,reported,20-29\n",
        encoding="utf-8",
    )
    run = cli(
        "produce", "--from", str(csv_path), env={"VISITSHARE_NOW": "2026-11-21T00:00:00+09:00"}
    )
    assert run.returncode == 0, run.stderr
    topic = kafka_settings.topic("incidents.reports.v1")
    (record,) = read_topic(kafka_settings, topic, expected=1)
    assert json.loads(record.value)["schema_version"] == 1
    (dead,) = read_topic(kafka_settings, topic + ".dlq", expected=1)
    reasons = {v["reason"] for v in json.loads(dict(dead.headers)["dlq_violations"])}
    assert reasons == {"wrong_type", "unknown_value"}


def test_a_shift_jis_csv_is_refused_before_sending(kafka_settings, tmp_path):
    path = tmp_path / "incident_report.csv"
    path.write_bytes("town\n西新宿\n".encode("cp932"))
    run = cli("produce", "--from", str(path))
    assert run.returncode == 1 and "--encoding cp932" in run.stderr
    assert read_topic(kafka_settings, kafka_settings.topic("incidents.reports.v1.dlq")) == []


def _is_json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
