"""The disclosure-control report of a release (typed record, written as JSON and HTML).

It says, per record-level dataset, what anonymization did and how much recoding kept (utility
metrics, each between "as collected" and "everything suppressed"); per aggregate table, how it
was protected (cells published, the count blanked, the privacy spent and the margin of error);
and the result of the audit (`visitshare.release.audit`) that checked the published data
itself before anything was written.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from visitshare.contracts import Contract
from visitshare.landing.files import write_text_atomic
from visitshare.release.aggregates import AggregateReport
from visitshare.release.anonymize import FieldReport
from visitshare.release.dp import rho_to_epsilon
from visitshare.release.errors import DisclosureError
from visitshare.release.hierarchy import dimensions
from visitshare.release.recode import DimensionUtility, Utility, qi_columns


class Result(StrEnum):
    PASSED = "passed"
    FAILED = "failed"


class Check(BaseModel):
    name: str
    result: Result
    detail: str


class DatasetDisclosure(BaseModel):
    dataset: str
    contract: str
    k: int
    l_diversity: int
    quasi_identifiers: list[str]  # the published columns k is computed over
    sensitive: list[str]
    rows_in: int
    rows_published: int
    rows_suppressed: int
    rows_held: int  # of months not closed yet (published when they close)
    k_achieved: int | None
    average_class_size: float | None
    discernibility: int
    dimensions: list[DimensionUtility]
    sensitive_withheld: dict[str, int]
    dropped: list[str]
    pseudonymized: list[str]
    coarsened: list[str]
    capped: list[str]
    banded: list[str]
    municipality_level_rows: int
    sensitive_values_removed: int

    def below_share(self, dimension: str, level: int) -> float:
        for d in self.dimensions:
            if d.dimension == dimension and self.rows_published:
                return sum(d.rows_at_level[: level + 1]) / self.rows_published
        return 0.0

    @property
    def suppressed_share(self) -> float:
        return self.rows_suppressed / self.rows_in if self.rows_in else 0.0

    @property
    def below_municipality_share(self) -> float | None:
        """Share of published rows whose place is finer than the municipality (None: the
        dataset has no place hierarchy)."""
        place = next((x for x in self.dimensions if "municipality" in x.levels), None)
        return None if place is None else self.below_share(place.dimension, len(place.levels) - 2)


class PrivacyBudget(BaseModel):
    """What the release spent on differentially private tables (zero-concentrated DP)."""

    rho_per_release: float  # per publication of a partition of a table
    rho_this_release: float  # the most one record's partitions spent in this release, all tables
    rho_cap: float  # per partition and table, over all releases
    rho_max_spent: float  # the most any partition of any table has spent, all releases
    epsilon_max_spent: float  # the same as (ε, δ = 1e-6)-DP


class DisclosureReport(BaseModel):
    release_id: int
    created_at: datetime
    result: Result
    datasets: list[DatasetDisclosure]
    aggregates: list[AggregateReport] = Field(default_factory=list)
    budget: PrivacyBudget | None = None
    checks: list[Check] = Field(default_factory=list)
    # What the figures above cover: "full" (every partition), or the partitions an incremental
    # release recomputed (the others are carried over as the earlier releases reported them).
    scope: str = "full"

    def utility(self) -> dict[str, dict[str, float | int | None]]:
        """The headline utility figures, per dataset and per aggregate table."""
        out: dict[str, dict[str, float | int | None]] = {}
        for d in self.datasets:
            below = d.below_municipality_share
            out[d.dataset] = {
                "rows_in": d.rows_in,
                "rows_published": d.rows_published,
                "rows_published_share": round(d.rows_published / d.rows_in, 4)
                if d.rows_in
                else None,
                "rows_below_municipality_share": None if below is None else round(below, 4),
                "rows_suppressed_share": round(d.suppressed_share, 4),
                "rows_held": d.rows_held,
                "k_achieved": d.k_achieved,
                "average_class_size": d.average_class_size,
                "discernibility": d.discernibility,
            }
        for a in self.aggregates:
            out[a.table] = {
                "mode": a.mode,  # type: ignore[dict-item]
                "cells": a.cells,
                "cells_published_share": round(a.cells_published_share, 4),
                "count_blanked_share": round(a.count_blanked_share, 4),
                **{f"moe95_{k}": v for k, v in a.moe95.items()},
            }
        return out

    def summary_lines(self) -> list[str]:
        out = [f"scope: {self.scope}"]
        for d in self.datasets:
            below = d.below_municipality_share
            place = f", {below:.1%} finer than municipality" if below is not None else ""
            out.append(
                f"{d.dataset}: k={d.k} achieved {d.k_achieved}; {d.rows_in:,} rows of closed "
                f"months → {d.rows_published:,} published{place}, {d.rows_suppressed:,} "
                f"suppressed ({d.suppressed_share:.1%}); {d.rows_held:,} held until their month "
                f"closes; average class {d.average_class_size}"
            )
        for a in self.aggregates:
            detail = (
                f"±{', ±'.join(f'{v} ({k})' for k, v in a.moe95.items())} at 95%"
                if a.moe95
                else f"{a.primary:,} primary, {a.secondary:,} secondary suppressions"
            )
            out.append(
                f"{a.table} ({a.mode}): {a.cells_published_share:.1%} of {a.cells:,} cells "
                f"published; {a.partitions_refreshed} partitions refreshed, "
                f"{a.partitions_carried} carried over, {a.partitions_stale} stale; {detail}"
            )
        if self.budget is not None:
            b = self.budget
            out.append(
                f"privacy budget: ρ {b.rho_this_release:g} per record this release; at most "
                f"ρ {b.rho_max_spent:g} of {b.rho_cap:g} spent on any partition "
                f"(ε {b.epsilon_max_spent:.2f} at δ = 1e-6)"
            )
        failed = [c for c in self.checks if c.result is Result.FAILED]
        out.append(
            f"audit: {len(self.checks) - len(failed)}/{len(self.checks)} checks passed"
            + (f" (failed: {', '.join(c.name for c in failed)})" if failed else "")
        )
        return out


# -- merging shard reports -----------------------------------------------------------------------
def merge_field_reports(reports: list[FieldReport]) -> FieldReport:
    out = reports[0].model_copy(deep=True)
    out.municipality_level_rows = sum(r.municipality_level_rows for r in reports)
    out.sensitive_values_removed = sum(r.sensitive_values_removed for r in reports)
    return out


def merge_utility(reports: list[Utility]) -> Utility:
    first = reports[0]
    published = sum(r.rows_published for r in reports)
    classes = sum(
        round(r.rows_published / r.average_class_size) for r in reports if r.average_class_size
    )
    achieved = [r.k_achieved for r in reports if r.k_achieved is not None]
    dims = []
    for i, d in enumerate(first.dimensions):
        at = [sum(r.dimensions[i].rows_at_level[j] for r in reports) for j in range(len(d.levels))]
        dims.append(DimensionUtility(dimension=d.dimension, levels=d.levels, rows_at_level=at))
    withheld: dict[str, int] = {}
    for r in reports:
        for k, v in r.sensitive_withheld.items():
            withheld[k] = withheld.get(k, 0) + v
    return Utility(
        rows_in=sum(r.rows_in for r in reports),
        rows_published=published,
        rows_suppressed=sum(r.rows_suppressed for r in reports),
        rows_held=sum(r.rows_held for r in reports),
        k=first.k,
        k_achieved=min(achieved) if achieved else None,
        average_class_size=round(published / classes, 2) if classes else None,
        discernibility=sum(r.discernibility for r in reports),
        dimensions=dims,
        sensitive_withheld=withheld,
    )


def merge_aggregates(reports: list[AggregateReport]) -> AggregateReport:
    out = AggregateReport(table=reports[0].table, mode=reports[0].mode)
    for r in reports:
        for name in ("cells", "cells_published", "count_total", "count_blanked",
                     "partitions_refreshed", "partitions_carried", "partitions_stale",
                     "primary", "secondary"):  # fmt: skip
            setattr(out, name, getattr(out, name) + getattr(r, name))
        out.rho_spent = max(out.rho_spent, r.rho_spent)
        out.rho_per_partition_max = max(out.rho_per_partition_max, r.rho_per_partition_max)
        out.moe95 = {**out.moe95, **{k: max(v, out.moe95.get(k, 0)) for k, v in r.moe95.items()}}
    return out


def dataset_disclosure(contract: Contract, fr: FieldReport, u: Utility) -> DatasetDisclosure:
    d = contract.disclosure
    return DatasetDisclosure(
        dataset=contract.name,
        contract=contract.id,
        k=d.k_anonymity,
        l_diversity=d.l_diversity,
        quasi_identifiers=qi_columns(dimensions(contract)),
        sensitive=d.sensitive,
        rows_in=u.rows_in,
        rows_published=u.rows_published,
        rows_suppressed=u.rows_suppressed,
        rows_held=u.rows_held,
        k_achieved=u.k_achieved,
        average_class_size=u.average_class_size,
        discernibility=u.discernibility,
        dimensions=u.dimensions,
        sensitive_withheld=u.sensitive_withheld,
        dropped=fr.dropped,
        pseudonymized=fr.pseudonymized,
        coarsened=fr.coarsened,
        capped=fr.capped,
        banded=fr.banded,
        municipality_level_rows=fr.municipality_level_rows,
        sensitive_values_removed=fr.sensitive_values_removed,
    )


def budget(
    aggregates: list[AggregateReport], rho_per_release: float, rho_cap: float
) -> PrivacyBudget:
    this = sum(a.rho_spent for a in aggregates)
    spent = max((a.rho_per_partition_max for a in aggregates), default=0.0)
    return PrivacyBudget(
        rho_per_release=rho_per_release,
        rho_this_release=round(this, 6),
        rho_cap=rho_cap,
        rho_max_spent=round(spent, 6),
        epsilon_max_spent=round(rho_to_epsilon(spent), 4) if spent else 0.0,
    )


def enforce(report: DisclosureReport) -> None:
    failed = [c for c in report.checks if c.result is Result.FAILED]
    if failed:
        raise DisclosureError(
            "the audit failed, nothing published: "
            + "; ".join(f"{c.name}: {c.detail}" for c in failed)
        )


# -- output for people ---------------------------------------------------------------------------
# The pages are self-contained: CSS inline, no script, no font or link outside the file, so
# that they render on a machine without network (a police workstation).
def _cell(v: Any) -> str:
    """A value as the HTML of a table cell (escaped; a list of records one per line)."""
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        return "<br>".join(html.escape(_fmt(x)) for x in v)
    return html.escape(_fmt(v))


def _td(key: str, v: Any) -> str:
    if key == "result" and isinstance(v, str):
        return f'<td class="{html.escape(v)}">{html.escape(v)}</td>'
    numeric = isinstance(v, int | float) and not isinstance(v, bool)
    return ('<td class="num">' if numeric else "<td>") + _cell(v) + "</td>"


def _rows(items: Sequence[BaseModel], table_id: str = "") -> str:
    """A table with one row per item and one column per field."""
    if not items:
        return "<p>none</p>"
    fields = list(type(items[0]).model_fields)
    head = "".join(f'<th scope="col">{html.escape(k)}</th>' for k in fields)
    body = "".join(
        "<tr>" + "".join(_td(k, v) for k, v in i.model_dump().items()) + "</tr>\n" for i in items
    )
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    return (
        f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead>'
        f"<tbody>\n{body}</tbody></table></div>"
    )


def _columns(items: Sequence[BaseModel], table_id: str, named_by: str | None = None) -> str:
    """A table with one column per item and one row per field (items with many fields),
    each column headed by the item's field `named_by` (or "value")."""
    if not items:
        return "<p>none</p>"
    dumps = [i.model_dump() for i in items]
    fields = [k for k in type(items[0]).model_fields if k != named_by]
    head = f'<th scope="col">{html.escape(named_by or "")}</th>' + "".join(
        f'<th scope="col">{_cell(d[named_by]) if named_by else "value"}</th>' for d in dumps
    )
    body = "".join(
        f'<tr><th scope="row">{html.escape(k)}</th>' + "".join(_td(k, d[k]) for d in dumps)
        + "</tr>\n"
        for k in fields
    )  # fmt: skip
    return (
        f'<div class="scroll"><table id="{html.escape(table_id)}" class="fields"><thead>'
        f"<tr>{head}</tr></thead><tbody>\n{body}</tbody></table></div>"
    )


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    if isinstance(v, dict):
        if {"dimension", "levels", "rows_at_level"} <= v.keys():  # published rows per level
            levels = zip(v["levels"], v["rows_at_level"], strict=False)
            return f"{v['dimension']}: " + ", ".join(f"{lv} {_fmt(n)}" for lv, n in levels)
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


