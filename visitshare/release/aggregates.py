"""The aggregate tables, protected per partition, and carried over while their data is the same.

A partition is a table's rows of one municipality and one month (the before/after table: one
municipality). Each release computes the true counts of the partitions it touches; a partition
whose true values did not change keeps the values it was published with (no new noise, no new
privacy spend: the same data is never released twice with different noise). A changed
partition is refreshed, unless the contract's policy says not yet:

- dp (default): discrete Gaussian noise from OpenDP over every cell of the partition's public
  domain; each refresh spends `rho_per_release` (zCDP), at most `rho_cap` in all; an open month
  is refreshed at most every `refresh_days`. A partition that may not be refreshed keeps its
  last values and is marked stale. The 95% margin of error is published beside every row.
- threshold: counts from 1 to min_cell_count−1 are suppressed with secondary suppression, and
  a published cell moves only when its true value changed by at least min_cell_count, so that
  comparing two releases never isolates fewer people than a cell may hold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from visitshare.contracts.model import AggregatePolicy
from visitshare.release import dp
from visitshare.release.outcomes import (
    INCIDENT_L2_SENSITIVITY,
    derive_rates,
    incident_columns,
    suppress,
    visit_columns,
)
from visitshare.release.records import closed

INTERNAL = ("satisfaction_points", "satisfaction_answers")  # inputs of the mean, not published


@dataclass(frozen=True)
class TableSpec:
    name: str
    keys: list[str]  # row keys; the first is the municipality
    by_month: bool  # partitions are municipality × month (else municipality)
    suppression_groups: list[str] = field(default_factory=list)  # threshold mode
    column_totals: bool = False
    # A declared table (`visitshare.release.declared`): its count families (name, columns,
    # L2 sensitivity of one record) and how its rates are derived from protected counts.
    # None: one of the built-in programme tables below.
    families: tuple[tuple[str, tuple[str, ...], float], ...] | None = None
    derive: Callable[[pa.Table, Mapping[str, float]], pa.Table] | None = None


SPECS = {
    "outcomes_town_month": TableSpec(
        "outcomes_town_month", ["municipality_code", "town", "month"], True,
        ["municipality_code", "month"], True,
    ),
    "outcomes_municipality_month": TableSpec(
        "outcomes_municipality_month", ["municipality_code", "month"], True
    ),
    "before_after_town": TableSpec("before_after_town", ["municipality_code", "town"], False),
}  # fmt: skip


class PartitionState(BaseModel):
    """What a partition was last published with (from `aggregate_states`)."""

    fingerprint: str
    path: str
    rho_spent: float
    refreshes: int
    refreshed_at: datetime
    release_id: int


class Refresh(BaseModel):
    """A partition this release publishes anew (or marks stale); committed with the release."""

    table_name: str
    municipality_code: str
    period: str
    fingerprint: str
    path: str
    rho: float  # spent by this refresh (0: threshold mode, or stale)
    stale: bool


class AggregateReport(BaseModel):
    table: str
    mode: str
    cells: int = 0
    cells_published: int = 0  # with a value (noisy or exact), not blanked
    count_total: int = 0  # Σ of the true counts
    count_blanked: int = 0  # Σ of the true counts of blanked cells
    partitions_refreshed: int = 0
    partitions_carried: int = 0
    partitions_stale: int = 0
    rho_spent: float = 0.0  # the most one partition spent in this release (a record is in one)
    rho_per_partition_max: float = 0.0  # the most any partition has spent in all releases
    moe95: dict[str, int] = {}  # count family → 95% margin of error (dp)
    primary: int = 0
    secondary: int = 0

    @property
    def cells_published_share(self) -> float:
        return self.cells_published / self.cells if self.cells else 1.0

    @property
    def count_blanked_share(self) -> float:
        return self.count_blanked / self.count_total if self.count_total else 0.0


def partition_key(spec: TableSpec, row: dict) -> tuple[str, str]:
    return row["municipality_code"], (row["month"] if spec.by_month else "all")


def fingerprint(table: pa.Table) -> str:
    """Of a partition's true values (order-independent)."""
    rows = sorted(tuple(r.values()) for r in table.to_pylist())
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def _split(table: pa.Table, spec: TableSpec) -> dict[tuple[str, str], pa.Table]:
    """The table's rows per partition (row order kept within each)."""
    if not table.num_rows:
        return {}
    munis = table.column("municipality_code")
    periods = table.column("month") if spec.by_month else pa.array(["all"] * table.num_rows)
    joined = pc.binary_join_element_wise(munis, periods, "|")
    if isinstance(joined, pa.ChunkedArray):
        joined = joined.combine_chunks()
    keys = pc.dictionary_encode(joined)
    codes = keys.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(keys.dictionary) + 1))
    out = {}
    for code, key in enumerate(keys.dictionary.to_pylist()):
        muni, period = key.split("|", 1)
        out[(muni, period)] = table.take(pa.array(order[bounds[code] : bounds[code + 1]]))
    return out


