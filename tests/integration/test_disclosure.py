"""Disclosure control across releases, on real stores (Iceberg on SQLite, the lake).

A month's record-level rows are released once, when it closes; events that arrive late wait
until at least k of them can be published together; every release passes the audit that a
partner could run on the published tables alone, also against the release before it.

Time is a fixed clock (VISITSHARE_NOW) moved by the test, a few months before the wall
clock, so that the test means the same at any date.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime, time, timedelta

import pyarrow as pa
import pytest

from tests.helpers import land_values, validated_zone
from visitshare.release.audit import audit_release, published_tables
from visitshare.release.build import output_schemas
from visitshare.release.publish import publish
from visitshare.release.records import TOKYO, last_closed_month
from visitshare.release.releases import release_dir
from visitshare.settings import Settings


@pytest.fixture(autouse=True)
def _one_publish_process(monkeypatch):
    monkeypatch.setenv("VISITSHARE_PUBLISH_WORKERS", "1")


def _month_start(month: str) -> date:
    return date(int(month[:4]), int(month[5:7]), 1)


def _next_month(d: date) -> date:
    return date(d.year + d.month // 12, d.month % 12 + 1, 1)


class Timeline:
    """The fixed clock of this test: `at(day)` is noon (Tokyo) of that day."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        wall = Settings().clock.now() - timedelta(days=95)
        self.month = _month_start(last_closed_month(wall, 0))  # M: a month well in the past

    def at(self, day: date) -> Settings:
        moment = datetime.combine(day, time(12), TOKYO)
        self.monkeypatch.setenv("VISITSHARE_NOW", moment.isoformat())
        return Settings()


def _late_visits(settings: Settings, contracts, day: date, n: int, seed: int) -> int:
    """`n` valid visits of `day` in Shinjuku that arrive now (landed and validated)."""
    from producers.simulator import SimConfig, Simulator
    from visitshare.quality.validate import validate

    config = SimConfig(
        days=1, seed=seed, start=day, datasets=("visit_outcome",), municipalities=("13104",)
    )
    events = Simulator(config, contracts, clock=settings.clock).events()
    values = [e.payload for e in events if e.dataset == "visit_outcome"][:n]
    assert len(values) == n
    land_values(settings, settings.topic(contracts.get("visit_outcome").topic), values)
    run = validate(settings, "visit_outcome")
    assert run.valid == n
    return n


def _visits(report) -> dict:
    return next(d for d in report.datasets if d.dataset == "visit_outcome")


def _audit_passes(settings: Settings, release_id: int) -> None:
    report, page = audit_release(settings, release_id)
    failed = [f"{c.name}: {c.detail}" for c in report.checks if c.result.value != "passed"]
    assert failed == [] and report.result.value == "passed"
    assert page.exists() and (page.with_suffix(".json")).exists()
    if release_id > 1:
        assert report.against == release_id - 1
        assert any(c.name.startswith("visits: differencing") for c in report.checks)


def test_months_close_late_events_wait_for_k_and_every_release_passes_its_audit(
    monkeypatch, contracts
):
    t = Timeline(monkeypatch)
    m, m1 = t.month, _next_month(t.month)
    k = contracts.get("visit_outcome").disclosure.k_anonymity
    grace = contracts.get("visit_outcome").disclosure.close_after_days

    # Release 1, a few days into M+1: M is closed, the first days of M+1 are not.
    s = t.at(m1 + timedelta(days=grace + 1))
    validated_zone(s, contracts, days=8, seed=21, start=m1 - timedelta(days=5))
    first = publish(s)
    v1 = _visits(first.report)
    assert first.report.result == "passed"
    assert v1.rows_published > 0 and v1.rows_held > 0  # M+1's rows wait for M+1 to close
    tables1 = published_tables(s, first.release_id)
    schemas = output_schemas(s)
    for name, table in tables1.items():  # what is published is what the schemas say
        assert table.schema.names == schemas[name].names, name
        assert not any(pa.types.is_null(f.type) for f in schemas[name]), name
    assert "satisfaction_points" not in tables1["outcomes_town_month"].column_names
    visits1 = tables1["visits"]
    assert visits1.num_rows == v1.rows_published
    months = set(visits1.column("visited_month").drop_null().to_pylist())
    assert months <= {f"{m:%Y-%m}"}  # nothing of the open month
    _audit_passes(s, first.release_id)

    # Fewer than k late visits of M: held, the published rows do not move.
    s = t.at(m1 + timedelta(days=grace + 2))
    _late_visits(s, contracts, m + timedelta(days=20), k - 2, seed=901)
    second = publish(s)
    v2 = _visits(second.report)
    assert second.report.result == "passed"
    assert "incremental" in second.report.scope  # its figures: the partition it recomputed
    assert second.tables["visits"]["rows"] == first.tables["visits"]["rows"]
    assert v2.rows_held == k - 2
    visits2 = published_tables(s, second.release_id)["visits"]
    assert _rows(visits2) == _rows(visits1)  # comparing the two releases shows nothing new
    _audit_passes(s, second.release_id)

    # More late visits: together at least k, they are published as one batch.
    s = t.at(m1 + timedelta(days=grace + 3))
    _late_visits(s, contracts, m + timedelta(days=21), k + 3, seed=902)
    third = publish(s)
    v3 = _visits(third.report)
    assert third.report.result == "passed"
    accounted = v3.rows_published + v3.rows_suppressed + v3.rows_held
    assert accounted == v2.rows_published + v2.rows_suppressed + v2.rows_held + k + 3
    assert v3.rows_held == 0  # the whole batch is published (or suppressed), nothing waits
    grew = third.tables["visits"]["rows"] - second.tables["visits"]["rows"]
    assert grew == v3.rows_published - v2.rows_published
    visits3 = published_tables(s, third.release_id)["visits"]
    old = _rows(visits2)
    assert not (old - _rows(visits3))  # earlier rows are never rewritten
    _audit_passes(s, third.release_id)

    # M+1 closes: its rows are published; nothing is held any more.
    s = t.at(_next_month(m1) + timedelta(days=grace + 1))
    fourth = publish(s)
    v4 = _visits(fourth.report)
    assert fourth.report.result == "passed" and v4.rows_held == 0
    visits4 = published_tables(s, fourth.release_id)["visits"]
    assert f"{m1:%Y-%m}" in set(visits4.column("visited_month").drop_null().to_pylist())
    _audit_passes(s, fourth.release_id)

    # The command an auditor runs, on a release and against any earlier one.
    out = subprocess.run(
        [sys.executable, "-m", "visitshare.cli", "audit", "release", str(fourth.release_id),
         "--against", str(first.release_id)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"Audit of release {fourth.release_id} against {first.release_id}" in out.stdout
    saved = release_dir(s, fourth.release_id) / f"audit-vs-{first.release_id}.json"
    assert json.loads(saved.read_text())["result"] == "passed"


def _rows(table: pa.Table) -> set[str]:
    return {json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist()}
