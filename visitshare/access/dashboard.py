"""The dashboard: one self-contained HTML page per release and partner.

It shows what the partner may read (`partners.view`, never the raw tables): heatmaps town ×
month of the outcome table, before/after per town, and the trends per month of the
municipality. The charts are Vega-Lite specs built with Altair; the page carries the data as
JSON and the Vega, Vega-Lite and vega-embed libraries inlined once (vl-convert's bundle), and
renders every chart as SVG in the browser, so it opens offline and asks nothing of any network.

Every cell has a status: published, within noise (a count no larger than its 95% margin of
error: it may be 0) or withheld (null: suppressed, or a rate whose denominator is too small).
Withheld cells are hatched, cells within noise carry a dot, and the legend says why.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import altair as alt
import pyarrow as pa
import pyarrow.compute as pc

from visitshare.access.partners import Partner, load_partners, view
from visitshare.contracts import geography
from visitshare.landing.files import write_text_atomic
from visitshare.release import releases as rel
from visitshare.settings import Settings

FONT = '"IPAexGothic", "IPAGothic", "Noto Sans CJK JP", "Yu Gothic", "Meiryo", "Hiragino Sans", sans-serif'
PUBLISHED, NOISY, WITHHELD = "p", "n", "w"
RATES = ("completion_rate", "incidents_per_1000_visited_households")
# Heatmaps: (element id, title, a column or a family's prefix (`concerns_`), colours, format)
HEATMAPS = (
    ("visits", "Visits", "visits", "blues", "d"),
    ("completion", "Completion rate", "completion_rate", "greens", ".0%"),
    ("vulnerabilities", "Visits that found a vulnerability", "vulnerabilities_", "oranges", "d"),
    ("concerns", "Visits where residents raised a concern", "concerns_", "purples", "d"),
    ("incidents", "Incidents per 1,000 visited households",
     "incidents_per_1000_visited_households", "reds", ",.1f"),
)  # fmt: skip
TREND_COUNTS = ("households_visited", "visits", "visits_completed", "incidents_total")


def cell_status(value: float | None, moe: float | None) -> str:
    """Withheld (no value), within noise (a count no larger than its margin), or published."""
    if value is None:
        return WITHHELD
    if moe is not None and value <= moe:
        return NOISY
    return PUBLISHED


def script_json(data: object) -> str:
    """JSON that can sit inside <script>: no `<`, `>` or `&`, so no value closes the tag."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def moe_column(table: pa.Table, column: str) -> str | None:
    """The column holding the 95% margin of error of `column` (None: exact, or a rate)."""
    if column in RATES:
        return None
    name = "incident_counts_moe95" if column.startswith("incidents_") else "visit_counts_moe95"
    return name if name in table.column_names else None


def _cells(table: pa.Table, column: str) -> tuple[list, list, list[str]]:
    """A column's values, their margins of error (None: none) and statuses."""
    moe = moe_column(table, column)
    values = table.column(column).to_pylist()
    moes = table.column(moe).to_pylist() if moe else [None] * len(values)
    return values, moes, [cell_status(v, m) for v, m in zip(values, moes, strict=True)]


def _order(codes: Sequence[str], towns: Sequence[str]) -> list[int]:
    """Each town's place in Japan Post's list of its municipality (neighbours stay together)."""
    places = {c: {t: i for i, t in enumerate(geography.municipality(c).towns)} for c in set(codes)}
    return [places[c].get(t, len(places[c])) for c, t in zip(codes, towns, strict=True)]


def _columns(table: pa.Table) -> dict[str, list[str]]:
    """Heatmap id → the columns it can show (the one column, or a family's columns)."""
    out = {}
    for key, _, name, _, _ in HEATMAPS:
        if name.endswith("_"):  # a family: every column of it
            out[key] = [c for c in table.column_names if c.startswith(name)]
        else:
            out[key] = [name] if name in table.column_names else []
    return {k: v for k, v in out.items() if v}