class ValuesStore:
    """The published values of aggregate partitions, kept in the police zone: one Parquet file
    per table, shard and release holds every partition that release refreshed (`path` in
    `aggregate_states`); read once per file, then split by partition. `municipalities`: only
    their rows are kept (a release that recomputes a few partitions reads few of a file's)."""

    def __init__(
        self, read: Callable[[str], pa.Table], municipalities: Collection[str] | None = None
    ):
        self._read = read
        self._munis = pa.array(sorted(municipalities), pa.string()) if municipalities else None
        self._files: dict[str, dict[tuple[str, str], pa.Table]] = {}

    def get(self, spec: TableSpec, path: str, key: tuple[str, str]) -> pa.Table:
        if path not in self._files:
            table = self._read(path)
            if self._munis is not None:
                table = table.filter(
                    pc.is_in(table.column("municipality_code"), value_set=self._munis)
                )
            self._files[path] = _split(table, spec)
        return self._files[path][key]


def release_aggregates(
    spec: TableSpec,
    true: pa.Table,
    policy: AggregatePolicy,
    threshold: int,
    visit_l2: float,
    states: dict[tuple[str, str], PartitionState],
    as_of: datetime,
    close_after_days: int,
    store: ValuesStore,
    values_path: str,
) -> tuple[pa.Table, list[Refresh], AggregateReport, pa.Table | None]:
    """The published rows of every partition in `true`, the refreshes this release makes, the
    report, and the values of the refreshed partitions, which the caller stores at
    `values_path` (police zone) for the releases after this one."""
    report = AggregateReport(table=spec.name, mode=policy.mode)
    parts = dict(sorted(_split(true, spec).items()))
    values: dict[tuple[str, str], pa.Table] = {}
    todo: dict[tuple[str, str], tuple[str, PartitionState | None]] = {}
    refreshes: list[Refresh] = []
    for key, part in parts.items():
        fp = fingerprint(part)
        state = states.get(key)
        if state is not None and state.fingerprint == fp:
            values[key] = store.get(spec, state.path, key)
            report.partitions_carried += 1
            continue
        is_open = spec.by_month and not closed(key[1], as_of, close_after_days)
        may = state is None or (
            (policy.mode == "threshold" or state.rho_spent + policy.rho_per_release <= policy.rho_cap + 1e-9)
            and not (is_open and as_of - state.refreshed_at < timedelta(days=policy.refresh_days))
        )  # fmt: skip
        if may:
            todo[key] = (fp, state)
            continue
        assert state is not None
        values[key] = store.get(spec, state.path, key)
        refreshes.append(
            Refresh(table_name=spec.name, municipality_code=key[0], period=key[1],
                    fingerprint=state.fingerprint, path=state.path, rho=0.0, stale=True)
        )  # fmt: skip
        report.partitions_stale += 1
    fresh, rho = _protect_all(spec, parts, todo, store, policy, threshold, visit_l2, report)
    for key, (fp, state) in todo.items():
        values[key] = fresh[key]
        refreshes.append(
            Refresh(table_name=spec.name, municipality_code=key[0], period=key[1],
                    fingerprint=fp, path=values_path, rho=rho, stale=False)
        )  # fmt: skip
        report.partitions_refreshed += 1
        report.rho_spent = max(report.rho_spent, rho)
        spent = (state.rho_spent if state else 0.0) + rho
        report.rho_per_partition_max = max(report.rho_per_partition_max, spent)
    table = _concat([public(values[k]) for k in parts])
    _count_cells(spec, _concat(list(parts.values())), table, report)
    stored = [fresh[k] for k in todo]
    return table, refreshes, report, _concat(stored) if stored else None


