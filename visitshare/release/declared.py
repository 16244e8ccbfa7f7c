"""Outcome tables declared in files (`schemas/outcomes/*.yaml`), not in code.

A declaration names the datasets it reads, SQL (DuckDB) over their police-zone rows that counts
per municipality [× town] × month, the count families with the sensitivity of one record, and
the rates, means and medians derived from the counts. The release protects such a table like
the built-in outcome tables (`visitshare.release.aggregates`: DP noise per partition, or
suppression, carried while its true values are unchanged) and derives the rates from the
protected counts. A new outcome is a file:

    name: requests_town_month
    description: Visit requests per town and month.
    level: town                  # town: a ward reads its municipality; municipality: all; police
    grain: town_month            # town_month (every town of the municipality) | municipality_month
    inputs: {visit_request: requested_at}    # dataset: the time column that gives its `month`
    policy: visit_request        # whose contract's aggregate policy and min cell count apply
    sql: |
      SELECT municipality_code, town, month, count(*) AS requests_received, ...
      FROM visit_request GROUP BY ALL
    counts:                      # each input record adds to one row, at most `l2` (L2 norm)
      - {name: request, columns: [requests_received, requests_answered], l2: 1.42}
    ratios: {answer_rate: [requests_answered, requests_received, 1, 1]}  # num/den × scale, ≤ max
    means: {satisfaction_mean: [_satisfaction_points, _satisfaction_answers, 1, 5]}
    medians: {median_days_to_visit: {days_0_7: 3.5, days_8_14: 11}}      # bucket → midpoint

Columns whose name starts with `_` are inputs of a mean: protected and kept in the police zone
with the other values, never published. Each input view has the validated columns of its
contract plus `month` (YYYY-MM of the time column, Tokyo time).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Annotated

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from visitshare.contracts import Contract, ContractError, geography

FOLDER = "outcomes"
TOKYO = "Asia/Tokyo"


class CountFamily(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Names the family's margin of error column, `<name>_counts_moe95`.
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    columns: list[Annotated[str, Field(pattern=r"^_?[a-z][a-z0-9_]*$")]] = Field(min_length=1)
    # How far one input record can move the family's counts of its row (L2 norm). Default: it
    # adds at most 1 to each column.
    l2: float | None = Field(None, gt=0)

    @property
    def sensitivity(self) -> float:
        return self.l2 if self.l2 is not None else math.sqrt(len(self.columns))


class OutcomeDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    level: str = Field(pattern=r"^(town|municipality|police)$")
    # town_month | municipality_month: the rows of the partitions a release recomputes;
    # town: one row per town over the whole history (like before_after_town), recomputed for
    # every municipality with a recomputed partition.
    grain: str = Field(pattern=r"^(town_month|municipality_month|town)$")
    inputs: dict[str, str] = Field(min_length=1)  # dataset → its time column
    # History tables: the columns each input needs (read narrow from every validated file).
    columns: dict[str, list[str]] = Field(default_factory=dict)
    policy: str | None = None  # dataset whose aggregate policy applies (default: first input)
    sql: str
    counts: list[CountFamily] = Field(min_length=1)
    ratios: dict[str, list[str | float]] = Field(default_factory=dict)
    means: dict[str, list[str | float]] = Field(default_factory=dict)
    medians: dict[str, dict[str, float]] = Field(default_factory=dict)
    # A town_month table may also publish its sums per municipality × month under this name
    # (level municipality: every partner reads it; its cells are larger, its rates finer).
    rollup: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]*$")
    rollup_of: str | None = Field(None, exclude=True)  # set by the loader on the rollup

    @model_validator(mode="after")
    def _consistent(self) -> OutcomeDefinition:
        if len({f.name for f in self.counts}) != len(self.counts):
            raise ValueError("two count families have the same name")
        counted = [c for f in self.counts for c in f.columns]
        if len(set(counted)) != len(counted):
            raise ValueError("a column is in two count families")
        for name, r in self.ratios.items():
            if len(r) not in (2, 3, 4) or not all(isinstance(x, str) for x in r[:2]):
                raise ValueError(f"ratio {name}: [numerator, denominator, scale?, maximum?]")
        for name, m in self.means.items():
            if len(m) != 4 or not all(isinstance(x, str) for x in m[:2]):
                raise ValueError(f"mean {name}: [points, answers, offset, maximum]")
        used = {x for r in (*self.ratios.values(), *self.means.values()) for x in r[:2]}
        used |= {b for m in self.medians.values() for b in m}
        missing = sorted(str(x) for x in used if x not in counted)
        if missing:
            raise ValueError(f"derived from columns that are not counts: {missing}")
        if self.rollup is not None and self.grain != "town_month":
            raise ValueError("only a town_month table has a municipality rollup")
        return self

    def rolled_up(self) -> OutcomeDefinition:
        """The municipality × month table of a town table's sums."""
        assert self.rollup is not None
        return self.model_copy(
            update={
                "name": self.rollup,
                "grain": "municipality_month",
                "level": "municipality",
                "rollup": None,
                "rollup_of": self.name,
            }
        )

    @property
    def keys(self) -> list[str]:
        if self.grain == "town":
            return ["municipality_code", "town"]
        town = ["town"] if self.grain == "town_month" else []
        return ["municipality_code", *town, "month"]

    @property
    def spans_history(self) -> bool:
        return self.grain == "town"

    @property
    def count_columns(self) -> list[str]:
        return [c for f in self.counts for c in f.columns]

    def policy_contract(self, contracts: Mapping[str, Contract]) -> Contract:
        return contracts[self.policy or next(iter(self.inputs))]


