"""No report of validation shows a resident's personal data, even for rows that fail rules."""

import json

import sqlalchemy as sa

from producers.simulator import SimConfig, Simulator
from tests.helpers import land_values, personal_values
from visitshare.db import engine_for
from visitshare.db.tables import validation_runs
from visitshare.quality.validate import validate


def test_reports_and_run_records_hold_no_personal_values(settings, contracts):
    events = list(Simulator(SimConfig(days=1, seed=77, bad_rate=0.3), contracts).events())
    secret = personal_values(events, contracts)
    for dataset in ("visit_outcome", "incident_report"):
        contract = contracts.get(dataset)
        values = [e.payload for e in events if e.dataset == dataset]
        land_values(settings, settings.topic(contract.topic), values)
        run = validate(settings, dataset)
        assert run.quarantined > 0 and run.valid > 0  # failing rows with personal data exist
    assert len(secret) > 500

    texts = {}
    for path in [*settings.reports_dir.rglob("*"), *settings.gx_dir.rglob("*")]:
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("utf-8", errors="ignore")
    with engine_for(settings).connect() as conn:
        for record in conn.execute(sa.select(validation_runs.c.record)).scalars():
            texts["validation_runs"] = texts.get("validation_runs", "") + json.dumps(
                record, ensure_ascii=False
            )
    assert any(p.endswith("index.html") for p in texts) and any(
        "data_docs/validations" in p for p in texts
    )
    leaks = [(path, s) for path, text in texts.items() for s in secret if s in text]
    assert leaks == []
