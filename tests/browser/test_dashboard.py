"""The dashboard of a real release (simulated validated zone, `publish`), opened from file:// in
Chromium with every outside request blocked: it must render from what it carries.

One release per test function (the `settings` fixture is per test); the expected figures are
read from the partner's view of that release. The simulated data has every dataset, so that the
release also holds the outcome tables declared in files (requests, workshops, surveys), whose
sections the dashboard builds from their declarations.
"""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from producers.simulator import DATASETS
from tests.helpers import validated_zone
from visitshare.access.dashboard import (
    heatmap_panels,
    render_dashboard,
    trend_panels,
    write_dashboard,
)
from visitshare.access.export import pull
from visitshare.access.partners import Partner, load_partners, view
from visitshare.contracts import geography
from visitshare.contracts.roles import record_contracts
from visitshare.landing.files import write_text_atomic
from visitshare.release import declared
from visitshare.release.publish import publish
from visitshare.release.releases import get_release

pytestmark = pytest.mark.browser

WARD, OTHER = "13104", "13112"  # Shinjuku (the ward), Setagaya (another ward of the release)
Y_LABELS = '#visits g.role-axis[aria-label^="Y-axis"] g.role-axis-label text'
FEEDBACK = ("requests_town_month", "workshops_town_month", "surveys_town_month")


@pytest.fixture(autouse=True)
def _one_publish_process(monkeypatch):
    """Shards built in-process (the process pool is exercised by `make run` and its e2e test)."""
    monkeypatch.setenv("VISITSHARE_PUBLISH_WORKERS", "1")


def _open(offline_page, path) -> None:
    offline_page.page.goto(path.as_uri())
    offline_page.page.evaluate("window.dashboardReady")  # every chart rendered


def _count(offline_page, selector: str) -> int:
    return offline_page.page.locator(selector).count()


