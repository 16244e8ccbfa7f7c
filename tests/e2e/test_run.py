"""`visitshare run` (what `make run` calls): Airflow runs the DAGs, chained by Assets."""

import os
import re
import subprocess
import sys

from tests.helpers import free_port, read_topic
from visitshare import stack
from visitshare.broker import EmbeddedBroker
from visitshare.release import get_release, read_table
from visitshare.settings import Settings


def _row(stdout: str, dataset: str) -> list[int]:
    line = next(l for l in stdout.splitlines() if l.startswith(f"│ {dataset} "))  # noqa: E741
    cells = [c.strip() for c in line.strip("│ ").split("│")]
    assert cells[-1] == "✓", line
    return [int(c.replace(",", "")) for c in cells[1:-1]]


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

        for dataset, topic in (("visit_outcome", "visits.outcomes.v1"),
                               ("incident_report", "incidents.reports.v1")):  # fmt: skip
            published, dlq, backlog, landed, valid, quarantined, released = _row(
                out.stdout, dataset
            )
            assert backlog == 0 and landed == published + dlq
            assert valid + quarantined == landed and quarantined >= dlq
            assert len(read_topic(settings, topic, expected=published)) == published
            if dataset == "visit_outcome":
                assert dlq > 0 and 0 < released <= valid

        rel = get_release(settings, "latest")
        assert f"Release {rel.id}" in out.stdout and rel.id == 1
        assert read_table(settings, rel, "visits").num_rows == _row(out.stdout, "visit_outcome")[6]
        assert rel.notice_sent and len(read_topic(settings, "releases.v1", expected=1)) == 1
        assert re.search(r"privacy checks: (\d+)/\1 passed", out.stdout)
        assert "Data Docs:" in out.stdout and "disclosure.html" in out.stdout
        assert "visitshare pull --partner shinjuku" in out.stdout
    finally:
        stack.down(settings, say=lambda _: None)