def _protect_all(
    spec: TableSpec,
    parts: dict[tuple[str, str], pa.Table],
    todo: dict[tuple[str, str], tuple[str, PartitionState | None]],
    store: ValuesStore,
    policy: AggregatePolicy,
    threshold: int,
    visit_l2: float,
    report: AggregateReport,
) -> tuple[dict[tuple[str, str], pa.Table], float]:
    """New protected values of the partitions in `todo`, and the rho each one spends.

    DP: one draw over all of them at once (the partitions hold different records, so each
    spends rho, in parallel); threshold: per partition, against its earlier values."""
    if not todo:
        return {}, 0.0
    if policy.mode == "dp":
        keys = list(todo)
        together, rho = _noisy(spec, _concat([parts[k] for k in keys]), policy, visit_l2, report)
        out, offset = {}, 0
        for k in keys:
            out[k] = together.slice(offset, parts[k].num_rows)
            offset += parts[k].num_rows
        return out, rho
    return {
        k: _suppressed(
            spec, parts[k], threshold,
            store.get(spec, state.path, k) if state is not None else None, report,
        )
        for k, (_, state) in todo.items()
    }, 0.0  # fmt: skip


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def _counts(spec: TableSpec, t: pa.Table) -> list[str]:
    if spec.families is not None:
        return [c for _, cols, _ in spec.families for c in cols if not _internal(c)]
    return [c for c in visit_columns(t) + incident_columns(t) if c not in INTERNAL] + [
        c for c in ("incidents_before_90d", "incidents_after_90d") if c in t.column_names
    ]


def _internal(column: str) -> bool:
    """Inputs of a mean: protected with the counts, kept in the police zone, not published."""
    return column in INTERNAL or column.startswith("_")


def _count_cells(
    spec: TableSpec, true: pa.Table, published: pa.Table, report: AggregateReport
) -> None:
    """Cells, cells published and the true count blanked; `published` row i is `true` row i."""
    for c in _counts(spec, true):
        if c not in true.column_names:  # no partition at all: nothing to count
            continue
        values = true.column(c).to_numpy(zero_copy_only=False)
        report.count_total += int(values.sum())
        if c not in published.column_names:
            report.cells += len(values)
            report.count_blanked += int(values.sum())
            continue
        valid = published.column(c).is_valid().to_numpy(zero_copy_only=False)
        report.cells += len(valid)
        report.cells_published += int(valid.sum())
        report.count_blanked += int(values[~valid].sum())


def protect(
    spec: TableSpec,
    part: pa.Table,
    policy: AggregatePolicy,
    threshold: int,
    visit_l2: float,
    previous: pa.Table | None,
    report: AggregateReport,
) -> tuple[pa.Table, float]:
    if policy.mode == "dp":
        return _noisy(spec, part, policy, visit_l2, report)
    return _suppressed(spec, part, threshold, previous, report), 0.0


