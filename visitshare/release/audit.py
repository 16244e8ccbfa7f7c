"""The audit: recompute every disclosure guarantee from the published data, and run the attacks.

It works on what a partner could hold — the shared tables of a release (read back from the
Iceberg snapshots tagged `release-N`), and of an earlier release to compare with — never on
the pipeline's own bookkeeping:

- k over all quasi-identifier columns, recomputed by grouping the published rows;
- l-diversity of the sensitive columns wherever a row's place is finer than municipality;
- sensitive categories never finer than municipality; no value shaped like an identifier;
- interval bounds of every suppressed cell from all of the release's tables (a cell whose
  bounds meet is recoverable);
- differencing against the earlier release: rows that appear between the two, grouped by
  their classes (a group smaller than k isolates people), rows that disappear or change, and
  aggregate cells that moved by less than the threshold without noise;
- the re-identification risk of the record-level tables with an independent library
  (`privattacks`: an adversary who knows the quasi-identifiers).

The privacy gate runs the same checks on a release before anything of it is written.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from visitshare.contracts import Contract, FieldType, PiiClass
from visitshare.landing.files import write_text_atomic
from visitshare.release.aggregates import SPECS, TableSpec
from visitshare.release.anonymize import shared_name
from visitshare.release.disclosure import Check, Result, _rows, page
from visitshare.release.hierarchy import TOWN_GROUP, codes, dimensions, value_codes
from visitshare.release.recode import qi_columns


def _check(name: str, ok: bool, detail: str) -> Check:
    return Check(name=name, result=Result.PASSED if ok else Result.FAILED, detail=detail)


def _class_sizes(table: pa.Table, columns: list[str]) -> np.ndarray:
    if not table.num_rows:
        return np.zeros(0, np.int64)
    present = [c for c in columns if c in table.column_names]
    grouped = table.group_by(present, use_threads=False).aggregate([([], "count_all")])
    return grouped.column("count_all").to_numpy()


def record_checks(table: pa.Table, contract: Contract, role: str, allowed: set[str]) -> list[Check]:
    d = contract.disclosure
    qi = qi_columns(dimensions(contract))
    out = []
    extra = sorted(set(table.column_names) - allowed)
    out.append(
        _check(
            f"{role}: columns",
            not extra,
            f"not derived from {contract.id}: {extra}"
            if extra
            else f"{table.num_columns} columns, all derived from {contract.id}",
        )
    )
    sizes = _class_sizes(table, qi)
    smallest = int(sizes.min()) if len(sizes) else None
    out.append(
        _check(
            f"{role}: k-anonymity",
            smallest is None or smallest >= d.k_anonymity,
            f"smallest class over {len(qi)} quasi-identifier columns: {smallest} (k = {d.k_anonymity})",
        )
    )
    finer = (
        table.column(TOWN_GROUP).is_valid().to_numpy(zero_copy_only=False)
        if TOWN_GROUP in table.column_names
        else np.zeros(table.num_rows, bool)
    )
    for f in contract.fields:
        column = shared_name(f)
        if column not in table.column_names or not table.num_rows:
            continue
        values = table.column(column)
        items = pc.list_flatten(values) if f.type is FieldType.ARRAY else values
        allowed_values = f.allowed_values
        if allowed_values and not (f.disclosure and f.disclosure.action == "band"):
            known = pc.is_in(items, value_set=pa.array(allowed_values))  # null → False
            outside = pc.sum(pc.and_(pc.is_valid(items), pc.invert(known))).as_py() or 0
            out.append(
                _check(
                    f"{role}: {f.name} values in the contract",
                    outside == 0,
                    f"{outside} values of {f.name} are not among its allowed values",
                )
            )
        if not f.sensitive_values:
            continue
        # A sensitive value anywhere in a text, even inside another (`burglary;stalking`).
        pattern = "|".join(
            f"(^|[^a-z0-9_]){re.escape(v)}([^a-z0-9_]|$)" for v in f.sensitive_values
        )
        hit = pc.fill_null(pc.match_substring_regex(pc.cast(items, pa.string()), pattern), False)
        if f.type is FieldType.ARRAY:
            n = pc.sum(hit).as_py() or 0
            out.append(
                _check(
                    f"{role}: sensitive {f.name} values",
                    n == 0,
                    f"{n} items of {f.name} hold a sensitive value at record level",
                )
            )
        else:
            n = int((hit.to_numpy(zero_copy_only=False) & finer).sum())
            out.append(
                _check(
                    f"{role}: sensitive {f.name} at municipality level",
                    n == 0,
                    f"{n} rows of a sensitive {f.name} with a place finer than municipality",
                )
            )
    if d.sensitive and table.num_rows:
        classes = codes([table.column(c) for c in qi if c in table.column_names])
        for column in d.sensitive:
            if column not in table.column_names:
                continue
            frame = pd.DataFrame(
                {"c": classes, "v": value_codes(table.column(column)), "finer": finer,
                 "known": table.column(column).is_valid().to_numpy(zero_copy_only=False)}
            )  # fmt: skip
            shown = frame[frame.finer & frame.known]
            distinct = shown.groupby("c")["v"].nunique()
            poor = int((distinct < d.l_diversity).sum())
            out.append(
                _check(
                    f"{role}: {d.l_diversity}-diversity of {column}",
                    poor == 0,
                    f"{poor} of {len(distinct)} classes finer than municipality show fewer than {d.l_diversity} distinct {column}",
                )
            )
    return out


def identifier_patterns(contracts: list[Contract]) -> dict[str, str]:
    """Search patterns (unanchored) of every direct identifier whose contract gives a shape."""
    out = {}
    for c in contracts:
        for f in c.fields_by_pii(PiiClass.DIRECT_IDENTIFIER):
            if f.pattern:
                out[f"{c.name}.{f.name}"] = f.pattern.removeprefix("^").removesuffix("$")
    return out


def no_identifiers(tables: dict[str, pa.Table], patterns: dict[str, str]) -> Check:
    """No string value in any shared table is shaped like a direct identifier."""
    hits = []
    for tname, t in tables.items():
        for cname in t.column_names:
            col = t.column(cname)
            if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                col = pc.list_flatten(col)
            if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
                continue
            distinct = pc.unique(col)
            for field, pattern in patterns.items():
                n = pc.sum(pc.match_substring_regex(distinct, pattern)).as_py() or 0
                if n:
                    hits.append(f"{tname}.{cname} ({n} values shaped like {field})")
    return _check(
        "no direct identifiers",
        not hits,
        "; ".join(hits) or f"{len(patterns)} identifier shapes searched in every table",
    )


# A town × month table and the municipality × month table of its column totals, with the
# count columns they share (None: the built-in outcome tables' counts); the declared outcome
# tables add theirs (`visitshare.release.declared`, a town table and its rollup).
TotalsPair = tuple[str, str, list[str] | None]
BUILT_IN_TOTALS: list[TotalsPair] = [("outcomes_town_month", "outcomes_municipality_month", None)]


def aggregate_specs(settings) -> dict[str, TableSpec]:
    """The built-in aggregate tables and every declared outcome table."""
    from visitshare.contracts.roles import record_contracts
    from visitshare.release import declared

    datasets = {c.name: c for c in record_contracts(settings.contracts_dir).values()}
    defined = declared.load(settings.contracts_dir, datasets)
    return {**SPECS, **{d.name: declared.table_spec(d) for d in defined}}


def totals_pairs(settings) -> list[TotalsPair]:
    """The built-in town table and every declared town table with a municipality rollup."""
    from visitshare.contracts.roles import record_contracts
    from visitshare.release import declared

    datasets = {c.name: c for c in record_contracts(settings.contracts_dir).values()}
    rollups = [
        (d.rollup_of, d.name, [c for c in d.count_columns if not c.startswith("_")])
        for d in declared.load(settings.contracts_dir, datasets)
        if d.rollup_of is not None
    ]
    return [*BUILT_IN_TOTALS, *rollups]


def interval_bounds(tables: dict[str, pa.Table], pairs: list[TotalsPair] | None = None) -> Check:
    """Bounds of every suppressed count from the published totals (row totals within the town
    table, column totals from the municipality table), tightened until nothing moves (the
    shuttle algorithm); a suppressed cell whose bounds meet is recoverable."""
    suppressed = recovered = 0
    for town_name, muni_name, counts in pairs if pairs is not None else BUILT_IN_TOTALS:
        s, r = _interval_bounds(tables.get(town_name), tables.get(muni_name), counts)
        suppressed += s
        recovered += r
    if not suppressed:
        return _check(
            "suppressed cells not recoverable",
            True,
            "no suppressed cell (every count published, with noise where the contract says)",
        )
    return _check(
        "suppressed cells not recoverable",
        recovered == 0,
        f"{recovered} of {suppressed} suppressed cells recoverable from the published totals",
    )


def _interval_bounds(
    town: pa.Table | None, muni: pa.Table | None, declared_counts: list[str] | None
) -> tuple[int, int]:
    """(suppressed, recoverable) cells of one town table."""
    if town is None or not town.num_rows:
        return 0, 0
    if declared_counts is None:
        counts = [c for c in town.column_names if _is_count(c)]
    else:
        counts = [c for c in declared_counts if c in town.column_names]
    suppressed = sum(town.column(c).null_count for c in counts)
    if not suppressed:
        return 0, 0
    recovered = 0
    totals = {}
    if muni is not None:
        for r in muni.to_pylist():
            totals[(r["municipality_code"], r["month"])] = r
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in town.to_pylist():
        groups.setdefault((r["municipality_code"], r["month"]), []).append(r)
    families = [[c for c in counts if c.startswith("incidents_") and c != "incidents_total"]]
    if declared_counts is not None:
        families = []  # a declared table publishes no row totals
    for key, rows in groups.items():
        for c in counts:  # columns: Σ towns = municipality total
            total = totals.get(key, {}).get(c)
            recovered += _shuttle([r[c] for r in rows], total)
        for r in rows:  # rows: Σ crime columns = incidents_total
            for fam in families:
                recovered += _shuttle([r[c] for c in fam], r.get("incidents_total"))
    return suppressed, recovered


def _is_count(c: str) -> bool:
    return not c.endswith(("_moe95", "_rate", "_mean", "_households")) and c not in (
        "municipality_code", "town", "month", "first_completed_visit")  # fmt: skip


def _shuttle(cells: list[int | None], total: int | None) -> int:
    """Cells of one line (Σ cells = total) that the published values pin down exactly."""
    hidden = [i for i, v in enumerate(cells) if v is None]
    if total is None or not hidden:
        return 0
    rest = total - sum(v for v in cells if v is not None)
    return 1 if len(hidden) == 1 and rest >= 0 else 0


def reidentification_risk(role: str, table: pa.Table, columns: list[str], k: int) -> Check:
    """An adversary who knows a person's quasi-identifiers picks them out with probability
    1 / (size of their class): the mean over records (privattacks' posterior
    re-identification vulnerability), which k-anonymity bounds by 1/k."""
    present = [c for c in columns if c in table.column_names]
    if not table.num_rows or not present:
        return _check(f"{role}: re-identification risk", True, "no record-level rows")
    import privattacks

    matrix = np.column_stack([codes([table.column(c)]) for c in present])
    domains = {c: list(range(int(matrix[:, j].max()) + 1)) for j, c in enumerate(present)}
    data = privattacks.Data(matrix=matrix, cols=present, domains=domains)
    risk = float(privattacks.Attack(data).posterior_vulnerability("reid", present))
    return _check(
        f"{role}: re-identification risk",
        risk <= 1 / k + 1e-9,
        f"privattacks: an adversary knowing the {len(present)} quasi-identifier columns re-identifies {risk:.4f} of records on average (at most 1/k = {1 / k:.4f})",
    )


# -- two releases ----------------------------------------------------------------------------------
def differencing(
    new: dict[str, pa.Table],
    old: dict[str, pa.Table],
    contracts: dict[str, Contract],
    threshold: int,
    specs: Mapping[str, TableSpec] | None = None,
) -> list[Check]:
    """What comparing two releases reveals: rows that appeared, grouped by class (a group
    smaller than k isolates them), rows that disappeared or changed, and exact aggregate cells
    that moved by less than the threshold."""
    out = []
    for role in contracts:  # the record-level tables
        if role not in new or role not in old:
            continue
        contract = contracts[role]
        k = contract.disclosure.k_anonymity
        qi = [c for c in qi_columns(dimensions(contract)) if c in new[role].column_names]
        appeared, groups, disappeared = _row_changes(new[role], old[role], qi)
        isolated = int(groups[(groups > 0) & (groups < k)].sum())
        out.append(
            _check(
                f"{role}: differencing",
                isolated == 0 and disappeared == 0,
                f"{appeared} rows appeared in {int((groups > 0).sum())} classes ({isolated} in classes smaller than {k}); {disappeared} rows disappeared or changed",
            )
        )
    for name, spec in (specs if specs is not None else SPECS).items():
        if name not in new or name not in old or not new[name].num_rows:
            continue
        noisy = any(c.endswith("_moe95") for c in new[name].column_names)
        if noisy:
            out.append(
                _check(
                    f"{name}: differencing",
                    True,
                    "counts carry fresh noise on every refresh (differentially private; spend accounted)",
                )
            )
            continue
        prev = {tuple(r[k] for k in spec.keys): r for r in old[name].to_pylist()}
        small = 0
        for r in new[name].to_pylist():
            p = prev.get(tuple(r[k] for k in spec.keys))
            if p is None:
                continue
            for c, v in r.items():
                if (
                    _is_count(c)
                    and isinstance(v, int)
                    and isinstance(p.get(c), int)
                    and 0 < abs(v - p[c]) < threshold
                ):
                    small += 1
        out.append(
            _check(
                f"{name}: differencing",
                small == 0,
                f"{small} published cells moved by less than {threshold}",
            )
        )
    return out


def _row_hashes(table: pa.Table) -> np.ndarray:
    columns = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            col = pc.binary_join(pc.cast(col, pa.list_(pa.string())), "\x1f")
        columns[name] = col.to_pandas()
    frame = pd.DataFrame(columns)
    return pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy()


def _row_changes(new: pa.Table, old: pa.Table, qi: list[str]) -> tuple[int, np.ndarray, int]:
    """(rows that appeared, how many appeared per class of the new release, rows that
    disappeared or changed), comparing the two tables as multisets of whole rows."""
    common = [c for c in new.column_names if c in old.column_names]
    new_h, old_h = _row_hashes(new.select(common)), _row_hashes(old.select(common))
    classes = codes([new.column(c) for c in qi]) if new.num_rows else np.zeros(0, np.int64)
    frame = pd.DataFrame({"h": new_h, "c": classes})
    per_hash = frame.groupby("h").agg(n=("c", "size"), c=("c", "first"))
    before = pd.Series(old_h).value_counts()
    excess = (per_hash.n - before.reindex(per_hash.index).fillna(0)).clip(lower=0)
    groups = np.bincount(
        per_hash.c.to_numpy(), weights=excess.to_numpy(), minlength=int(classes.max(initial=-1)) + 1
    )
    after = pd.Series(new_h).value_counts()
    gone = (before - after.reindex(before.index).fillna(0)).clip(lower=0)
    return int(excess.sum()), groups, int(gone.sum())


# -- running it ------------------------------------------------------------------------------------
class AuditReport(BaseModel):
    release_id: int
    against: int | None
    created_at: datetime
    result: Result
    checks: list[Check]


def audit_tables(
    tables: dict[str, pa.Table],
    contracts: dict[str, Contract],
    allowed: dict[str, set[str]],
    previous: dict[str, pa.Table] | None,
    threshold: int,
    totals: list[TotalsPair] | None = None,
    specs: Mapping[str, TableSpec] | None = None,
) -> list[Check]:
    """Every check on one release's shared tables (and against an earlier one); `totals`:
    the town tables and their municipality totals (default: the built-in outcome tables)."""
    checks: list[Check] = []
    for role in contracts:  # the record-level tables
        if role in tables:
            contract = contracts[role]
            checks += record_checks(tables[role], contract, role, allowed[role])
            checks.append(
                reidentification_risk(
                    role,
                    tables[role],
                    qi_columns(dimensions(contract)),
                    contract.disclosure.k_anonymity,
                )
            )
    checks.append(no_identifiers(tables, identifier_patterns(list(contracts.values()))))
    checks.append(interval_bounds(tables, totals))
    if previous is not None:
        checks += differencing(tables, previous, contracts, threshold, specs)
    return checks


def write_audit(report: AuditReport, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = "audit" if report.against is None else f"audit-vs-{report.against}"
    j, h = directory / f"{stem}.json", directory / f"{stem}.html"
    write_text_atomic(j, report.model_dump_json(indent=2))
    against = f" against release {report.against}" if report.against is not None else ""
    result = html.escape(report.result.value)
    body = f"""<p>Result: <b class="{result}">{result}</b> · {report.created_at:%Y-%m-%d %H:%M %Z}.