def town_data(table: pa.Table) -> dict[str, list]:
    """The town table, column-wise: keys, each shown column with its status (`s_<column>`)
    and the margins of error."""
    data = {c: table.column(c).to_pylist() for c in ("municipality_code", "town", "month")}
    data["order"] = _order(data["municipality_code"], data["town"])
    for c in (c for columns in _columns(table).values() for c in columns):
        data[c], _, data[f"s_{c}"] = _cells(table, c)
    for moe in ("visit_counts_moe95", "incident_counts_moe95"):
        if moe in table.column_names:
            data[moe] = table.column(moe).to_pylist()
    return data


def _long(table: pa.Table, keys: Sequence[str], columns: Sequence[str]) -> dict[str, list]:
    """One row per row of `table` and column: keys, metric, value, margin, status."""
    out: dict[str, list] = {k: [] for k in (*keys, "metric", "value", "moe", "status")}
    for c in (c for c in columns if c in table.column_names):
        for k in keys:
            out[k] += table.column(k).to_pylist()
        out["metric"] += [c] * table.num_rows
        values, moes, statuses = _cells(table, c)
        out["value"] += values
        out["moe"] += moes
        out["status"] += statuses
    return out


def before_after_data(table: pa.Table) -> dict[str, list]:
    keys = ("municipality_code", "town", "first_completed_visit")
    data = _long(table, keys, ("incidents_before_90d", "incidents_after_90d"))
    data["order"] = _order(data["municipality_code"], data["town"])
    return data


def trend_data(table: pa.Table) -> dict[str, list]:
    data = _long(table, ("municipality_code", "month"), (*TREND_COUNTS, *RATES))
    data["label"] = [m.replace("_", " ") for m in data["metric"]]
    return data


# -- charts (Vega-Lite specs; each filters its data to the municipality `muni`) ---------------
NOTE = (
    "datum.status == 'w' ? 'withheld' : datum.status == 'n' ? "
    "'within its margin of error (may be 0)' : 'published'"
)
TOWNS = alt.Y("town:N", title=None, sort=alt.EncodingSortField("order", op="min"))


def _spec(chart: alt.LayerChart | alt.FacetChart, code: str) -> dict:
    """The spec, showing municipality `code` first (the page's selector sets `muni`)."""
    chart = chart.add_params(alt.param(name="muni", value=code))
    chart = chart.transform_filter("datum.municipality_code == muni")
    return chart.configure(font=FONT).configure_view(stroke=None).to_dict()


def heatmap(
    title: str, columns: list[str], moe: str | None, scheme: str, fmt: str, code: str
) -> dict:
    """Town × month cells of one column; of a family, the column a selector under it picks."""
    pick = alt.param(name="pick", value=columns[0])
    if len(columns) > 1:
        names = [c.split("_", 1)[1].replace("_", " ") for c in columns]
        bind = alt.binding_select(options=columns, labels=names, name="category ")
        pick = alt.param(name="pick", value=columns[0], bind=bind)
    x = alt.X("month:O", title=None, axis=alt.Axis(labelAngle=-45))
    tip = [alt.Tooltip("town:N"), alt.Tooltip("month:O"), alt.Tooltip("value:Q", format=fmt),
           alt.Tooltip("moe:Q", title="± (95%)"), alt.Tooltip("note:N", title="status")]  # fmt: skip
    base = alt.Chart().encode(x=x, y=TOWNS, tooltip=tip)
    color = alt.Color("value:Q", title=None, scale={"scheme": scheme})
    chart = (
        alt.layer(
            base.mark_rect().encode(color=color)
            .transform_filter("datum.status != 'w'").properties(name="cells"),
            base.mark_rect(fill="url(#hatch)", stroke="#888", strokeWidth=0.5)
            .transform_filter("datum.status == 'w'").properties(name="withheld"),
            base.mark_point(shape="circle", size=9, filled=True, color="#222")
            .transform_filter("datum.status == 'n'").properties(name="noisy"),
            data=alt.NamedData(name="town_month"),
        )
        .add_params(pick)
        .transform_calculate(value="datum[pick]", status="datum['s_' + pick]",
                             moe=f"datum['{moe}']" if moe else "null")
        .transform_calculate(note=NOTE)
        .properties(title=title, width=alt.Step(26), height=alt.Step(13))
    )  # fmt: skip
    return _spec(chart, code)


