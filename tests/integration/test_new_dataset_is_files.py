"""A new dataset is files, not code: a copy of the project gets one more contract (ODCS v3),
suite, topic declaration and outcome declaration (nothing else), and its events are produced,
landed, validated and released by the unchanged code, run from the copy as a user runs it
(subprocess, real broker)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from visitshare.contracts import geography
from visitshare.release.records import closed_window
from visitshare.settings import REPO_ROOT, Settings

CONTRACT = """\
# A resident reports a street light that is out (a toy dataset: files only, no code).
apiVersion: v3.2.0
kind: DataContract
id: street_light_report
name: street_light_report
version: 1.0.0
status: active
schema:
  - name: street_light_report
    physicalName: streets.lights.v1
    physicalType: topic
    logicalType: object
    description: A street light reported out of order, where and when.
    properties:
      - name: event_id
        logicalType: string
        physicalType: string
        required: true
        classification: public
        description: Idempotency key.
        logicalTypeOptions: {format: uuid}
        customProperties:
          - {property: disclosure, value: drop}
      - name: schema_version
        logicalType: integer
        physicalType: integer
        required: true
        classification: public
        description: Contract version.
        logicalTypeOptions: {minimum: 1, maximum: 1}
        customProperties:
          - {property: disclosure, value: drop}
      - name: produced_at
        logicalType: timestamp
        physicalType: string
        required: true
        classification: quasi_identifier
        description: When it was sent.
        logicalTypeOptions: {minimum: '2000-01-01T00:00:00+09:00', timezone: true}
        customProperties:
          - {property: notFuture, value: true}
          - {property: disclosure, value: drop}
      - name: report_id
        logicalType: string
        physicalType: string
        required: true
        classification: direct_identifier
        description: Case number.
        logicalTypeOptions: {maxLength: 20, pattern: '^L-[0-9]{6}$'}
        customProperties:
          - {property: disclosure, value: drop}
      - name: reported_at
        logicalType: timestamp
        physicalType: string
        required: true
        classification: quasi_identifier
        description: When it was reported.
        logicalTypeOptions: {minimum: '2000-01-01T00:00:00+09:00', timezone: true}
        customProperties:
          - {property: notFuture, value: true}
          - {property: disclosure, value: {coarsen: day}}
      - name: municipality_code
        logicalType: string
        physicalType: string
        required: true
        classification: quasi_identifier
        description: JIS municipality code.
        customProperties:
          - {property: domain, value: tokyo_municipality}
          - {property: disclosure, value: keep}
      - name: town
        logicalType: string
        physicalType: string
        required: true
        classification: quasi_identifier
        description: Town name as in Japan Post's data.
        logicalTypeOptions: {maxLength: 60}
        customProperties:
          - {property: domain, value: tokyo_town}
          - {property: disclosure, value: keep}
      - name: light_kind
        logicalType: string
        physicalType: string
        required: true
        classification: public
        description: Which kind of light.
        enum:
          - {value: street}
          - {value: park}
          - {value: crossing}
        customProperties:
          - {property: disclosure, value: keep}
customProperties:
  - {property: eventTime, value: reported_at}
  - {property: key, value: [municipality_code, town]}
  - property: disclosure
    value:
      k_anonymity: 5
      l_diversity: 2
      min_cell_count: 10
      suppression_budget: 0.1
      close_after_days: 3
      aggregates:
        mode: dp
        rho_per_release: 0.5
        rho_cap: 2.5
        refresh_days: 7
        max_items_per_list: 3
      quasi_identifiers:
        municipality_code: {levels: [exact]}
        town: {levels: [town, town_group, municipality]}
        reported_at: {levels: [day, week, month]}
"""

OUTCOME = """\
name: lights_municipality_month
description: Street lights reported out, per municipality and month, by kind.
level: municipality
grain: municipality_month
inputs: {street_light_report: reported_at}
sql: |
  SELECT municipality_code, month, count(*) AS reports,
         count(*) FILTER (WHERE light_kind = 'park') AS park_lights
  FROM street_light_report GROUP BY ALL
counts:
  - {name: report, columns: [reports, park_lights]}
