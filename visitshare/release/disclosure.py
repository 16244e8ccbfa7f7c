"""The disclosure-control report of a release (typed record, written as JSON and HTML), and the
privacy gate every release passes before anything is published.

The gate re-checks the published data itself, not the code that produced it: k recomputed
from the published rows, only contract-derived columns, no value shaped like a direct
identifier, no town on a sensitive-category row. A failed check stops the release.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from visitshare.contracts import Contract, FieldType, PiiClass
from visitshare.landing.files import write_text_atomic
from visitshare.release.anonymize import (
    FieldReport,
    KReport,
    generalizable,
    shared_name,
    shared_quasi_identifiers,
)
from visitshare.release.errors import DisclosureError
from visitshare.release.outcomes import SuppressionReport


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
    quasi_identifiers: list[str]
    rows_in: int
    rows_generalized: int
    rows_suppressed: int
    rows_published: int
    k_achieved: int | None
    dropped: list[str]
    pseudonymized: list[str]
    coarsened: list[str]
    capped: list[str]
    banded: list[str]
    municipality_level_rows: int
    sensitive_values_removed: int


class TableSuppression(BaseModel):
    table: str
    cells: int
    primary: int
    secondary: int
    derived_nulled: int


class DisclosureReport(BaseModel):
    release_id: int
    created_at: datetime
    result: Result
    datasets: list[DatasetDisclosure]
    tables: list[TableSuppression]
    checks: list[Check] = Field(default_factory=list)

    def summary_lines(self) -> list[str]:
        out = []
        for d in self.datasets:
            out.append(
                f"{d.dataset}: k={d.k} achieved {d.k_achieved}; {d.rows_in:,} rows → "
                f"{d.rows_published:,} published ({d.rows_generalized:,} generalized to "
                f"municipality, {d.rows_suppressed:,} suppressed); dropped "
                f"{len(d.dropped)} fields, pseudonymized {', '.join(d.pseudonymized) or 'none'}"
            )
        for t in self.tables:
            out.append(
                f"{t.table}: {t.primary:,} cells suppressed (primary), {t.secondary:,} "
                f"(secondary) of {t.cells:,}; {t.derived_nulled:,} rates/means withheld"
            )
        failed = [c for c in self.checks if c.result is Result.FAILED]
        out.append(
            f"privacy checks: {len(self.checks) - len(failed)}/{len(self.checks)} passed"
            + (f" (failed: {', '.join(c.name for c in failed)})" if failed else "")
        )
        return out


# -- merging shard reports -----------------------------------------------------------------------
def merge_field_reports(reports: list[FieldReport]) -> FieldReport:
    out = reports[0].model_copy(deep=True)
    out.municipality_level_rows = sum(r.municipality_level_rows for r in reports)
    out.sensitive_values_removed = sum(r.sensitive_values_removed for r in reports)
    return out


def merge_k_reports(reports: list[KReport]) -> KReport:
    achieved = [r.k_achieved for r in reports if r.k_achieved is not None]
    return KReport(
        k=reports[0].k,
        quasi_identifiers=reports[0].quasi_identifiers,
        rows_in=sum(r.rows_in for r in reports),
        generalized=sum(r.generalized for r in reports),
        suppressed=sum(r.suppressed for r in reports),
        k_achieved=min(achieved) if achieved else None,
    )


def merge_suppression(reports: list[SuppressionReport]) -> SuppressionReport:
    out = SuppressionReport(table=reports[0].table)
    for name in SuppressionReport.model_fields:
        if name != "table":
            setattr(out, name, sum(getattr(r, name) for r in reports))
    return out


def dataset_disclosure(
    contract: Contract, fr: FieldReport, kr: KReport, published: int
) -> DatasetDisclosure:
    return DatasetDisclosure(
        dataset=contract.name,
        contract=contract.id,
        k=kr.k,
        quasi_identifiers=kr.quasi_identifiers,
        rows_in=kr.rows_in,
        rows_generalized=kr.generalized,
        rows_suppressed=kr.suppressed,
        rows_published=published,
        k_achieved=kr.k_achieved,
        dropped=fr.dropped,
        pseudonymized=fr.pseudonymized,
        coarsened=fr.coarsened,
        capped=fr.capped,
        banded=fr.banded,
        municipality_level_rows=fr.municipality_level_rows,
        sensitive_values_removed=fr.sensitive_values_removed,
    )


# -- the privacy gate ----------------------------------------------------------------------------
def identifier_patterns(contracts: list[Contract]) -> dict[str, str]:
    """Search patterns (unanchored) of every direct identifier whose contract gives a shape."""
    out = {}
    for c in contracts:
        for f in c.fields_by_pii(PiiClass.DIRECT_IDENTIFIER):
            if f.pattern:
                out[f"{c.name}.{f.name}"] = f.pattern.removeprefix("^").removesuffix("$")
    return out


def _string_columns(table: pa.Table):
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            col = pc.list_flatten(col)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            yield name, col


def check_record_table(table: pa.Table, contract: Contract) -> list[Check]:
    """k recomputed from the published rows; only contract-derived columns are present."""
    checks = []
    allowed = {
        shared_name(f)
        for f in contract.fields
        if f.disclosure is None or f.disclosure.action != "drop"
    }
    extra = sorted(set(table.column_names) - allowed)
    checks.append(
        Check(
            name=f"{contract.name}: columns",
            result=Result.FAILED if extra else Result.PASSED,
            detail=f"columns not allowed by the contract: {extra}"
            if extra
            else f"{table.num_columns} columns, all derived from {contract.id}",
        )
    )
    k = contract.disclosure.k_anonymity
    qi = shared_quasi_identifiers(contract)
    if table.num_rows:
        sizes = table.group_by(qi, use_threads=False).aggregate([([], "count_all")])
        smallest = pc.min(sizes.column("count_all")).as_py()
    else:
        smallest = None
    ok = smallest is None or smallest >= k
    checks.append(
        Check(
            name=f"{contract.name}: k-anonymity",
            result=Result.PASSED if ok else Result.FAILED,
            detail=f"smallest group over {qi} recomputed from the published rows: "
            f"{smallest} (k = {k})",
        )
    )
    town = generalizable(contract)
    for f in contract.fields:
        if f.sensitive_values and f.type is not FieldType.ARRAY and town and table.num_rows:
            col = table.column(shared_name(f))
            leak = pc.and_(
                pc.fill_null(pc.is_in(col, value_set=pa.array(f.sensitive_values)), False),
                pc.is_valid(table.column(town)),
            )
            n = pc.sum(leak).as_py() or 0
            checks.append(
                Check(
                    name=f"{contract.name}: sensitive {f.name} at municipality level",
                    result=Result.FAILED if n else Result.PASSED,
                    detail=f"{n} rows of a sensitive {f.name} carry a town",
                )
            )
        if f.sensitive_values and f.type is FieldType.ARRAY and table.num_rows:
            flat = pc.list_flatten(table.column(shared_name(f)))
            n = pc.sum(pc.is_in(flat, value_set=pa.array(f.sensitive_values))).as_py() or 0
            checks.append(
                Check(
                    name=f"{contract.name}: sensitive {f.name} values",
                    result=Result.FAILED if n else Result.PASSED,
                    detail=f"{n} sensitive {f.name} values in record-level data",
                )
            )
    return checks


def check_no_identifiers(tables: dict[str, pa.Table], patterns: dict[str, str]) -> Check:
    """No string value in any shared table is shaped like a direct identifier."""
    hits = []
    for tname, t in tables.items():
        for cname, col in _string_columns(t):
            distinct = pc.unique(col)  # low cardinality mostly: test each value once
            for field, pattern in patterns.items():
                n = pc.sum(pc.match_substring_regex(distinct, pattern)).as_py() or 0
                if n:
                    hits.append(f"{tname}.{cname} ({n} distinct values shaped like {field})")
    return Check(
        name="no direct identifiers",
        result=Result.FAILED if hits else Result.PASSED,
        detail="; ".join(hits) or f"{len(patterns)} identifier shapes searched in every table",
    )


def enforce(report: DisclosureReport) -> None:
    failed = [c for c in report.checks if c.result is Result.FAILED]
    if failed:
        raise DisclosureError(
            "privacy checks failed, nothing published: "
            + "; ".join(f"{c.name}: {c.detail}" for c in failed)
        )


# -- output for people ---------------------------------------------------------------------------
def _rows(items: Sequence[BaseModel]) -> str:
    if not items:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in type(items[0]).model_fields)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in i.model_dump().values())
        + "</tr>"
        for i in items
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(map(str, v))
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def write_report(report: DisclosureReport, directory: Path) -> tuple[Path, Path]:
    """`disclosure.json` and `disclosure.html` for auditors (no data values, counts only)."""
    directory.mkdir(parents=True, exist_ok=True)
    j, h = directory / "disclosure.json", directory / "disclosure.html"
    write_text_atomic(j, report.model_dump_json(indent=2))
    page = f"""<!doctype html><html lang="en"><meta charset="utf-8">
<title>Disclosure control, release {report.release_id}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:4px 8px;text-align:left}}.failed{{color:#b00}}</style>
<h1>Disclosure control, release {report.release_id}</h1>
<p>Result: <b class="{report.result.value}">{report.result.value}</b> · {report.created_at:%Y-%m-%d %H:%M %Z}</p>
<ul>{"".join(f"<li>{html.escape(s)}</li>" for s in report.summary_lines())}</ul>
<h2>Record-level datasets</h2>{_rows(report.datasets)}
<h2>Aggregates: cell suppression</h2>{_rows(report.tables)}
<h2>Privacy checks on the published data</h2>{_rows(report.checks)}
</html>"""
    write_text_atomic(h, page)
    return j, h