def _noisy(
    spec: TableSpec,
    part: pa.Table,
    policy: AggregatePolicy,
    visit_l2: float,
    report: AggregateReport,
) -> tuple[pa.Table, float]:
    out = part
    spent = 0.0
    families = [
        ("visit", visit_columns(part), visit_l2),
        ("incident", incident_columns(part), INCIDENT_L2_SENSITIVITY),
    ]
    if spec.name == "before_after_town":
        families = [("incident", ["incidents_before_90d", "incidents_after_90d"], 1.0)]
    if spec.families is not None:
        families = [(name, list(cols), l2) for name, cols, l2 in spec.families]
    least: dict[str, float] = {}
    for family, columns, l2 in families:
        if not columns:
            continue
        matrix = np.column_stack([part.column(c).to_numpy(zero_copy_only=False) for c in columns])
        noisy, sigma, rho = dp.noisy(matrix, l2, policy.rho_per_release)
        spent = max(spent, rho)  # visits and incidents are different records: parallel
        for j, c in enumerate(columns):
            out = out.set_column(
                out.schema.get_field_index(c), c, pa.array(noisy[:, j], pa.int64())
            )
            least[c] = 3 * sigma  # a rate over a count within noise of zero is withheld
        moe = dp.moe95(sigma)
        out = out.append_column(
            f"{family}_counts_moe95", pa.array(np.full(part.num_rows, moe), pa.int64())
        )
        report.moe95[family] = moe
    return _derived(spec, out, least), spent


def _derived(spec: TableSpec, t: pa.Table, least: Mapping[str, float]) -> pa.Table:
    if spec.derive is not None:
        return spec.derive(t, least)
    return derive_rates(t, least) if spec.name != "before_after_town" else t


def _suppressed(
    spec: TableSpec,
    part: pa.Table,
    threshold: int,
    previous: pa.Table | None,
    report: AggregateReport,
) -> pa.Table:
    counts = part.drop_columns([c for c in part.column_names if _internal(c)])
    families = (
        None
        if spec.families is None
        else [
            (published, False)
            for _, cols, _ in spec.families
            if (published := [c for c in cols if not _internal(c)])
        ]
    )
    table, s = suppress(
        counts, spec.name, spec.suppression_groups, threshold, spec.column_totals, families
    )
    report.primary += s.primary
    report.secondary += s.secondary
    answers = part.select([c for c in part.column_names if _internal(c)])
    for c in answers.column_names:
        table = table.append_column(c, answers.column(c))
    if previous is not None:  # a cell moves only by at least the threshold
        table = _sticky(table, previous, spec.keys, threshold)
    least = {
        "visits": threshold,
        "satisfaction_answers": threshold,
        "households_visited": threshold,
    }
    if spec.families is not None:  # every count is a denominator's candidate
        least = {c: threshold for _, cols, _ in spec.families for c in cols}
    return _derived(spec, table, least)


def public(values: pa.Table) -> pa.Table:
    """The published columns of a partition's stored values (the mean's inputs stay in the
    police zone, where the next release's sticky rule reads them)."""
    return values.drop_columns([c for c in values.column_names if _internal(c)])


def _sticky(new: pa.Table, old: pa.Table, keys: list[str], threshold: int) -> pa.Table:
    """Cells whose value moved by less than `threshold` keep their earlier published value.

    The mean's inputs move as a pair, by the number of answers: otherwise one new answer
    would move the published mean by exactly that resident's satisfaction.
    """
    old_rows = {tuple(r[k] for k in keys): r for r in old.to_pylist()}
    rows = new.to_pylist()
    for r in rows:
        before = old_rows.get(tuple(r[k] for k in keys))
        if before is None:
            continue
        for c, v in r.items():
            prev = before.get(c)
            if c in keys or c in INTERNAL or type(v) is not int or type(prev) is not int:
                continue
            if abs(v - prev) < threshold:
                r[c] = prev
        points, answers = INTERNAL
        now_, then = r.get(answers), before.get(answers)
        if now_ is not None and then is not None and abs(now_ - then) < threshold:
            r[points], r[answers] = before[points], then
    return pa.Table.from_pylist(rows, schema=new.schema)
