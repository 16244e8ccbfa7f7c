"""`visitshare run` (what `make run` calls) on its own embedded broker."""

import os
import re
import subprocess
import sys

from tests.helpers import free_port, read_topic
from visitshare.broker import EmbeddedBroker
from visitshare.settings import Settings


def test_run_brings_up_the_stack_publishes_and_summarizes(isolated_env, monkeypatch):
    monkeypatch.setenv("VISITSHARE_BROKER_PORT", str(free_port()))
    settings = Settings()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "visitshare.cli", "run", "--days", "2"],
            capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert EmbeddedBroker(settings).status().running
        published = int(
            re.search(r"visits\.outcomes\.v1\s+│\s+([\d,]+)", out.stdout).group(1).replace(",", "")
        )
        dlq = int(
            re.search(r"visits\.outcomes\.v1\.dlq\s+│\s+([\d,]+)", out.stdout)
            .group(1)
            .replace(",", "")
        )
        events_in = int(
            re.search(r"events in\s+│\s+([\d,]+)", out.stdout).group(1).replace(",", "")
        )
        assert "Rejected by the contract" in out.stdout and "events/s" in out.stdout
        assert len(read_topic(settings, "visits.outcomes.v1", expected=published)) == published
        assert len(read_topic(settings, "visits.outcomes.v1.dlq", expected=dlq)) == dlq > 0
        assert events_in > published + dlq  # incidents too
        assert "Reconciliation" in out.stdout and "✗" not in out.stdout
        assert out.stdout.count("✓") == 5  # every declared topic reconciles
        validated = re.search(
            r"visit_outcome validated: ([\d,]+) rows → ([\d,]+) valid, ([\d,]+) quarantined",
            out.stdout,
        )
        rows_in, valid, quarantined = (int(g.replace(",", "")) for g in validated.groups())
        assert rows_in == published + dlq == valid + quarantined and quarantined >= dlq > 0
        assert "Data Docs:" in out.stdout and "index.html" in out.stdout
        # ... and ends with a published release: id, rows per table, disclosure summary
        visits = int(re.search(r"│ visits\s+│\s+([\d,]+)", out.stdout).group(1).replace(",", ""))
        assert "Release 1" in out.stdout and 0 < visits <= valid
        assert re.search(r"privacy checks: (\d+)/\1 passed", out.stdout)
        assert "disclosure.html" in out.stdout and "visitshare pull --partner" in out.stdout
    finally:
        EmbeddedBroker(settings).stop()
