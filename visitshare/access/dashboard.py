"""The dashboard: one self-contained HTML page per release and partner.

It shows what the partner may read (`partners.view`, never the raw tables): heatmaps town ×
month of the outcome table, before/after per town, and the trends per month of the
municipality; then, for every outcome table declared in a file (`visitshare.release.declared`)
that the release holds and the partner may read, a section of its own, built from the
declaration alone: heatmaps town × month of its counts and of each ratio, mean and median, and
trends per month from its municipality table (its rollup). The charts are Vega-Lite specs built with Altair; the page carries the data as
JSON and the Vega, Vega-Lite and vega-embed libraries inlined once (vl-convert's bundle), and
renders every chart as SVG in the browser, so it opens offline and asks nothing of any network.

Every cell has a status: published, within noise (a count no larger than its 95% margin of
error: it may be 0) or withheld (null: suppressed, or a rate whose denominator is too small).
Withheld cells are hatched, cells within noise carry a dot, and the legend says why.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import altair as alt
import pyarrow as pa
import pyarrow.compute as pc

from visitshare.access.partners import Partner, load_partners, view
from visitshare.contracts import geography
from visitshare.landing.files import write_text_atomic
from visitshare.release import declared, shared
from visitshare.release import releases as rel
from visitshare.release.declared import OutcomeDefinition
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
    """A column of the outcome tables: its values, margins of error (None: none), statuses."""
    return _cells_with(table, column, moe_column(table, column))


def _cells_with(table: pa.Table, column: str, moe: str | None) -> tuple[list, list, list[str]]:
    """A column's values, their margins of error in column `moe` (None, or absent: none) and
    their statuses."""
    moe = moe if moe in table.column_names else None
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


def _long(
    table: pa.Table,
    keys: Sequence[str],
    columns: Sequence[str],
    moes: Mapping[str, str | None] | None = None,
) -> dict[str, list]:
    """One row per row of `table` and column: keys, metric, value, margin, status. `moes`:
    each column's margin column (default: the outcome tables', `moe_column`)."""
    out: dict[str, list] = {k: [] for k in (*keys, "metric", "value", "moe", "status")}
    for c in (c for c in columns if c in table.column_names):
        for k in keys:
            out[k] += table.column(k).to_pylist()
        out["metric"] += [c] * table.num_rows
        cells = _cells(table, c) if moes is None else _cells_with(table, c, moes.get(c))
        values, moes_, statuses = cells
        out["value"] += values
        out["moe"] += moes_
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


def _moe_expr(columns: Sequence[str], moe: str | Mapping[str, str | None] | None) -> str:
    """The Vega expression of the picked column's margin of error (one column for all, or a
    column per picked column)."""
    if moe is None or isinstance(moe, str):
        return f"datum[{json.dumps(moe)}]" if moe else "null"
    expr = "null"
    for c in reversed(columns):
        if moe.get(c):
            expr = f"pick == {json.dumps(c)} ? datum[{json.dumps(moe[c])}] : {expr}"
    return expr


def heatmap(
    title: str,
    columns: list[str],
    moe: str | Mapping[str, str | None] | None,
    scheme: str,
    fmt: str,
    code: str,
    *,
    data: str = "town_month",
    labels: Sequence[str] | None = None,
    choose: str = "category ",
) -> dict:
    """Town × month cells of one column of dataset `data`; of a family, the column a selector
    under it (`choose`, `labels`) picks. `moe`: the margin column, or each column's."""
    pick = alt.param(name="pick", value=columns[0])
    if len(columns) > 1:
        names = labels or [c.split("_", 1)[1].replace("_", " ") for c in columns]
        bind = alt.binding_select(options=columns, labels=list(names), name=choose)
        pick = alt.param(name="pick", value=columns[0], bind=bind)
    x = alt.X("month:O", title=None, axis=alt.Axis(labelAngle=-45))
    tip = [alt.Tooltip("town:N"), alt.Tooltip("month:O"), alt.Tooltip("value:Q", format=fmt),
           alt.Tooltip("moe:Q", title="± (95%)"), alt.Tooltip("note:N", title="status")]  # fmt: skip
    base = alt.Chart().encode(x=x, y=TOWNS, tooltip=tip)
    # no label where every cell is withheld (an empty domain would read "NaN")
    keys = alt.Legend(labelExpr="isFinite(datum.value) ? datum.label : ''")
    color = alt.Color("value:Q", title=None, scale={"scheme": scheme}, legend=keys)
    chart = (
        alt.layer(
            base.mark_rect().encode(color=color)
            .transform_filter("datum.status != 'w'").properties(name="cells"),
            base.mark_rect(fill="url(#hatch)", stroke="#888", strokeWidth=0.5)
            .transform_filter("datum.status == 'w'").properties(name="withheld"),
            base.mark_point(shape="circle", size=9, filled=True, color="#222")
            .transform_filter("datum.status == 'n'").properties(name="noisy"),
            data=alt.NamedData(name=data),
        )
        .add_params(pick)
        .transform_calculate(value="datum[pick]", status="datum['s_' + pick]",
                             moe=_moe_expr(columns, moe))
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


def trend_chart(
    code: str,
    metrics: Sequence[str],
    title: str,
    fmt: str,
    *,
    data: str = "trends",
    bars: bool | None = None,
    domain: tuple[float, float] | None = None,
) -> dict:
    """Per month, the municipality's `metrics` (of dataset `data`); with `bars` (default: unless
    a metric is a rate), each value's margin of error as a bar; `domain`: the y axis's range
    (a mean's scale), else from zero to the data."""
    legend = alt.Legend(labelLimit=280) if len(metrics) > 1 else None
    base = alt.Chart().encode(
        x=alt.X("month:O", title=None),
        color=alt.Color("label:N", title=None, legend=legend),
        tooltip=[alt.Tooltip("label:N", title="metric"), alt.Tooltip("month:O"),
                 alt.Tooltip("value:Q", format=fmt), alt.Tooltip("moe:Q", title="± (95%)")],
    )  # fmt: skip
    y = alt.Y("value:Q", title=None).axis(format=fmt)
    layers = [base.mark_line(point=True).encode(y=y.scale(domain=domain) if domain else y)]
    if bars if bars is not None else not set(metrics) & set(RATES):
        rules = base.mark_rule().encode(y="low:Q", y2="high:Q")
        layers.append(rules.transform_calculate(low="max(0, datum.value - datum.moe)",
                                               high="datum.value + datum.moe"))  # fmt: skip
    chart = (
        alt.layer(*layers, data=alt.NamedData(name=data))
        .transform_filter(f"indexof({json.dumps(list(metrics))}, datum.metric) >= 0")
        .properties(title=title, width=420, height=220)
    )
    return _spec(chart, code)


# -- outcome tables declared in files ------------------------------------------------------------
# Specific touches: the counts whose trend a declared table's section shows (default: the first
# published column of each count family), and first in its heatmap of counts.
FEATURED: dict[str, tuple[str, ...]] = {
    "requests_town_month": ("requests", "answered"),
    "workshops_town_month": ("households_invited", "invited_attending"),
    "surveys_town_month": ("responses_after_visit", "responses_without_visit"),
}
SCHEMES = {"count": "blues", "share": "greens", "per": "reds", "mean": "purples",
           "median": "oranges"}  # fmt: skip


@dataclass(frozen=True)
class Measure:
    """A published column of a declared table and how it is shown."""

    column: str
    kind: str  # count | share (ratio) | per (ratio × scale) | mean | median
    fmt: str  # d3 format
    moe: str | None = None  # a count's margin of error column (`<family>_counts_moe95`)
    group: str = ""  # kind and unit: the derived values a trend chart shows together
    note: str = ""  # appended to its title: a mean's range
    domain: tuple[float, float] | None = None  # a mean's range


def measures(d: OutcomeDefinition) -> list[Measure]:
    """Every published column of a declaration (never a `_` input of a mean): its counts, then
    its ratios, means and medians."""
    out = [
        Measure(c, "count", "d", f"{f.name}_counts_moe95", "count")
        for f in d.counts
        for c in f.columns
        if not c.startswith("_")
    ]
    for name, (_, _, *scale) in d.ratios.items():
        by = float(scale[0]) if scale else 1.0
        if by == 1:
            out.append(Measure(name, "share", ".0%", group="share"))
        else:
            out.append(Measure(name, "per", ",.1f", group=f"per {by:,g}"))
    for name, (_, _, low, high) in d.means.items():
        span = f"{float(low):g}–{float(high):g}"
        out.append(
            Measure(name, "mean", ".2f", group=f"mean {span}", note=f" ({span})",
                    domain=(float(low), float(high)))
        )  # fmt: skip
    out += [Measure(name, "median", ".1f", group="median") for name in d.medians]
    return out


def humanize(name: str) -> str:
    """A column's name as words: `within_14d_share_app` → "within 14 days share app"."""
    words = []
    for w in name.strip("_").split("_"):
        if m := re.fullmatch(r"(\d+)d", w):
            words.append(f"{m[1]} days")
        else:
            words.append(f"{int(w):,}" if w.isdigit() else w)
    return re.sub(r"(\d) (\d)", r"\1–\2", " ".join(words))  # days 0 3 → days 0–3


def _title(text: str) -> str:
    return text[:1].upper() + text[1:]


def _short(d: OutcomeDefinition) -> str:
    """The outcome's short name: `requests` for requests_town_month and its rollup."""
    name = d.rollup_of or d.name
    return humanize(re.sub(r"_(town|municipality)_month$", "", name))


@dataclass(frozen=True)
class Panel:
    """One chart of a declared table's section."""

    id: str  # its element's id
    title: str
    columns: tuple[str, ...]  # a heatmap's selector chooses one; a trend shows all
    labels: tuple[str, ...]
    kind: str
    fmt: str
    moes: tuple[tuple[str, str | None], ...] = ()  # column → its margin of error column
    domain: tuple[float, float] | None = None  # a trend's y axis (a mean's range)


def _families(ms: Sequence[Measure]) -> list[list[Measure]]:
    """Derived values to show under one selector: ratios of one unit whose names share their
    first two words or more (`within_14d_share_<channel>`, `safer_share_<after|without>_visit`);
    every other derived value alone."""
    groups: dict[str, list[Measure]] = {}
    for m in ms:
        key, words = m.column, m.column.split("_")
        if m.kind in ("share", "per"):
            for n in range(len(words) - 1, 1, -1):
                prefix = "_".join(words[:n]) + "_"
                if any(o is not m and o.group == m.group and o.column.startswith(prefix)
                       for o in ms):  # fmt: skip
                    key = prefix
                    break
        groups.setdefault(key, []).append(m)
    return list(groups.values())


def heatmap_panels(d: OutcomeDefinition, present: Sequence[str]) -> list[Panel]:
    """The heatmaps town × month of a town table: its counts (a selector picks the column,
    the featured ones first), then each ratio, mean and median (one selector per family)."""
    ms = [m for m in measures(d) if m.column in present]
    featured = FEATURED.get(d.name, ())
    counts = sorted((m for m in ms if m.kind == "count"),
                    key=lambda m: featured.index(m.column) if m.column in featured else 99)  # fmt: skip
    out = []
    if counts:
        out.append(
            Panel(f"{d.name}-counts", "Counts per town (choose below)",
                  tuple(m.column for m in counts), tuple(humanize(m.column) for m in counts),
                  "count", "d", tuple((m.column, m.moe) for m in counts))
        )  # fmt: skip
    for family in _families([m for m in ms if m.kind != "count"]):
        first, labels = family[0], tuple(humanize(m.column) for m in family)
        if len(family) == 1:
            title = _title(humanize(first.column)) + first.note
        else:
            prefix = re.match(r"^(.*_)", _common_prefix([m.column for m in family]))
            stem = prefix[1] if prefix else ""
            title = _title(humanize(stem)) + " (choose below)"
            labels = tuple(humanize(m.column[len(stem) :]) for m in family)
        columns = tuple(m.column for m in family)
        out.append(Panel(f"{d.name}-{first.column}", title, columns, labels, first.kind, first.fmt))
    return out


def _common_prefix(names: Sequence[str]) -> str:
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def trend_panels(d: OutcomeDefinition, name: str, present: Sequence[str]) -> list[Panel]:
    """The trends per month of a municipality table `name` (of declaration `d`): its featured
    counts with their margins of error, then one chart per kind and unit of derived value."""
    ms = [m for m in measures(d) if m.column in present]
    counts = [m for m in ms if m.kind == "count"]
    featured = FEATURED.get(d.rollup_of or d.name)
    if featured:
        shown = [m for c in featured for m in counts if m.column == c]
    else:  # the first published column of each count family
        shown = [
            next(m for m in counts if m.moe == moe) for moe in dict.fromkeys(m.moe for m in counts)
        ]
    groups: dict[str, list[Measure]] = {}
    for m in (m for m in ms if m.kind != "count"):
        groups.setdefault(m.group, []).append(m)
    out = []
    if shown:
        names = " and ".join(humanize(m.column) for m in shown) if len(shown) <= 2 else "counts"
        out.append(
            Panel(f"{name}-counts", f"Per month: {names} (bars: 95% margin of error)",
                  tuple(m.column for m in shown), tuple(humanize(m.column) for m in shown),
                  "count", "d", tuple((m.column, m.moe) for m in shown))
        )  # fmt: skip
    for group, family in groups.items():
        first = family[0]
        if len(family) <= 2:
            what = " and ".join(humanize(m.column) for m in family) + first.note
        else:
            plural = {
                "share": "shares",
                "per": f"rates {group}",
                "mean": "means",
                "median": "medians",
            }
            what = plural[first.kind] + first.note
        out.append(
            Panel(f"{name}-{re.sub(r'[^a-z0-9]+', '_', group)}", f"Per month: {what}",
                  tuple(m.column for m in family), tuple(humanize(m.column) for m in family),
                  first.kind, first.fmt, domain=first.domain)
        )  # fmt: skip
    return out


@dataclass(frozen=True)
class Declared:
    """An outcome declared in a file as the partner reads it: the town table and the
    municipality table (its rollup) of one declaration, either absent (None) when the release
    has no such table or the partner may not read it."""

    definition: OutcomeDefinition  # the town table's, or a municipality table's of its own
    town: pa.Table | None = None
    muni: pa.Table | None = None

    @property
    def muni_name(self) -> str:
        d = self.definition
        return (d.rollup or d.name) if d.grain == "town_month" else d.name

    @property
    def tables(self) -> list[pa.Table]:
        return [t for t in (self.town, self.muni) if t is not None and t.num_rows]


def declared_outcomes(settings: Settings, partner: Partner, release) -> list[Declared]:
    """Every declared outcome of `release` the partner may read, with rows for it (a ward's
    own municipality only, also where it may read every municipality)."""
    from visitshare.contracts.roles import record_contracts

    datasets = {c.name: c for c in record_contracts(settings.contracts_dir).values()}
    definitions = declared.load(settings.contracts_dir, datasets)
    specs = shared.by_name(settings)
    read: dict[str, pa.Table] = {}
    for d in definitions:
        spec = specs.get(d.name)
        if spec is None or d.name not in release.tables or not partner.can_read(spec):
            continue
        table = view(settings, partner, release, d.name)
        if partner.municipality_code is not None:
            table = table.filter(
                pc.equal(table.column("municipality_code"), partner.municipality_code)
            )
        read[d.name] = table
    out = []
    for d in (d for d in definitions if d.rollup_of is None):  # a rollup: with its town table
        if d.spans_history:
            continue  # one row per town over all months: no month axis to draw (not shown yet)
        if d.grain == "town_month":
            o = Declared(d, read.get(d.name), read.get(d.rollup) if d.rollup else None)
        else:
            o = Declared(d, None, read.get(d.name))
        if o.tables:
            out.append(o)
    return out


def declared_town_data(d: OutcomeDefinition, table: pa.Table) -> dict[str, list]:
    """A declared town table, column-wise: keys, town order, each published column with its
    status (`s_<column>`), and the margins of error."""
    data = {c: table.column(c).to_pylist() for c in d.keys}
    data["order"] = _order(data["municipality_code"], data["town"])
    for m in (m for m in measures(d) if m.column in table.column_names):
        data[m.column], _, data[f"s_{m.column}"] = _cells_with(table, m.column, m.moe)
    for moe in (f"{f.name}_counts_moe95" for f in d.counts):
        if moe in table.column_names:
            data[moe] = table.column(moe).to_pylist()
    return data


def declared_trend_data(d: OutcomeDefinition, name: str, table: pa.Table) -> dict[str, list]:
    """A declared municipality table, long: what its trend charts show."""
    panels = trend_panels(d, name, table.column_names)
    columns = list(dict.fromkeys(c for p in panels for c in p.columns))
    moes = {m.column: m.moe for m in measures(d)}
    data = _long(table, ("municipality_code", "month"), columns, moes)
    data["label"] = [humanize(m) for m in data["metric"]]
    return data


def declared_charts(o: Declared, code: str) -> list[tuple[str, str, dict]]:
    """(element id, dataset, spec) of a declared outcome's charts, showing `code` first."""
    d, out = o.definition, []
    if o.town is not None and o.town.num_rows:
        for p in heatmap_panels(d, o.town.column_names):
            moe = dict(p.moes) if p.moes else None
            spec = heatmap(p.title, list(p.columns), moe, SCHEMES[p.kind], p.fmt, code,
                           data=d.name, labels=p.labels, choose="show ")  # fmt: skip
            out.append((p.id, d.name, spec))
    if o.muni is not None and o.muni.num_rows:
        name = o.muni_name
        for p in trend_panels(d, name, o.muni.column_names):
            spec = trend_chart(code, p.columns, p.title, p.fmt, data=name,
                               bars=p.kind == "count", domain=p.domain)  # fmt: skip
            out.append((p.id, name, spec))
    return out


def declared_data(o: Declared) -> dict[str, dict[str, list]]:
    """Dataset name → the columns a declared outcome's charts read."""
    out = {}
    if o.town is not None and o.town.num_rows:
        out[o.definition.name] = declared_town_data(o.definition, o.town)
    if o.muni is not None and o.muni.num_rows:
        out[o.muni_name] = declared_trend_data(o.definition, o.muni_name, o.muni)
    return out


def _headline(d: OutcomeDefinition) -> str:
    """The declaration's description up to its first colon or full stop."""
    text = " ".join(d.description.split())
    return re.split(r":|\. ", text, maxsplit=1)[0].rstrip(".")


def _section(o: Declared, charts: Sequence[tuple[str, str, dict]]) -> str:
    d = o.definition
    names = [
        n for n, t in ((d.name, o.town), (o.muni_name, o.muni)) if t is not None and t.num_rows
    ]
    tables = " and ".join(f"<code>{html.escape(n)}</code>" for n in names)
    return (
        f'<section class=outcome id="section-{html.escape(d.name)}">'
        f"<h2>{html.escape(_headline(d))}</h2>"
        f"<p class=about>{html.escape(' '.join(d.description.split()))} From {tables}.</p>"
        "<div class=charts>"
        + "".join(f'<div class=chart id="{html.escape(key)}"></div>' for key, _, _ in charts)
        + "</div></section>"
    )


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


def legend(
    town: pa.Table, muni: pa.Table, before_after: pa.Table, outcomes: Sequence[Declared] = ()
) -> str:
    """Why cells are hatched or dotted, from what the tables hold (noise or threshold mode;
    each declared outcome's count families, `<family>_counts_moe95`, as its contract chose)."""
    margins = [
        (_margins((town, muni), "visit_counts_moe95"), "visit counts"),
        (_margins((town, muni), "incident_counts_moe95"), "incident counts"),
        (_margins((before_after,), "incident_counts_moe95"), "before/after counts"),
    ]
    exact = []
    built_in = [t for t in (town, muni, before_after) if t.num_rows]
    if built_in and not any(m for m, _ in margins):
        exact.append("the visit and incident tables")
    for o in outcomes:
        mine = [(_margins(o.tables, f"{f.name}_counts_moe95"), f"{f.name} counts ({_short(o.definition)})")
                for f in o.definition.counts if not all(c.startswith("_") for c in f.columns)]  # fmt: skip
        margins += mine
        if not any(m for m, _ in mine):
            exact.append(_short(o.definition))
    threshold = (
        "<span class=hatch></span> marks a suppressed cell: a count too small to publish (below "
        "the minimum cell count of the contracts), a cell that could otherwise be worked out "
        "from the totals, or a rate, mean or median one of whose counts is suppressed or too "
        "small. A suppressed cell is not zero.</p>"
    )
    if not any(m for m, _ in margins):
        return "<p>Counts are exact. " + threshold
    text = (
        "<p>Every count carries random noise (differential privacy), so that no household "
        "can be recognized: the true count lies within the published count "
        + ", ".join(f"{m} for {what}" for m, what in margins if m)
        + " in 95% of cases. <span class=dot></span> marks a count no larger than its "
        "margin: it may be 0, and small counts lean upwards. <span class=hatch></span> marks "
        "a withheld value: a rate, mean or median whose denominator (visits, households "
        "visited, requests, responses…) is within the noise, so that it would mean nothing.</p>"
    )
    if exact:
        text += f"<p>Counts of {html.escape(', '.join(exact))} are exact. " + threshold
    return text


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
    outcomes = declared_outcomes(settings, partner, release)
    if partner.municipality_code is not None:  # its own municipality (it may read all)
        codes = [partner.municipality_code]
        muni = muni.filter(pc.equal(muni.column("municipality_code"), partner.municipality_code))
    else:
        tables = (town, muni, before_after, *(t for o in outcomes for t in o.tables))
        present = (t.column("municipality_code").to_pylist() for t in tables)
        codes = sorted({c for column in present for c in column})
    head = (
        f"<h1>Home-visit programme: release {release.id}</h1><p class=meta>Published "
        f"{release.published_at:%Y-%m-%d %H:%M} UTC · for {html.escape(partner.name)} "
        f"({html.escape(partner.id)}) · anonymized, aggregated figures: no row is a person or "
        "a household.</p>"
    )
    if not (town.num_rows or muni.num_rows or before_after.num_rows or outcomes):
        body = "<p class=empty>Nothing to show yet: this release has no rows for you.</p>"
        return _page(release.id, head + body, "")
    charts = _charts(town, muni, before_after, codes[0])
    sections = [(o, declared_charts(o, codes[0])) for o in outcomes]
    names = {c: html.escape(f"{geography.municipality(c).name} ({c})") for c in codes}
    options = "".join(f'<option value="{html.escape(c)}">{names[c]}</option>' for c in codes)
    select = (
        f"<label>Municipality <select id=municipality>{options}</select></label>"
        if len(codes) > 1
        else f"<p class=meta>{names[codes[0]]}</p>"
    )
    body = (
        f"{select}<section class=legend><h2>Reading the cells</h2>"
        f"{legend(town, muni, before_after, outcomes)}</section>"
        + ("<h2>Visits and incidents</h2>" if charts and sections else "")
        + "<div class=charts>"
        + "".join(f'<div class=chart id="{key}"></div>' for key, _, _ in charts)
        + "</div>"
        + "".join(_section(o, cs) for o, cs in sections)
    )
    data = {
        "town_month": town_data(town),
        "before_after": before_after_data(before_after),
        "trends": trend_data(muni),
    }
    for o in outcomes:
        data |= declared_data(o)
    every = [*charts, *(c for _, cs in sections for c in cs)]
    payload = {"data": data, "charts": [{"id": k, "data": d, "spec": s} for k, d, s in every]}
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
.legend, .about {{ max-width: 60rem; }} .outcome {{ margin-top: 2rem; }} .dot, .hatch {{ display: inline-block; width: 12px;
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
