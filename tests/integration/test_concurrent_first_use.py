"""Landers and validators started at the same moment on a brand-new home (crash class: the
first use of a fresh database under concurrency, which once failed on `journal_mode=wal`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from producers.publisher import Outgoing, Publisher
from producers.simulator import SimConfig, Simulator
from visitshare.quality.validate import validate


def test_landers_and_validators_at_once_on_a_new_home(kafka_settings, contracts):
    settings = kafka_settings
    events = list(Simulator(SimConfig(days=1, seed=31, bad_rate=0.05), contracts).events())
    with Publisher(settings, contracts) as pub:
        report = pub.publish(Outgoing(e.dataset, e.payload) for e in events)
    assert report.reconciles()
    database = Path(settings.db_url.removeprefix("sqlite:///"))
    assert not database.exists()  # the project database is born in the race below

    env = {**os.environ, "VISITSHARE_LAND_WORKERS": "3"}
    commands = [
        ["land", "--drain"],
        ["validate"],
        ["validate"],
        ["validate", "--dataset", "visit_outcome"],
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "visitshare.cli", *c],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for c in commands
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for c, p, (out, err) in zip(commands, procs, outs, strict=True):
        assert p.returncode == 0, f"{c}: {out.decode()[-1500:]}\n{err.decode()[-2500:]}"

    runs = {d: validate(settings, d) for d in ("visit_outcome", "incident_report")}  # the rest
    from visitshare.quality.validate import read_curated

    for dataset in runs:
        valid = read_curated(settings, dataset, "validated")
        quarantined = read_curated(settings, dataset, "quarantine")
        sent = sum(e.dataset == dataset for e in events)
        assert (valid.num_rows if valid else 0) + (
            quarantined.num_rows if quarantined else 0
        ) == sent