ratios: {park_share: [park_lights, reports]}
"""

SUITE = {
    "name": "street_light_report",
    "meta": {"version": "1.0.0", "description": "Toy rules."},
    "expectations": [
        {
            "type": "expect_column_values_to_be_unique",
            "kwargs": {"column": "event_id"},
            "meta": {"rule_id": "event_id_unique", "severity": "error",
                     "reason": "duplicate_event_id"},
        },
        {
            "type": "expect_column_pair_values_a_to_be_greater_than_b",
            "kwargs": {"column_A": "produced_at", "column_B": "reported_at", "or_equal": True},
            "meta": {"rule_id": "sent_after_report", "severity": "error",
                     "reason": "rule:sent_before_report"},
        },
    ],
}  # fmt: skip


def _copy_project(target: Path) -> Path:
    ignore = shutil.ignore_patterns(".git", ".venv", "var", "__pycache__", ".*_cache", "tests")
    shutil.copytree(REPO_ROOT, target, ignore=ignore)
    return target


def _events(settings: Settings, n_good: int) -> list[dict]:
    """Reports in a closed month, all in one town (enough rows for k), and two bad ones."""
    first = closed_window(3, settings.clock.now(), 3)  # a day of the latest closed month
    start = datetime.combine(first, time(6), tzinfo=ZoneInfo("Asia/Tokyo"))
    town = geography.municipalities()["13104"].towns[0]
    out = []
    for i in range(n_good):
        at = start + timedelta(hours=i)
        out.append(
            {
                "event_id": str(uuid.UUID(int=i + 1)),
                "schema_version": 1,
                "produced_at": (at + timedelta(minutes=5)).isoformat(),
                "report_id": f"L-{i:06d}",
                "reported_at": at.isoformat(),
                "municipality_code": "13104",
                "town": town,
                "light_kind": ["street", "park", "crossing"][i % 3],
            }
        )
    bad_kind = dict(out[0], event_id=str(uuid.UUID(int=10_001)), light_kind="moon")
    bad_order = dict(  # passes the contract, fails the suite: sent before it was reported
        out[1],
        event_id=str(uuid.UUID(int=10_002)),
        produced_at=(start - timedelta(days=1)).isoformat(),
    )
    return [*out, bad_kind, bad_order]


def test_a_new_contract_suite_and_topic_are_released_with_no_code(
    kafka_settings, isolated_env, tmp_path
):
    project = _copy_project(tmp_path / "project")
    (project / "schemas" / "street_light_report.v1.yaml").write_text(CONTRACT, encoding="utf-8")
    (project / "expectations" / "street_light_report.json").write_text(json.dumps(SUITE))
    (project / "schemas" / "outcomes" / "lights_municipality_month.yaml").write_text(OUTCOME)
    topics = yaml.safe_load((project / "infra" / "topics.yaml").read_text(encoding="utf-8"))
    topics["topics"] += [
        {"name": "streets.lights.v1", "partitions": 2, "retention": "14d", "description": "toy"},
        {
            "name": "streets.lights.v1.dlq",
            "partitions": 1,
            "retention": "30d",
            "description": "toy",
        },
    ]
    (project / "infra" / "topics.yaml").write_text(yaml.safe_dump(topics), encoding="utf-8")
    events = _events(kafka_settings, 40)
    export = tmp_path / "street_light_report.jsonl"
    export.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")

    # The copy's own code and files: REPO_ROOT (contracts, suites, topics) is the copy.
    env = {**os.environ, "PYTHONPATH": str(project), "COLUMNS": "200"}
    env.pop("VISITSHARE_CONTRACTS_DIR", None)

    def cli(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "visitshare.cli", *args],
            cwd=project, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
        return done

    cli("topics", "apply")
    produced = cli("produce", "--from", str(export))
    assert "streets.lights.v1.dlq" in produced.stdout  # the unknown kind, before sending
    cli("land", "--drain")
    cli("validate", "--dataset", "street_light_report")
    cli("publish")

    settings = Settings(contracts_dir=project / "schemas")
    from visitshare.db import engine_for
    from visitshare.db.tables import validation_runs
    from visitshare.release.releases import get_release, read_table

    with engine_for(settings).connect() as conn:
        runs = conn.execute(
            validation_runs.select().where(validation_runs.c.dataset == "street_light_report")
        ).all()
    assert runs, "no validation run recorded for the new dataset"
    # 42 landed (the unknown kind on the DLQ, where the producer put it), 40 valid, 2
    # quarantined: the unknown kind, and the one the suite's rule caught; counts reconcile.
    assert sum(r.rows_in for r in runs) == 42
    assert (sum(r.valid for r in runs), sum(r.quarantined for r in runs)) == (40, 2)
    records = json.dumps([r.record for r in runs])
    assert "sent_before_report" in records and "unknown_value" in records
    release = get_release(settings)
    assert "street_light_report" in release.tables
    shared = read_table(settings, release, "street_light_report")
    assert shared.num_rows == 40  # the 40 good reports; none dropped, none twice
    assert "report_id" not in shared.column_names  # a direct identifier never leaves
    assert set(shared.column("light_kind").to_pylist()) == {"street", "park", "crossing"}
    assert {"municipality_code", "town"} <= set(shared.column_names)
    # Its declared outcome table is in the release too, its counts noisy (DP by default).
    lights = read_table(settings, release, "lights_municipality_month")
    assert lights.num_rows >= 1 and "report_counts_moe95" in lights.column_names