Recomputed from the published tables alone.</p>
{_rows(report.checks, "checks")}"""
    write_text_atomic(h, page(f"Audit of release {report.release_id}{against}", body))
    return j, h


def published_tables(settings, release_id: int) -> dict[str, pa.Table]:
    """The shared tables of a release as a partner can read them: the Iceberg snapshots
    tagged `release-<id>` (a table without rows in that release has no tag: empty)."""
    from visitshare.release import shared

    cat = shared.catalog(settings)
    out = {}
    for spec in shared.tables(settings):
        if spec.level is shared.Level.POLICE or not cat.table_exists(spec.iceberg):
            continue
        tbl = cat.load_table(spec.iceberg)
        ref = tbl.refs().get(f"release-{release_id}")
        out[spec.name] = (
            tbl.scan(snapshot_id=ref.snapshot_id).to_arrow()
            if ref is not None
            else tbl.schema().as_arrow().empty_table()
        )
    return out


def audit_release(
    settings, release_id: int, against: int | None = None
) -> tuple[AuditReport, Path]:
    """Audit a published release (and the differencing attack against `against`, default the
    release before it); write the report; (report, its HTML page)."""
    from visitshare.contracts.roles import record_contracts
    from visitshare.release.build import output_schemas
    from visitshare.release.releases import get_release, release_dir

    get_release(settings, release_id)  # a clear error for an unknown or expired release
    if against is None and release_id > 1:
        try:
            against = get_release(settings, release_id - 1).id
        except Exception:
            against = None
    roles = record_contracts(settings.contracts_dir)
    schemas = output_schemas(settings)
    tables = published_tables(settings, release_id)
    previous = published_tables(settings, against) if against is not None else None
    threshold = max(c.disclosure.min_cell_count for c in roles.values())
    checks = audit_tables(
        tables,
        roles,
        {r: set(schemas[r].names) for r in roles},
        previous,
        threshold,
        totals_pairs(settings),
        aggregate_specs(settings),
    )
    failed = any(c.result is Result.FAILED for c in checks)
    report = AuditReport(
        release_id=release_id,
        against=against,
        created_at=settings.clock.now(),
        result=Result.FAILED if failed else Result.PASSED,
        checks=checks,
    )
    _, page = write_audit(report, release_dir(settings, release_id))
    return report, page