STYLE = """body{font-family:"IPAexGothic","Noto Sans CJK JP",system-ui,sans-serif;margin:2em;
max-width:90em;color:#1c2126;line-height:1.45}h1{font-size:1.5em}h2{font-size:1.2em;
margin-top:1.6em}.scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;
margin:.5em 0 1em;font-size:.9em}td,th{border:1px solid #c8cdd3;padding:4px 8px;text-align:left;
vertical-align:top}thead th{background:#eef1f4}tbody th{background:#f6f7f9;font-weight:normal;
white-space:nowrap}tbody tr:nth-child(even) td{background:#f8f9fa}td.num{text-align:right;
font-variant-numeric:tabular-nums}table.fields td{min-width:12em}.failed{color:#b3141a;
font-weight:bold}.passed{color:#106b21;font-weight:bold}.note{color:#5b636b;font-size:.9em}"""


def page(title: str, body: str) -> str:
    """A whole report page: `body` (HTML) under `title`, with the CSS inline."""
    t = html.escape(title)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{t}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{t}</h1>
{body}
</body>
</html>
"""


def write_report(report: DisclosureReport, directory: Path) -> tuple[Path, Path]:
    """`disclosure.json` and `disclosure.html` for auditors (no data values, counts only;
    the page needs no network)."""
    directory.mkdir(parents=True, exist_ok=True)
    j, h = directory / "disclosure.json", directory / "disclosure.html"
    write_text_atomic(j, report.model_dump_json(indent=2))
    result = html.escape(report.result.value)
    body = f"""<p>Result: <b class="{result}">{result}</b> · {report.created_at:%Y-%m-%d %H:%M %Z}.
The same content as <code>disclosure.json</code>; no data value, counts only.</p>
<ul id="summary">{"".join(f"<li>{html.escape(s)}</li>" for s in report.summary_lines())}</ul>
<h2>Record-level datasets</h2>{_columns(report.datasets, "datasets", "dataset")}
<h2>Aggregate tables</h2>{_columns(report.aggregates, "aggregates", "table")}
<h2>Privacy budget</h2>{_columns([report.budget] if report.budget else [], "budget")}
<h2>Audit of the published data</h2>{_rows(report.checks, "checks")}"""
    write_text_atomic(h, page(f"Disclosure control, release {report.release_id}", body))
    return j, h
