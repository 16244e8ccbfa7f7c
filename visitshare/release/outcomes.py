"""Programme outcomes: visits joined with incidents by municipality, town and month.

Pure functions from Arrow tables to Arrow tables (SQL run by DuckDB over the Arrow data).
Inputs are police-zone rows: validated visits and incidents. Outputs:
- `town_month` and `municipality_month` (`count_tables`): counts over the public domain
  (every town of each municipality × month with data, so a zero is a published fact and not
  an absence); sensitive categories appear at municipality level only. For sharing they are
  protected by `visitshare.release.aggregates` (noise, or `suppress` in threshold mode) and
  the rates derived from what is published (`derive_rates`);
- `before_after`: incidents in the 90 days before vs after each town's first completed visit;
- `repeat_victimization` (police only): incidents at households visited before, with the
  days since the last visit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from visitshare.contracts import Contract, geography
from visitshare.release.anonymize import PRIMARY, SECONDARY, pseudonymize, suppress_cells

TOKYO = "Asia/Tokyo"
WINDOW_DAYS = 90


class SuppressionReport(BaseModel):
    table: str
    cells: int = 0
    primary: int = 0
    secondary: int = 0


@dataclass
class Categories:
    """Category lists the metrics are built from, read from the contracts."""

    vulnerabilities: list[str]
    recommendations: list[str]
    materials: list[str]
    concerns: list[str]
    concerns_sensitive: list[str]
    crimes: list[str]
    crimes_sensitive: list[str]
    outcomes: list[str] = field(default_factory=list)

    @classmethod
    def from_contracts(cls, visits: Contract, incidents: Contract) -> Categories:
        crime = incidents.field("crime_type")
        concerns = visits.field("concerns")

        def values(contract: Contract, name: str) -> list[str]:
            allowed = contract.field(name).allowed_values
            if allowed is None:
                raise ValueError(f"{contract.id}.{name} declares no allowed values")
            return allowed

        return cls(
            vulnerabilities=values(visits, "vulnerabilities"),
            recommendations=values(visits, "recommendations"),
            materials=values(visits, "materials"),
            concerns=values(visits, "concerns"),
            concerns_sensitive=concerns.sensitive_values or [],
            crimes=values(incidents, "crime_type"),
            crimes_sensitive=crime.sensitive_values or [],
            outcomes=values(visits, "outcome"),
        )


def _con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET TimeZone='{TOKYO}'")
    return con


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _visit_metrics(c: Categories, town_level: bool, max_items: int | None) -> str:
    concerns = [x for x in c.concerns if not (town_level and x in c.concerns_sensitive)]
    cols = [
        "count(DISTINCT household_id) AS households_visited",
        "count(*) AS visits",
        "count(*) FILTER (WHERE outcome = 'completed') AS visits_completed",
        # Σ (satisfaction − 1): each visit adds 0..4; the mean is derived from it.
        "coalesce(sum(satisfaction - 1) FILTER (WHERE outcome = 'completed'), 0) AS satisfaction_points",
        "count(satisfaction) FILTER (WHERE outcome = 'completed') AS satisfaction_answers",
    ]
    for prefix, values, column in (
        ("vulnerabilities", c.vulnerabilities, "vulnerabilities"),
        ("recommendations", c.recommendations, "recommendations"),
        ("materials", c.materials, "materials"),
        ("concerns", concerns, "concerns"),
    ):
        # Counting at most `max_items` items of a list bounds what one visit can add.
        items = column if max_items is None else f"list_slice({column}, 1, {int(max_items)})"
        cols += [
            f"count(*) FILTER (WHERE list_contains({items}, {_lit(v)})) AS {prefix}_{v}"
            for v in values
        ]
    return ",\n  ".join(cols)


def _incident_metrics(c: Categories, town_level: bool) -> str:
    crimes = [x for x in c.crimes if not (town_level and x in c.crimes_sensitive)]
    cols = [f"count(*) FILTER (WHERE crime_type = {_lit(v)}) AS incidents_{v}" for v in crimes]
    where = " OR ".join(f"crime_type = {_lit(v)}" for v in crimes)
    cols.append(f"count(*) FILTER (WHERE {where}) AS incidents_total")
    return ",\n  ".join(cols)


def _incident_scope(c: Categories, town_level: bool) -> str:
    """At town level, sensitive crimes are left out before grouping: a town-month whose only
    incidents are sensitive must not show them in any column."""
    if not town_level or not c.crimes_sensitive:
        return ""
    return f"WHERE crime_type NOT IN ({', '.join(_lit(x) for x in c.crimes_sensitive)})"


def _domain(visits: pa.Table, incidents: pa.Table) -> pa.Table:
    """Every town of every municipality × month that has data: the public domain of the
    town table (Japan Post's town list), so a town without events is a row of zeros."""
    con = _con()
    con.register("visits", visits)
    con.register("incidents", incidents)
    periods = con.sql("""
        SELECT DISTINCT municipality_code, strftime(visited_at, '%Y-%m') AS month FROM visits
        UNION SELECT DISTINCT municipality_code, strftime(occurred_at, '%Y-%m') FROM incidents
    """).fetchall()
    munis, towns, months = [], [], []
    for code, month in sorted(periods):
        for town in geography.municipalities()[code].towns:
            munis.append(code)
            towns.append(town)
            months.append(month)
    text = pa.string()  # typed even when empty: the shared schemas are made from empty tables
    return pa.table(
        {
            "municipality_code": pa.array(munis, text),
            "town": pa.array(towns, text),
            "month": pa.array(months, text),
        }
    )


def count_tables(
    visits: pa.Table, incidents: pa.Table, c: Categories, max_items: int | None = None
) -> dict[str, pa.Table]:
    """True counts per municipality × town × month (every town of the municipality) and per
    municipality × month; `max_items` bounds the list items a visit counts."""
    con = _con()
    con.register("visits", visits)
    con.register("incidents", incidents)
    con.register("domain", _domain(visits, incidents))
    out = {}
    for name, keys in (
        ("town_month", ["municipality_code", "town"]),
        ("municipality_month", ["municipality_code"]),
    ):
        town_level = "town" in keys
        k = ", ".join(keys)
        base = (
            "SELECT * FROM domain"
            if town_level
            else "SELECT DISTINCT municipality_code, month FROM domain"
        )
        sql = f"""
        WITH d AS ({base}),
        v AS (
          SELECT {k}, strftime(visited_at, '%Y-%m') AS month,
            {_visit_metrics(c, town_level, max_items)}
          FROM visits GROUP BY {k}, month),
        i AS (
          SELECT {k}, strftime(occurred_at, '%Y-%m') AS month,
            {_incident_metrics(c, town_level)}
          FROM incidents {_incident_scope(c, town_level)} GROUP BY {k}, month)
        SELECT d.*, v.* EXCLUDE ({k}, month), i.* EXCLUDE ({k}, month)
        FROM d LEFT JOIN v USING ({k}, month) LEFT JOIN i USING ({k}, month)
        ORDER BY {k}, month
        """
        t = con.sql(sql).to_arrow_table()
        out[name] = _fill_zero(t, [f for f in t.column_names if f not in (*keys, "month")])
    return out


VISIT_FAMILIES = ("vulnerabilities_", "recommendations_", "materials_", "concerns_")


def visit_columns(table: pa.Table) -> list[str]:
    """The count columns one visit adds to (households, visits, completed, points, items)."""
    fixed = [
        "households_visited",
        "visits",
        "visits_completed",
        "satisfaction_points",
        "satisfaction_answers",
    ]
    return [c for c in table.column_names if c in fixed or c.startswith(VISIT_FAMILIES)]


def incident_columns(table: pa.Table) -> list[str]:
    return [c for c in table.column_names if c.startswith("incidents_") and c not in (
        "incidents_before_90d", "incidents_after_90d", "incidents_per_1000_visited_households")]  # fmt: skip


def visit_l2_sensitivity(c: Categories, max_items: int, town_level: bool) -> float:
    """How much one visit can change a row of counts (L2): households, visits, completed and
    answers by 1 each, satisfaction points by 4, each counted list by `max_items` ones."""
    lists = 4
    return math.sqrt(4 * 1 + 4**2 + lists * max_items)


INCIDENT_L2_SENSITIVITY = math.sqrt(2)  # one crime column and the total


def derive_rates(t: pa.Table, min_denominator: Mapping[str, float] | None = None) -> pa.Table:
    """Rates and means from the counts: completion rate, mean satisfaction, incidents per
    1,000 visited households. Withheld (null) where the denominator is below its minimum
    (within noise, or under the cell threshold)."""
    least = min_denominator or {}

    def ratio(num: str, den: str, scale: float = 1.0, offset: float = 0.0) -> pa.Array:
        n = pc.cast(t.column(num), pa.float64())
        d = pc.cast(t.column(den), pa.float64())
        ok = pc.and_(pc.greater(d, 0), pc.greater_equal(d, least.get(den, 1)))
        ok = pc.and_(ok, pc.is_valid(n))
        value = pc.add(pc.multiply(pc.divide(n, d), scale), offset)
        return pc.if_else(ok, value, pa.scalar(None, pa.float64()))

    out = t
    if "visits" in t.column_names:
        completion = ratio("visits_completed", "visits")
        out = out.append_column(
            "completion_rate", pc.min_element_wise(completion, 1.0, skip_nulls=False)
        )
        mean = ratio("satisfaction_points", "satisfaction_answers", 1.0, 1.0)
        out = out.append_column(
            "satisfaction_mean", pc.min_element_wise(mean, 5.0, skip_nulls=False)
        )
    if "incidents_total" in t.column_names and "households_visited" in t.column_names:
        out = out.append_column(
            "incidents_per_1000_visited_households",
            ratio("incidents_total", "households_visited", 1000.0),
        )
    return out


def _fill_zero(t: pa.Table, columns: list[str]) -> pa.Table:
    for name in columns:
        i = t.schema.get_field_index(name)
        t = t.set_column(i, name, pc.fill_null(pc.cast(t.column(name), pa.int64()), 0))
    return t


def before_after(visits: pa.Table, incidents: pa.Table, c: Categories) -> pa.Table:
    """Per town: incidents in the 90 days before and after its first completed visit."""
    con = _con()
    con.register("visits", visits)
    con.register("incidents", incidents)
    crimes = ", ".join(_lit(x) for x in c.crimes if x not in c.crimes_sensitive)
    return con.sql(f"""
        WITH first_visit AS (
          SELECT municipality_code, town, min(visited_at::DATE) AS first_completed_visit
          FROM visits WHERE outcome = 'completed' GROUP BY ALL)
        SELECT f.municipality_code, f.town, f.first_completed_visit,
          count(*) FILTER (WHERE i.occurred_at::DATE >= f.first_completed_visit - INTERVAL {WINDOW_DAYS} DAY
                             AND i.occurred_at::DATE < f.first_completed_visit) AS incidents_before_90d,
          count(*) FILTER (WHERE i.occurred_at::DATE >= f.first_completed_visit
                             AND i.occurred_at::DATE < f.first_completed_visit + INTERVAL {WINDOW_DAYS} DAY) AS incidents_after_90d
        FROM first_visit f LEFT JOIN incidents i
          ON i.municipality_code = f.municipality_code AND i.town = f.town AND i.crime_type IN ({crimes})
        GROUP BY ALL ORDER BY f.municipality_code, f.town
    """).to_arrow_table()


def repeat_victimization(
    visits: pa.Table, incidents: pa.Table, key: bytes, namespace: str = "household"
) -> pa.Table:
    """Incidents at households visited before the incident (police only: pseudonyms, days).

    Joined on the household ids of the police zone; only the households in the result are
    pseudonymized (as the contracts do: keyed HMAC under `namespace`), and no id leaves."""
    con = _con()
    con.register("visits", visits.select(["household_id", "visited_at"]))
    con.register("incidents", incidents)
    # One output row per incident (numbered, so two incidents alike stay two rows).
    out = con.sql("""
        WITH i AS (SELECT row_number() OVER () AS n, * FROM incidents
                   WHERE victim_household_id IS NOT NULL)
        SELECT any_value(i.municipality_code) AS municipality_code, any_value(i.town) AS town,
          any_value(i.victim_household_id) AS household_id,
          any_value(i.crime_type) AS crime_type,
          any_value(i.occurred_at)::DATE AS occurred_date,
          max(v.visited_at)::DATE AS last_visit_date,
          datediff('day', max(v.visited_at)::DATE, any_value(i.occurred_at)::DATE)
            AS days_since_visit,
          count(*) AS visits_before
        FROM i JOIN visits v
          ON v.household_id = i.victim_household_id AND v.visited_at < i.occurred_at
        GROUP BY i.n ORDER BY municipality_code, town, occurred_date
    """).to_arrow_table()
    at = out.schema.get_field_index("household_id")
    pseudonyms = pseudonymize(out.column(at).cast(pa.string()), key, namespace)
    return out.set_column(at, "household_pseudonym", pseudonyms)


# -- suppression for sharing ------------------------------------------------------------------
def _families(columns: list[str]) -> list[tuple[list[str], bool]]:
    """Count columns in groups that add up to a published total (True) or not (False)."""
    incidents = [
        c
        for c in columns
        if c.startswith("incidents_")
        and c not in ("incidents_total", "incidents_before_90d", "incidents_after_90d")
        and "per_1000" not in c
    ]
    families: list[tuple[list[str], bool]] = [(incidents, "incidents_total" in columns)]
    for prefix in ("vulnerabilities_", "recommendations_", "materials_", "concerns_"):
        families.append(([c for c in columns if c.startswith(prefix)], False))
    families += [
        ([c], False)
        for c in (
            "households_visited",
            "visits",
            "visits_completed",
            "incidents_total",
            "incidents_before_90d",
            "incidents_after_90d",
        )
        if c in columns
    ]
    return [(f, total) for f, total in families if f]


def suppress(
    table: pa.Table,
    name: str,
    group_keys: list[str],
    threshold: int,
    column_totals: bool,
    families: list[tuple[list[str], bool]] | None = None,
) -> tuple[pa.Table, SuppressionReport]:
    """Null out count cells with 1..threshold-1 subjects, and cells that would reveal them.

    Within each group (e.g. one municipality × month of the town table), a family of columns
    that adds up to a published row total is protected along rows; every column is protected
    along the group when its total is published elsewhere (`column_totals`: the municipality
    table publishes the town table's column totals). Rates are derived afterwards, from what
    is published (`derive_rates`).
    """
    report = SuppressionReport(table=name)
    if not table.num_rows:
        return table, report
    groups = _group_index(table, group_keys)
    masks: dict[str, np.ndarray] = {}
    for columns, row_total in families if families is not None else _families(table.column_names):
        values = np.column_stack(
            [table.column(c).to_numpy(zero_copy_only=False) for c in columns]
        ).astype(float)
        status = np.zeros(values.shape, np.int8)
        for rows in groups:
            status[rows] = suppress_cells(
                values[rows], threshold, row_totals=row_total, column_totals=column_totals
            )
        report.cells += values.size
        report.primary += int((status == PRIMARY).sum())
        report.secondary += int((status == SECONDARY).sum())
        for j, c in enumerate(columns):
            masks[c] = status[:, j] > 0
    out = table
    for c, mask in masks.items():
        out = _null_where(out, c, mask)
    return out, report


def _group_index(table: pa.Table, keys: list[str]) -> list[np.ndarray]:
    if not keys:
        return [np.arange(table.num_rows)]
    key = pc.binary_join_element_wise(
        *[pc.cast(table.column(k), pa.string()) for k in keys], "\x1f"
    )
    codes = pc.dictionary_encode(key).combine_chunks().indices.to_numpy()
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    return np.split(order, bounds)


def _null_where(table: pa.Table, column: str, mask: np.ndarray) -> pa.Table:
    i = table.schema.get_field_index(column)
    col = table.column(column)
    return table.set_column(i, column, pc.if_else(pa.array(mask), pa.scalar(None, col.type), col))