def load(contracts_dir: Path, datasets: Mapping[str, Contract]) -> list[OutcomeDefinition]:
    """Every declaration under `<contracts_dir>/outcomes/`, checked against the datasets."""
    stamp = tuple(
        (p.name, p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted((contracts_dir / FOLDER).glob("*.yaml"))
    )
    key = (str(contracts_dir.resolve()), stamp, tuple(sorted(datasets)))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = _load(contracts_dir, datasets)
    return list(_CACHE[key])


_CACHE: dict[tuple, list[OutcomeDefinition]] = {}


def _load(contracts_dir: Path, datasets: Mapping[str, Contract]) -> list[OutcomeDefinition]:
    out = []
    for path in sorted((contracts_dir / FOLDER).glob("*.yaml")):
        try:
            d = OutcomeDefinition.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError, ValidationError) as exc:
            raise ContractError(f"{path}: invalid outcome definition: {exc}") from None
        if path.stem != d.name:
            raise ContractError(f"{path}: the file name must be {d.name}.yaml")
        for dataset, column in d.inputs.items():
            contract = datasets.get(dataset)
            if contract is None:
                raise ContractError(f"{path}: input {dataset!r} has no contract")
            if column not in {f.name for f in contract.fields}:
                raise ContractError(f"{path}: {dataset} has no field {column!r}")
        if d.policy is not None and d.policy not in d.inputs:
            raise ContractError(f"{path}: policy {d.policy!r} is not one of its inputs")
        for dataset, wanted in d.columns.items():
            if dataset not in d.inputs:
                raise ContractError(f"{path}: columns of {dataset!r}, which is not an input")
            known = {f.name for f in datasets[dataset].fields}
            unknown = sorted(set(wanted) - known)
            if unknown:
                raise ContractError(f"{path}: {dataset} has no field(s) {unknown}")
        out.append(d)
        if d.rollup is not None:
            out.append(d.rolled_up())
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise ContractError(f"{contracts_dir / FOLDER}: two outcome tables share a name")
    return out


# -- true values ---------------------------------------------------------------------------------
def true_values(d: OutcomeDefinition, inputs: Mapping[str, pa.Table]) -> pa.Table:
    """The declaration's counts over police-zone rows, every town (or municipality) × month of
    its domain present, zeros filled, in key order."""
    con = duckdb.connect()
    con.execute(f"SET TimeZone='{TOKYO}'")
    for dataset, column in d.inputs.items():
        table = inputs[dataset]
        con.register(f"{dataset}__rows", table)
        con.execute(  # names checked against the contracts when loaded
            f'CREATE VIEW "{dataset}" AS SELECT *, strftime("{column}", \'%Y-%m\') AS month '  # noqa: S608
            f'FROM "{dataset}__rows"'
        )
    result = con.sql(d.sql).to_arrow_table()
    if d.rollup_of is not None:  # the town table's sums per municipality × month
        con.register("town_rows", result)
        sums = ", ".join(f"sum({c})::BIGINT AS {c}" for c in d.count_columns)
        result = con.sql(  # column names: identifiers checked by the definition's model
            f"SELECT municipality_code, month, {sums} FROM town_rows GROUP BY ALL"  # noqa: S608
        ).to_arrow_table()
    missing = [c for c in (*d.keys, *d.count_columns) if c not in result.column_names]
    if missing:
        raise ContractError(f"outcome {d.name}: its SQL returns no column(s) {missing}")
    counts = [c for c in result.column_names if c not in d.keys]
    unknown = [c for c in counts if c not in d.count_columns]
    if unknown:
        raise ContractError(f"outcome {d.name}: columns {unknown} are not in a count family")
    con.register("result", result)
    con.register("domain", _domain(d, result))
    k = ", ".join(d.keys)
    filled = ", ".join(f"coalesce(r.{c}, 0)::BIGINT AS {c}" for c in d.count_columns)
    return con.sql(  # column names: identifiers checked by the definition's model
        f"SELECT d.*, {filled} FROM domain d LEFT JOIN result r USING ({k}) ORDER BY {k}"  # noqa: S608
    ).to_arrow_table()


