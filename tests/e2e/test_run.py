"""`visitshare run` (what `make run` calls): Airflow runs the DAGs, chained by Assets."""

import os
import re
import subprocess
import sys

from tests.helpers import free_port, read_topic
from visitshare.orchestration import stack
from visitshare.producing.broker import EmbeddedBroker
from visitshare.release.releases import get_release, read_table
from visitshare.settings import Settings


def _stage(stdout: str, stage: str) -> dict[str, int]:
    """One row of the "From topic to release" table: dataset → count."""
    header = next(l for l in stdout.splitlines() if l.startswith("┃ stage"))  # noqa: E741
    datasets = [c.strip() for c in header.strip("┃ ").split("┃")][1:]
    line = next(l for l in stdout.splitlines() if l.startswith(f"│ {stage} "))  # noqa: E741
    cells = [c.strip() for c in line.strip("│ ").split("│")][1:]
    return {d: int(c.replace(",", "")) for d, c in zip(datasets, cells, strict=True)}


def test_run_goes_from_topic_to_release_through_airflow(isolated_env, monkeypatch):
    monkeypatch.setenv("VISITSHARE_BROKER_PORT", str(free_port()))
    monkeypatch.setenv("VISITSHARE_AIRFLOW_API_PORT", str(free_port()))
    settings = Settings()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "visitshare.cli", "run", "--days", "2"],
            capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "220"},
        )  # fmt: skip
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert EmbeddedBroker(settings).status().running
        # Airflow did the work: the ingest run (triggered) and the curate run (by its assets)
        assert re.search(r"ingest_events manual success", out.stdout)
        assert re.search(r"curate_program_data asset_triggered success", out.stdout)
        assert all(pid is None for pid in stack.running(settings).values())  # stopped again

        assert "│ reconciles " in out.stdout and "✗" not in out.stdout
        count = {
            stage: _stage(out.stdout, stage)
            for stage in ("published to the topic", "rejected by the producer (DLQ)",
                          "earlier backlog", "landed", "valid", "quarantined",
                          "released (record-level rows)")
        }  # fmt: skip
        for dataset, topic in (("visit_outcome", "visits.outcomes.v1"),
                               ("incident_report", "incidents.reports.v1")):  # fmt: skip
            published = count["published to the topic"][dataset]
            dlq = count["rejected by the producer (DLQ)"][dataset]
            landed, valid = count["landed"][dataset], count["valid"][dataset]
            assert count["earlier backlog"][dataset] == 0 and landed == published + dlq
            assert valid + count["quarantined"][dataset] == landed
            assert count["quarantined"][dataset] >= dlq
            assert len(read_topic(settings, topic, expected=published)) == published
        released = count["released (record-level rows)"]["visit_outcome"]
        assert count["rejected by the producer (DLQ)"]["visit_outcome"] > 0
        assert 0 < released <= count["valid"]["visit_outcome"]

        rel = get_release(settings, "latest")
        assert f"Release {rel.id}" in out.stdout and rel.id == 1
        assert read_table(settings, rel, "visits").num_rows == released
        assert rel.notice_sent and len(read_topic(settings, "releases.v1", expected=1)) == 1
        assert re.search(r"audit: (\d+)/\1 checks passed", out.stdout)
        assert "Data Docs:" in out.stdout and "disclosure.html" in out.stdout
        assert "visitshare pull --partner shinjuku" in out.stdout
        # An auditor's recomputation from the published tables agrees with the gate.
        audit = subprocess.run(
            [sys.executable, "-m", "visitshare.cli", "audit", "release", str(rel.id)],
            capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "220"},
        )  # fmt: skip
        assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]
        assert "k-anonymity" in audit.stdout and "failed" not in audit.stdout
    finally:
        stack.down(settings, say=lambda _: None)
