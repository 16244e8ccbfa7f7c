"""`visitshare validate` and `visitshare quarantine ...` as a data engineer runs them."""

import os
import subprocess
import sys
import uuid

from producers.simulator import SimConfig, Simulator
from tests.helpers import land_values


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "visitshare.cli", *args],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def test_validate_then_inspect_and_release_the_quarantine(settings, contracts):
    events = [
        e.payload
        for e in Simulator(SimConfig(days=1, seed=5, bad_rate=0.2), contracts).events()
        if e.dataset == "visit_outcome"
    ]
    good = next(
        e
        for e in events
        if isinstance(e, dict) and e.get("resident_name") and e.get("schema_version") == 1
    )
    events.append({**good, "event_id": str(uuid.uuid4()), "outcome": "maybe"})
    land_values(settings, settings.topic("visits.outcomes.v1"), events)

    out = cli("validate", "--dataset", "visit_outcome")
    assert out.returncode == 0, out.stderr
    assert "visit_outcome validated:" in out.stdout and "Quarantined by reason" in out.stdout
    assert "Data Docs:" in out.stdout

    listed = cli("quarantine", "list")
    assert listed.returncode == 0 and "decode:invalid_json" in listed.stdout

    shown = cli(
        "quarantine",
        "show",
        "--dataset",
        "visit_outcome",
        "--reason",
        "unknown_value:outcome",
        "--limit",
        "3",
    )
    assert shown.returncode == 0 and "unknown_value:outcome" in shown.stdout
    assert "resident_name=•••" in shown.stdout  # masked by default

    released = cli("quarantine", "release", "--dataset", "visit_outcome")
    assert released.returncode == 0, released.stderr
    assert "re-validated" in released.stdout and "0 valid" in released.stdout  # nothing was fixed

    again = cli("validate", "--dataset", "visit_outcome")
    assert again.returncode == 0 and "nothing new" in again.stdout


def test_a_malformed_suite_is_a_clear_error(settings, tmp_path, monkeypatch):
    (tmp_path / "visit_outcome.json").write_text(
        '{"expectations": [{"type": "expect_column_values_to_not_be_null"}]}'
    )
    monkeypatch.setenv("VISITSHARE_EXPECTATIONS_DIR", str(tmp_path))
    out = cli("validate", "--dataset", "visit_outcome")
    assert out.returncode == 1
    assert "visit_outcome.json: expectation #1: meta.rule_id is missing" in out.stderr