def before_after_chart(code: str) -> dict:
    """Per town, a line from the count before its first completed visit to the count after."""
    x = alt.X("value:Q", title="incidents in 90 days (pale: within noise; ×: withheld)")
    scale = alt.Scale(domain=["before", "after"], range=["#999", "#c0392b"])
    tip = [alt.Tooltip("town:N"), alt.Tooltip("first_completed_visit:N", title="first visit"),
           alt.Tooltip("period:N"), alt.Tooltip("value:Q"), alt.Tooltip("moe:Q", title="± (95%)"),
           alt.Tooltip("note:N", title="status")]  # fmt: skip
    pale = alt.condition("datum.status == 'n'", alt.value(0.2), alt.value(1.0))
    base = alt.Chart().encode(y=TOWNS, tooltip=tip)
    chart = (
        alt.layer(
            base.mark_line(color="#bbb").encode(x=x, detail="town:N"),
            base.mark_point(filled=True, size=40)
            .encode(x=x, color=alt.Color("period:N", title=None, scale=scale), fillOpacity=pale)
            .transform_filter("datum.status != 'w'").properties(name="counts"),
            base.mark_point(shape="cross", color="#666").encode(x=alt.datum(0))
            .transform_filter("datum.status == 'w'").properties(name="withheld"),
            data=alt.NamedData(name="before_after"),
        )
        .transform_calculate(
            period="datum.metric == 'incidents_before_90d' ? 'before' : 'after'", note=NOTE
        )
        .properties(title="Incidents 90 days before / after the first completed visit",
                    width=360, height=alt.Step(13))
    )  # fmt: skip
    return _spec(chart, code)


def trend_chart(code: str, metrics: Sequence[str], title: str, fmt: str) -> dict:
    """Per month, the municipality's `metrics`; a count's margin of error as a bar."""
    legend = alt.Legend() if len(metrics) > 1 else None
    base = alt.Chart().encode(
        x=alt.X("month:O", title=None),
        color=alt.Color("label:N", title=None, legend=legend),
        tooltip=[alt.Tooltip("label:N", title="metric"), alt.Tooltip("month:O"),
                 alt.Tooltip("value:Q", format=fmt), alt.Tooltip("moe:Q", title="± (95%)")],
    )  # fmt: skip
    layers = [base.mark_line(point=True).encode(y=alt.Y("value:Q", title=None).axis(format=fmt))]
    if not set(metrics) & set(RATES):
        bars = base.mark_rule().encode(y="low:Q", y2="high:Q")
        layers.append(bars.transform_calculate(low="max(0, datum.value - datum.moe)",
                                               high="datum.value + datum.moe"))  # fmt: skip
    chart = (
        alt.layer(*layers, data=alt.NamedData(name="trends"))
        .transform_filter(f"indexof({json.dumps(list(metrics))}, datum.metric) >= 0")
        .properties(title=title, width=420, height=220)
    )
    return _spec(chart, code)


# -- the page ----------------------------------------------------------------------------------
@cache
def _bundle() -> str:
    """Vega, Vega-Lite (Altair's version) and vega-embed as one script (no `</script` in it)."""
    import vl_convert

    version = alt.SCHEMA_VERSION.lstrip("v").rsplit(".", 1)[0]  # "v6.4.1" → "6.4"
    bundle = vl_convert.javascript_bundle(None, version)  # type: ignore[arg-type]  # None: default
    return bundle.replace("</script", "<\\/script")


