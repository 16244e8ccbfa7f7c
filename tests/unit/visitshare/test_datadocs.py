"""Data Docs rendered with our own templates from the project's GX stores (var/gx).

The input is the raw zone (landing's own code) validated by the real validation step, so the
stores hold what validation stores; GX's own site is built with GX itself where a test needs
it. No network: no page may reference anything outside the docs folder.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

from great_expectations.core.expectation_validation_result import (
    ExpectationSuiteValidationResult,
)
from great_expectations.data_context.types.resource_identifiers import ValidationResultIdentifier

from producers.simulator import SimConfig, Simulator
from tests.helpers import land_values, personal_values
from visitshare.quality.datadocs import RUNS, site_format
from visitshare.quality.gxrun import ReportsSite
from visitshare.quality.records import ValidationRun
from visitshare.quality.suites import load_suite
from visitshare.quality.validate import validate
from visitshare.settings import Settings

OUTSIDE = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def _events(settings: Settings, contracts, seed: int) -> list:
    """A small day of simulated events (two days ago, so nothing is in the future)."""
    start = (settings.clock.now() - timedelta(days=3)).date()
    config = SimConfig(
        days=1, municipalities=("13104",), scale=0.3, seed=seed, bad_rate=0.1, start=start
    )
    return list(Simulator(config, contracts, clock=settings.clock).events())


def _rule_breakers(values: list) -> list[dict]:
    """Copies of valid completed visits that break one suite rule each: an error rule (a
    satisfaction score on a visit nobody answered) and a warning rule (a visit at 3 am)."""
    completed = [
        v
        for v in values
        if isinstance(v, dict)
        and v.get("schema_version") == 1
        and v.get("outcome") == "completed"
        and v.get("satisfaction") is not None
    ]
    out = []
    for v in completed[:2]:
        nobody = {**v, "event_id": str(uuid.uuid4()), "outcome": "not_home"}
        nobody.pop("vulnerabilities", None)
        out.append(nobody)
    for v in completed[2:3]:
        out.append({**v, "event_id": str(uuid.uuid4()), "visited_at": v["visited_at"][:11] + "03:00:00+09:00"})  # fmt: skip
    return out


def validate_visits(settings: Settings, contracts, seed: int) -> tuple[ValidationRun, list]:
    """Land a small day of visits with rule breakers, validate them; (run, events)."""
    events = _events(settings, contracts, seed)
    values = [e.payload for e in events if e.dataset == "visit_outcome"]
    land_values(settings, settings.topic("visits.outcomes.v1"), values + _rule_breakers(values))
    return validate(settings, "visit_outcome"), events


class _Tables(HTMLParser):
    """The body rows of each table of a page (by table id), as lists of cell texts, and every
    src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self._table: str | None = None
        self._in_body = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "table":
            self._table = a.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join(" ".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> _Tables:
    p = _Tables()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def site_files(docs: Path) -> dict[Path, str]:
    return {
        p: p.read_bytes().decode("utf-8", errors="ignore") for p in docs.rglob("*") if p.is_file()
    }


def assert_self_contained(docs: Path) -> None:
    """No file of the site references anything outside it, and every local link resolves."""
    for path, text in site_files(docs).items():
        assert not OUTSIDE.search(text), f"{path} references the network"
        assert "<script" not in text.lower() and "@import" not in text, path
        if path.suffix == ".html":
            for link in parse(path).links:
                target = (path.parent / link.split("#")[0]).resolve()
                assert target.is_file(), f"{path}: broken link {link}"


def test_every_result_has_a_page_and_a_row_with_the_run_counts(settings, contracts):
    first, events = validate_visits(settings, contracts, seed=3)
    second, more = validate_visits(settings, contracts, seed=4)
    docs = settings.reports_dir / "data_docs"
    assert first.data_docs == second.data_docs == str(docs / "index.html")
    suite = load_suite(settings.expectations_dir, contracts.get("visit_outcome"))

    rows = parse(docs / "index.html").tables["runs"]
    by_run = {r[2]: r for r in rows}  # run name → cells
    assert len(rows) == 2 and set(by_run) == {first.run_id, second.run_id}
    runs = json.loads((docs / RUNS).read_text())["results"]
    for run in (first, second):
        suite_rules = [r for r in run.rules if r.source != "contract"]
        broken = [r for r in suite_rules if r.failed]
        assert broken  # the rule breakers reached the suite
        cells = by_run[run.run_id]
        assert cells[3] == run.batches[0]
        assert cells[4] == "failed"
        assert int(cells[5]) == len(suite.rules)
        assert int(cells[6]) == len(broken)
        assert int(cells[7].replace(",", "")) == max(r.evaluated for r in suite_rules)
        assert int(cells[8].replace(",", "")) == sum(r.failed for r in suite_rules)

        (entry,) = [e for e in runs.values() if e["run_name"] == run.run_id]
        page = parse(docs / entry["page"]).tables["expectations"]
        assert len(page) == len(suite.rules)
        shown = {cells[1].split()[0]: cells for cells in page}  # rule id → cells
        for rule in suite_rules:
            cells = shown[rule.rule_id]
            assert cells[5] == ("failed" if rule.failed else "passed")
            if rule.failed:
                assert int(cells[6].replace(",", "")) == rule.evaluated
                assert int(cells[7].replace(",", "")) == rule.failed
    assert_self_contained(docs)
    secret = personal_values(events + more, contracts)
    assert len(secret) > 50
    leaks = [(p, s) for p, text in site_files(docs).items() for s in secret if s in text]
    assert leaks == []


def test_gx_own_site_is_replaced_by_pages_that_need_no_network(settings, contracts):
    run, _ = validate_visits(settings, contracts, seed=5)
    docs = settings.reports_dir / "data_docs"
    site = ReportsSite(settings.gx_dir, docs, settings.clock)
    # The site GX itself builds, as earlier versions left it: its pages load from CDNs.
    site.context.add_data_docs_site(
        "reports",
        {  # type: ignore[typeddict-unknown-key]
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    (docs / RUNS).unlink()
    site.context.build_data_docs(site_names=["reports"])
    assert any(OUTSIDE.search(t) for t in site_files(docs).values())
    assert (docs / "static").is_dir()

    again = ReportsSite(settings.gx_dir, docs, settings.clock)
    assert not (again.context.config.data_docs_sites or {})  # GX builds no site any more
    again.site.rebuild()
    assert not (docs / "static").exists()
    assert_self_contained(docs)
    assert [r[2] for r in parse(docs / "index.html").tables["runs"]] == [run.run_id]


def stored_keys(site: ReportsSite) -> list[ValidationResultIdentifier]:
    keys = site.context.validation_results_store.list_keys()
    return [k for k in keys if isinstance(k, ValidationResultIdentifier)]


MARK = "<!-- as rendered before -->"


def mark(folder: Path) -> list[Path]:
    """The pages under `folder`, each marked at its end (a page rendered again loses it)."""
    pages = list(folder.rglob("*.html"))
    for p in pages:
        p.write_text(p.read_text() + MARK)
    return pages


def test_a_rebuild_renders_only_new_results(settings, contracts):
    first, _ = validate_visits(settings, contracts, seed=6)
    docs = settings.reports_dir / "data_docs"
    pages = mark(docs / "validations")
    assert len(pages) == len(first.batches)

    second, _ = validate_visits(settings, contracts, seed=7)
    now = list((docs / "validations").rglob("*.html"))
    assert len(now) == len(first.batches) + len(second.batches)
    assert all(p.read_text().endswith(MARK) for p in pages)  # earlier pages not rendered again
    runs = {r[2] for r in parse(docs / "index.html").tables["runs"]}
    assert runs == {first.run_id, second.run_id}


def test_other_templates_render_everything_again_and_removed_results_go(settings, contracts):
    validate_visits(settings, contracts, seed=8)
    validate_visits(settings, contracts, seed=9)
    docs = settings.reports_dir / "data_docs"
    state = json.loads((docs / RUNS).read_text())
    assert state["format"] == site_format()
    pages = mark(docs)
    (docs / RUNS).write_text(json.dumps({**state, "format": "rendered by other templates"}))
    site = ReportsSite(settings.gx_dir, docs, settings.clock)
    site.site.rebuild()
    assert sorted(docs.rglob("*.html")) == sorted(pages)
    assert not [p for p in pages if p.read_text().endswith(MARK)]  # every page rendered anew

    store = site.context.validation_results_store
    gone, kept = sorted(stored_keys(site), key=lambda k: k.run_id.run_name)
    store.remove_key(gone)
    site.site.rebuild()
    assert [r[2] for r in parse(docs / "index.html").tables["runs"]] == [kept.run_id.run_name]
    assert len(list((docs / "validations").rglob("*.html"))) == 1
    assert_self_contained(docs)


def test_pages_show_counts_and_never_other_result_keys(settings, contracts):
    """Even a result stored with values (a defect of the redaction) shows only its counts."""
    validate_visits(settings, contracts, seed=10)
    docs = settings.reports_dir / "data_docs"
    site = ReportsSite(settings.gx_dir, docs, settings.clock)
    store = site.context.validation_results_store
    (key,) = stored_keys(site)
    stored = store.get(key).to_json_dict()  # type: ignore[union-attr]  # the key is stored
    marker = f"value-{uuid.uuid4().hex}"
    for r in stored["results"]:
        r["result"] = {
            **(r["result"] or {}),
            "partial_unexpected_list": [f"{marker}-list"],
            "observed_value": f"{marker}-observed",
            "details": {"value_counts": [{"value": f"{marker}-details", "count": 1}]},
        }
    planted = ValidationResultIdentifier(
        expectation_suite_identifier=key.expectation_suite_identifier,
        run_id=key.run_id,
        batch_identifier="planted",
    )
    store.set(planted, ExpectationSuiteValidationResult(**stored))
    site.site.rebuild()
    assert len(parse(docs / "index.html").tables["runs"]) == 2
    assert not [p for p, text in site_files(docs).items() if marker in text]