def _domain(d: OutcomeDefinition, result: pa.Table) -> pa.Table:
    """The rows a partition publishes: for every municipality × month with data, every town
    of the municipality (Japan Post's list) at town grain; so a zero is a published fact. A
    history table publishes the towns its SQL returns (e.g. the towns with a first visit)."""
    if d.grain == "town":
        return result.select(d.keys)
    pairs = sorted(
        set(
            zip(
                result.column("municipality_code").to_pylist(),
                result.column("month").to_pylist(),
                strict=True,
            )
        )
    )
    cols: dict[str, list[str]] = {k: [] for k in d.keys}
    towns = geography.municipalities()
    for muni, month in pairs:
        for town in towns[muni].towns if d.grain == "town_month" else [None]:
            cols["municipality_code"].append(muni)
            if town is not None:
                cols["town"].append(town)
            cols["month"].append(month)
    return pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})


# -- derived values ------------------------------------------------------------------------------
def derive(d: OutcomeDefinition, t: pa.Table, least: Mapping[str, float]) -> pa.Table:
    """Ratios, means and medians from the (protected) counts; null where a denominator is below
    its minimum (within noise, or under the cell threshold) or a count is withheld."""

    def enough(column: str) -> pa.Array:
        v = pc.cast(t.column(column), pa.float64())
        ok = pc.and_(pc.greater(v, 0), pc.greater_equal(v, least.get(column, 1)))
        return pc.fill_null(ok, False)

    out = t
    for name, (num, den, *rest) in d.ratios.items():
        n, q = (pc.cast(t.column(c), pa.float64()) for c in (num, den))
        value = pc.multiply(pc.divide(n, q), float(rest[0]) if rest else 1.0)
        # Noise can push a count below zero or a part above its whole: clip to what the
        # quantity can be (0, and the maximum given, e.g. 1 for a share).
        value = pc.max_element_wise(value, 0.0)
        if len(rest) > 1:
            value = pc.min_element_wise(value, float(rest[1]))
        ok = pc.and_(enough(str(den)), pc.is_valid(n))
        out = out.append_column(name, pc.if_else(ok, value, pa.scalar(None, pa.float64())))
    for name, (points, answers, offset, top) in d.means.items():
        p, a = (pc.cast(t.column(c), pa.float64()) for c in (points, answers))
        value = pc.add(pc.divide(p, a), float(offset))
        value = pc.min_element_wise(pc.max_element_wise(value, float(offset)), float(top))
        ok = pc.and_(enough(str(answers)), pc.is_valid(p))
        out = out.append_column(name, pc.if_else(ok, value, pa.scalar(None, pa.float64())))
    for name, buckets in d.medians.items():
        out = out.append_column(name, _median(t, buckets, least))
    return out


def _median(t: pa.Table, buckets: Mapping[str, float], least: Mapping[str, float]) -> pa.Array:
    """The midpoint of the bucket holding the middle record (negative noisy counts as 0);
    null when the buckets hold fewer records than a cell may, or one is withheld."""
    names = list(buckets)
    if not t.num_rows:
        return pa.array([], pa.float64())
    m = np.column_stack(
        [pc.fill_null(pc.cast(t.column(c), pa.float64()), np.nan).to_numpy() for c in names]
    )
    withheld = np.isnan(m).any(axis=1)
    m = np.clip(np.nan_to_num(m), 0, None)
    total = m.sum(axis=1)
    floor = max([least.get(c, 1) for c in names] + [1])
    middle = np.argmax(np.cumsum(m, axis=1) >= (total / 2)[:, None], axis=1)
    mids = np.array([buckets[c] for c in names])[middle]
    return pa.array(mids, pa.float64(), mask=withheld | (total < floor))


# -- how a declared table is protected and shared -----------------------------------------------
def table_spec(d: OutcomeDefinition):
    """The `aggregates.TableSpec` a release protects the table with."""
    from visitshare.release.aggregates import TableSpec

    return TableSpec(
        d.name,
        d.keys,
        not d.spans_history,
        suppression_groups=["municipality_code", "month"] if d.grain == "town_month" else [],
        # Its rollup publishes each column's total per municipality × month: protect the
        # town cells along the column too (threshold mode), as outcomes_town_month does.
        column_totals=d.rollup is not None,
        families=tuple((f.name, tuple(f.columns), f.sensitivity) for f in d.counts),
        derive=partial(derive, d),
    )


def release(
    d: OutcomeDefinition,
    true: pa.Table,
    contracts: Mapping[str, Contract],
    states,
    as_of,
    store,
    values_path: str,
):
    """`aggregates.release_aggregates` for a declared table, under the aggregate policy of its
    policy contract (the published rows, the refreshes, the report, the values to store)."""
    from visitshare.release.aggregates import release_aggregates

    owner = d.policy_contract(contracts)
    return release_aggregates(
        table_spec(d),
        true,
        owner.disclosure.aggregates,
        owner.disclosure.min_cell_count,
        1.0,  # unused: the declaration gives each family's sensitivity
        states,
        as_of,
        owner.disclosure.close_after_days,
        store,
        values_path,
    )


def empty_inputs(d: OutcomeDefinition, contracts: Mapping[str, Contract]) -> dict[str, pa.Table]:
    from visitshare.quality.validate import validated_schema

    out = {}
    for ds in d.inputs:
        schema = validated_schema(contracts[ds])
        if ds in d.columns:
            schema = pa.schema([schema.field(c) for c in d.columns[ds]])
        out[ds] = schema.empty_table()
    return out