def _margins(tables: Sequence[pa.Table], column: str) -> str:
    """The margins of error `column` holds in the partner's tables ("±12", "±4–6"; "": none)."""
    values = {v for t in tables if column in t.column_names for v in t.column(column).to_pylist()}
    values.discard(None)
    low, high = min(values, default=None), max(values, default=None)
    return "" if low is None else f"±{low}" if low == high else f"±{low}–{high}"


def legend(town: pa.Table, muni: pa.Table, before_after: pa.Table) -> str:
    """Why cells are hatched or dotted, from what the tables hold (noise or threshold mode)."""
    margins = [
        (_margins((town, muni), "visit_counts_moe95"), "visit counts"),
        (_margins((town, muni), "incident_counts_moe95"), "incident counts"),
        (_margins((before_after,), "incident_counts_moe95"), "before/after counts"),
    ]
    if any(m for m, _ in margins):
        return (
            "<p>Every count carries random noise (differential privacy), so that no household "
            "can be recognized: the true count lies within the published count "
            + ", ".join(f"{m} for {what}" for m, what in margins if m)
            + " in 95% of cases. <span class=dot></span> marks a count no larger than its "
            "margin: it may be 0, and small counts lean upwards. <span class=hatch></span> marks "
            "a withheld value: a rate whose denominator (visits, households visited) is within "
            "the noise, so that the rate would mean nothing.</p>"
        )
    return (
        "<p>Counts are exact. <span class=hatch></span> marks a suppressed cell: a count too "
        "small to publish (below the minimum cell count of the contracts), a cell that could "
        "otherwise be worked out from the totals, or a rate one of whose counts is suppressed "
        "or too small. A suppressed cell is not zero.</p>"
    )


def _charts(town: pa.Table, muni: pa.Table, before_after: pa.Table, code: str) -> list:
    """(element id, dataset, spec) of every chart that has data, showing `code` first."""
    out, shown = [], _columns(town)
    for key, title, _, scheme, fmt in HEATMAPS:
        if (columns := shown.get(key)) and town.num_rows:
            spec = heatmap(title, columns, moe_column(town, columns[0]), scheme, fmt, code)
            out.append((key, "town_month", spec))
    if before_after.num_rows:
        out.append(("before_after", "before_after", before_after_chart(code)))
    for key, metrics, title, fmt in (
        ("trend_counts", TREND_COUNTS, "Per month: counts (bars: 95% margin of error)", "d"),
        ("trend_completion", RATES[:1], "Per month: completion rate", ".0%"),
        ("trend_incidents", RATES[1:], "Per month: incidents per 1,000 visited households",
         ",.1f"),
    ):  # fmt: skip
        if muni.num_rows:
            out.append((key, "trends", trend_chart(code, metrics, title, fmt)))
    return out


def render_dashboard(settings: Settings, partner: Partner, release) -> str:
    """The partner's dashboard of `release` (a `releases` row), as one HTML document."""
    town, muni, before_after = (
        view(settings, partner, release, name)
        for name in ("outcomes_town_month", "outcomes_municipality_month", "before_after_town")
    )
    if partner.municipality_code is not None:  # its own municipality (it may read all)
        codes = [partner.municipality_code]
        muni = muni.filter(pc.equal(muni.column("municipality_code"), partner.municipality_code))
    else:
        present = (t.column("municipality_code").to_pylist() for t in (town, muni, before_after))
        codes = sorted({c for column in present for c in column})
    head = (
        f"<h1>Home-visit programme: release {release.id}</h1><p class=meta>Published "
        f"{release.published_at:%Y-%m-%d %H:%M} UTC · for {html.escape(partner.name)} "
        f"({html.escape(partner.id)}) · anonymized, aggregated figures: no row is a person or "
        "a household.</p>"
    )
    if not (town.num_rows or muni.num_rows or before_after.num_rows):
        body = "<p class=empty>Nothing to show yet: this release has no rows for you.</p>"
        return _page(release.id, head + body, "")
    charts = _charts(town, muni, before_after, codes[0])
    names = {c: html.escape(f"{geography.municipality(c).name} ({c})") for c in codes}
    options = "".join(f'<option value="{html.escape(c)}">{names[c]}</option>' for c in codes)
    select = (
        f"<label>Municipality <select id=municipality>{options}</select></label>"
        if len(codes) > 1
        else f"<p class=meta>{names[codes[0]]}</p>"
    )
    body = (
        f"{select}<section class=legend><h2>Reading the cells</h2>"
        f"{legend(town, muni, before_after)}</section><div class=charts>"
        + "".join(f'<div class=chart id="{key}"></div>' for key, _, _ in charts)
        + "</div>"
    )
    payload = {
        "data": {
            "town_month": town_data(town),
            "before_after": before_after_data(before_after),
            "trends": trend_data(muni),
        },
        "charts": [{"id": k, "data": d, "spec": s} for k, d, s in charts],
    }
    scripts = (
        f"<script>{_bundle()}</script>"
        f"<script type=application/json id=dashboard-data>{script_json(payload)}</script>"
        f"<script>{_GLUE}</script>"
    )
    return _page(release.id, head + body, scripts)