def _platform_fonts(page, selector: str) -> set[str]:
    """The fonts Chromium actually drew the first node matching `selector` with."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    assert node, selector
    fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    return {f["familyName"] for f in fonts}


def _declarations(settings) -> dict[str, declared.OutcomeDefinition]:
    records = record_contracts(settings.contracts_dir)
    definitions = declared.load(settings.contracts_dir, {c.name: c for c in records.values()})
    return {d.name: d for d in definitions}


def _check_declared(offline_page, settings, partner, release, code: str) -> dict[str, int]:
    """Every declared panel drawn from the partner's rows of municipality `code`: one heatmap
    cell per town row, hatched where the shown column is null, dotted where a count is within
    its margin; a trend line where the municipality table has a value. Returns the hatched
    cells per table."""
    hatched = {}
    for name in FEEDBACK:
        d = _declarations(settings)[name]
        rows = view(settings, partner, release, name)
        rows = rows.filter(pc.equal(rows.column("municipality_code"), code))
        assert rows.num_rows, name
        heading = offline_page.page.inner_text(f"#section-{name} h2")
        assert heading and heading in d.description, name
        hatched[name] = 0
        panels = heatmap_panels(d, rows.column_names)
        assert len(panels) >= 2, name  # counts, and a ratio, mean or median at least
        for p in panels:
            column = rows.column(p.columns[0]).to_pylist()
            shown = _count(offline_page, f"#{p.id} g.cells_marks path")
            withheld = _count(offline_page, f"#{p.id} g.withheld_marks path")
            assert shown + withheld == rows.num_rows, p.id
            assert withheld == column.count(None), p.id
            hatched[name] += withheld
            moe = dict(p.moes).get(p.columns[0])
            margins = rows.column(moe).to_pylist() if moe else [None] * rows.num_rows
            small = sum(
                v is not None and m is not None and v <= m
                for v, m in zip(column, margins, strict=True)
            )
            assert _count(offline_page, f"#{p.id} g.noisy_marks path") == small, p.id
        assert d.rollup
        muni = view(settings, partner, release, d.rollup)
        muni = muni.filter(pc.equal(muni.column("municipality_code"), code))
        for p in trend_panels(d, d.rollup, muni.column_names):
            values = [v for c in p.columns for v in muni.column(c).to_pylist() if v is not None]
            assert (_count(offline_page, f"#{p.id} g.mark-line path") > 0) == bool(values), p.id
    return hatched


def test_ward_and_police_dashboards_offline(settings, contracts, offline_page):
    validated_zone(settings, contracts, days=4, seed=21, datasets=DATASETS)
    rid = publish(settings).release_id
    release = get_release(settings, rid)
    partners = load_partners(settings)
    ward, police = partners.get("shinjuku"), partners.get("police")
    town = view(settings, ward, release, "outcomes_town_month")
    assert town.num_rows and set(town.column("municipality_code").to_pylist()) == {WARD}
    everything = view(settings, police, release, "outcomes_town_month").to_pylist()
    other_rows = [r for r in everything if r["municipality_code"] == OTHER]
    # Setagaya's towns of the release whose name no Shinjuku town has
    foreign = {r["town"] for r in other_rows} - set(geography.municipality(WARD).towns)
    assert foreign

    # -- the ward, as `visitshare pull` writes it ---------------------------------------------
    out = settings.var / "exports"
    pull(settings, "shinjuku", rid, "csv", out)
    folder = out / "shinjuku" / f"release-{rid}"
    assert "dashboard.html" in (folder / "RELEASE.txt").read_text(encoding="utf-8")
    source = (folder / "dashboard.html").read_text(encoding="utf-8")
    assert not [t for t in foreign if t in source]  # not even in the embedded data
    _open(offline_page, folder / "dashboard.html")
    offline_page.assert_clean()
    page = offline_page.page
    text = page.inner_text("body")
    assert f"release {rid}" in text and f"{release.published_at:%Y-%m-%d %H:%M}" in text
    assert ward.name in text and "anonymized" in text
    assert not [t for t in foreign if t in page.content()]

    # one cell per town × month row of the ward's view, in every heatmap
    for key in ("visits", "completion", "vulnerabilities", "concerns", "incidents"):
        shown = _count(offline_page, f"#{key} g.cells_marks path")
        withheld = _count(offline_page, f"#{key} g.withheld_marks path")
        assert shown + withheld == town.num_rows, key
    # withheld rates hatched, counts within their margin dotted, as the view has them
    rates = town.column("completion_rate").to_pylist()
    assert _count(offline_page, "#completion g.withheld_marks path") == rates.count(None) > 0
    hatch = page.locator("#completion g.withheld_marks path").first.get_attribute("fill")
    assert hatch == "url(#hatch)"
    rows = town.to_pylist()
    small = sum(r["visits"] <= r["visit_counts_moe95"] for r in rows)
    assert _count(offline_page, "#visits g.noisy_marks path") == small
    # the category selector of a family switches the column the cells show
    column = [c for c in town.column_names if c.startswith("concerns_")][1]
    page.select_option("#concerns select", column)
    page.evaluate("window.dashboardViews.concerns.runAsync().then(() => null)")
    small = sum(r[column] <= r["visit_counts_moe95"] for r in rows)
    assert _count(offline_page, "#concerns g.noisy_marks path") == small
    # the legend says why, with the margins the tables hold
    legend = page.inner_text(".legend")
    assert "differential privacy" in legend and "withheld" in legend
    assert f"±{rows[0]['visit_counts_moe95']} for visit counts" in legend
    # Japanese town names drawn with the Japanese font
    labels = page.locator(Y_LABELS).all_text_contents()
    assert labels and set(labels) <= set(geography.municipality(WARD).towns)
    assert {"IPAexGothic", "IPAGothic", "Noto Sans CJK JP"} & _platform_fonts(page, Y_LABELS)
    assert _count(offline_page, "#before_after g.counts_marks path") > 0
    assert _count(offline_page, "#trend_counts g.mark-line path") > 0

    # the outcome tables declared in files: a section each, drawn from the ward's rows
    hatched = _check_declared(offline_page, settings, ward, release, WARD)
    assert sum(hatched.values()) > 0  # withheld rates and medians, hatched as above
    hatch = page.locator("[id^='requests_town_month-'] g.withheld_marks path").first
    assert hatch.get_attribute("fill") == "url(#hatch)"
    for name, family in (("requests_town_month", "request"), ("surveys_town_month", "survey")):
        margin = view(settings, ward, release, name).column(f"{family}_counts_moe95")[0]
        assert f"±{margin} for {family} counts" in legend, name
    for family in ("session", "attendance", "visit"):
        assert f"{family} counts (workshops)" in legend
    # the families' selector switches the cells: within 14 days, by phone
    page.select_option("#requests_town_month-within_14d_share_app select", "within_14d_share_phone")
    page.evaluate("window.dashboardViews['requests_town_month-within_14d_share_app'].runAsync()"
                  ".then(() => null)")  # fmt: skip
    phone = view(settings, ward, release, "requests_town_month").column("within_14d_share_phone")
    hatched_phone = _count(
        offline_page, "#requests_town_month-within_14d_share_app g.withheld_marks path"
    )
    assert hatched_phone == phone.null_count
    # the rows the page carries are the ward's, in every declared table (rollups included)
    data = page.evaluate("JSON.parse(document.getElementById('dashboard-data').textContent).data")
    for name in (*FEEDBACK, "requests_municipality_month", "surveys_municipality_month"):
        assert set(data[name]["municipality_code"]) == {WARD}, name
    offline_page.assert_clean()
    shot = offline_page.screenshot("dashboard-shinjuku")
    for name in FEEDBACK:  # each section on its own, to read it at full size
        section = page.locator(f"#section-{name}")
        section.screenshot(path=str(shot.with_name(f"dashboard-shinjuku-{name}.png")))

    # -- the police: every municipality, one at a time -----------------------------------------
    path = write_dashboard(settings, "police", rid, out / "police" / f"release-{rid}")
    assert [t for t in foreign if t in path.read_text(encoding="utf-8")]
    _open(offline_page, path)
    page.select_option("#municipality", OTHER)
    page.evaluate("window.dashboardReady")
    labels = set(page.locator(Y_LABELS).all_text_contents())
    assert foreign <= labels
    shown = _count(offline_page, "#visits g.cells_marks path")
    assert shown + _count(offline_page, "#visits g.withheld_marks path") == len(other_rows)
    _check_declared(offline_page, settings, police, release, OTHER)
    offline_page.assert_clean()
    offline_page.screenshot("dashboard-police")

    # -- a ward without rows: a page that says so ---------------------------------------------
    path = write_dashboard(settings, "chiyoda", rid, out / "chiyoda" / f"release-{rid}")
    _open(offline_page, path)
    assert "Nothing to show yet" in page.inner_text("body")
    assert _count(offline_page, ".chart") == 0

    # -- text from elsewhere is escaped -------------------------------------------------------
    odd = Partner(
        id="odd", kind="ward", name='<img src=x onerror="alert(1)">区', municipality_code=WARD
    )
    path = out / "odd" / "dashboard.html"
    write_text_atomic(path, render_dashboard(settings, odd, release))
    _open(offline_page, path)
    assert odd.name in page.inner_text("body") and _count(offline_page, "img") == 0
    offline_page.assert_clean()
