"""The pages auditors open (Data Docs, the disclosure report, the audit report) in Chromium,
with every request that leaves the machine refused: they must render completely from the files
themselves, without a console error, and show what the run records and reports hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import land_values, personal_values, validated_zone
from tests.unit.visitshare.test_datadocs import OUTSIDE, site_files, validate_visits
from visitshare.quality.suites import load_suite
from visitshare.quality.validate import validate
from visitshare.release.audit import audit_release
from visitshare.release.publish import publish

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def _one_publish_process(monkeypatch):
    """Shards built in-process (small releases; the pool is exercised elsewhere)."""
    monkeypatch.setenv("VISITSHARE_PUBLISH_WORKERS", "1")


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def test_data_docs_render_offline_with_every_run(settings, contracts, offline_page):
    first, events = validate_visits(settings, contracts, seed=11)
    second, more = validate_visits(settings, contracts, seed=12)
    incidents = [e.payload for e in events if e.dataset == "incident_report"]
    land_values(settings, settings.topic("incidents.reports.v1"), incidents)
    third = validate(settings, "incident_report")
    runs = {r.run_id: r for r in (first, second, third)}
    docs = settings.reports_dir / "data_docs"
    page = offline_page.page

    page.goto(Path(first.data_docs or "").as_uri())
    rows = page.locator("#runs tbody tr")
    assert rows.count() == sum(len(r.batches) for r in runs.values())
    assert {rows.nth(i).get_attribute("data-run") for i in range(rows.count())} == set(runs)
    for run in runs.values():
        suite = load_suite(settings.expectations_dir, contracts.get(run.dataset))
        rules = [r for r in run.rules if r.source != "contract"]
        cells = page.locator(f'#runs tbody tr[data-run="{run.run_id}"] td').all_inner_texts()
        assert cells[3] == run.batches[0]
        assert cells[4] == ("failed" if any(r.failed for r in rules) else "passed")
        assert _number(cells[5]) == len(suite.rules)
        assert _number(cells[6]) == sum(1 for r in rules if r.failed)
        assert _number(cells[7]) == max(r.evaluated for r in rules)
        assert _number(cells[8]) == sum(r.failed for r in rules)
    offline_page.screenshot("auditor-data-docs-index")

    page.locator(f'#runs tbody tr[data-run="{first.run_id}"] a').click()
    page.wait_for_load_state()
    suite = load_suite(settings.expectations_dir, contracts.get("visit_outcome"))
    assert page.locator("#expectations tbody tr").count() == len(suite.rules)
    failed = [r for r in first.rules if r.source != "contract" and r.failed]
    assert failed  # the rule breakers reached the suite
    for rule in failed:
        cells = page.locator(f'#expectations tr[data-rule="{rule.rule_id}"] td').all_inner_texts()
        assert cells[5] == "failed"
        assert _number(cells[6]) == rule.evaluated and _number(cells[7]) == rule.failed
    offline_page.screenshot("auditor-data-docs-validation")

    page.locator("header a", has_text="visit_outcome").click()
    page.wait_for_load_state()
    assert page.locator("#expectations tbody tr").count() == len(suite.rules)
    offline_page.screenshot("auditor-data-docs-suite")
    offline_page.assert_clean()

    files = site_files(docs)
    assert not [p for p, text in files.items() if OUTSIDE.search(text)]
    secret = personal_values(events + more, contracts)
    assert not [(p, s) for p, text in files.items() for s in secret if s in text]


def test_disclosure_and_audit_reports_render_offline(settings, contracts, offline_page):
    events = validated_zone(settings, contracts, days=2, seed=13)
    published = publish(settings)
    assert published is not None
    report = published.report
    page = offline_page.page

    page.goto(Path(published.report_html).as_uri())
    assert page.locator("#checks tbody tr").count() == len(report.checks)
    results = page.locator("#checks tbody tr td:nth-child(2)").all_inner_texts()
    assert results == [c.result.value for c in report.checks]
    datasets = page.locator("#datasets thead th").all_inner_texts()[1:]
    assert datasets == [d.dataset for d in report.datasets]
    tables = page.locator("#aggregates thead th").all_inner_texts()[1:]
    assert tables == [a.table for a in report.aggregates]
    published_row = page.locator('#datasets tbody tr:has(th:text-is("rows_published")) td')
    assert [_number(t) for t in published_row.all_inner_texts()] == [
        d.rows_published for d in report.datasets
    ]
    offline_page.screenshot("auditor-disclosure")

    audit, audit_page = audit_release(settings, published.release_id)
    page.goto(audit_page.as_uri())
    assert page.locator("#checks tbody tr").count() == len(audit.checks)
    names = page.locator("#checks tbody tr td:nth-child(1)").all_inner_texts()
    assert names == [c.name for c in audit.checks]
    offline_page.screenshot("auditor-audit")
    offline_page.assert_clean()

    secret = personal_values(events, contracts)
    for path in (Path(published.report_html), audit_page):
        text = path.read_text(encoding="utf-8")
        assert not OUTSIDE.search(text) and "<script" not in text
        assert not [s for s in secret if s in text]