def write_dashboard(settings: Settings, partner_id: str, which: str | int, out_dir: Path) -> Path:
    """Write `<out_dir>/dashboard.html` (atomically) for a partner and a release."""
    partner = load_partners(settings).get(partner_id)
    page = render_dashboard(settings, partner, rel.get_release(settings, which))
    path = out_dir / "dashboard.html"
    write_text_atomic(path, page)
    return path


def _page(release_id: int, body: str, scripts: str) -> str:
    return (
        '<!doctype html><html lang="ja"><head><meta charset="utf-8">'
        f"<title>visit-share release {release_id}</title><style>{_CSS}</style></head>"
        f"<body>{_HATCH}{body}{scripts}</body></html>"
    )


_CSS = f"""body {{ font-family: {FONT}; margin: 1.5rem; color: #222; }}
.meta {{ color: #555; }} .charts {{ display: flex; flex-wrap: wrap; gap: 1.5rem; }}
.legend {{ max-width: 60rem; }} .dot, .hatch {{ display: inline-block; width: 12px;
height: 12px; vertical-align: middle; }} .dot {{ background: radial-gradient(#222 30%, transparent 35%); }}
.hatch {{ background: repeating-linear-gradient(45deg, #888 0 1px, #eee 1px 4px); }}"""
# The pattern withheld cells are filled with (`fill: url(#hatch)` in the SVG charts).
_HATCH = (
    '<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>'
    '<pattern id="hatch" width="4" height="4" patternUnits="userSpaceOnUse" '
    'patternTransform="rotate(45)"><rect width="4" height="4" fill="#eee"/>'
    '<line x1="0" y1="0" x2="0" y2="4" stroke="#888" stroke-width="1.5"/></pattern></defs></svg>'
)
# Rows from the column-wise data, one embed per chart, and the municipality selector. Tests wait
# for `dashboardReady` (every chart drawn) and may ask `dashboardViews` (chart id → Vega view).
_GLUE = """(() => {  // a block of its own: the bundle's top-level names are global
const D = JSON.parse(document.getElementById("dashboard-data").textContent);
function rows(cols) {
  const keys = Object.keys(cols), n = keys.length ? cols[keys[0]].length : 0;
  return Array.from({length: n}, (_, i) => Object.fromEntries(keys.map(k => [k, cols[k][i]])));
}
const views = {};
window.dashboardReady = Promise.all(D.charts.map(c => {
  c.spec.datasets = {[c.data]: rows(D.data[c.data])};
  return vegaEmbed("#" + c.id, c.spec, {renderer: "svg", actions: false})
    .then(r => { views[c.id] = r.view; });
})).then(() => {});
window.dashboardViews = views;
const select = document.getElementById("municipality");
if (select) select.addEventListener("change", () => {
  window.dashboardReady = Promise.all(
    Object.values(views).map(v => v.signal("muni", select.value).runAsync())).then(() => {});
});
})();"""
