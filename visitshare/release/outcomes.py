"""Programme outcomes: visits joined with incidents by municipality, town and month.

Pure functions from Arrow tables to Arrow tables (SQL run by DuckDB over the Arrow data).
Inputs are police-zone rows: validated visits and incidents with their household ids already
replaced by pseudonyms (`visitshare.anonymize.pseudonymize`), so that the household join
never handles an identifier. Outputs:
- `town_month` and `municipality_month`: the outcome metrics (count columns are suppressed
  for sharing by `suppress`); sensitive categories appear at municipality level only;
- `before_after`: incidents in the 90 days before vs after each town's first completed visit;
- `repeat_victimization` (police only): incidents at households visited before, with the
  days since the last visit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from visitshare.contracts import Contract
from visitshare.release.anonymize import PRIMARY, SECONDARY, suppress_cells

TOKYO = "Asia/Tokyo"
WINDOW_DAYS = 90


class SuppressionReport(BaseModel):
    table: str
    cells: int = 0
    primary: int = 0
    secondary: int = 0
    derived_nulled: int = 0  # rates and means withheld because their counts were


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


def _visit_metrics(c: Categories, town_level: bool) -> str:
    concerns = [x for x in c.concerns if not (town_level and x in c.concerns_sensitive)]
    cols = [
        "count(DISTINCT household_pseudonym) AS households_visited",
        "count(*) AS visits",
        "count(*) FILTER (WHERE outcome = 'completed') AS visits_completed",
        "avg(satisfaction) FILTER (WHERE outcome = 'completed') AS satisfaction_mean",
    ]
    for prefix, values, column in (
        ("vulnerabilities", c.vulnerabilities, "vulnerabilities"),
        ("recommendations", c.recommendations, "recommendations"),
        ("materials", c.materials, "materials"),
        ("concerns", concerns, "concerns"),
    ):
        cols += [
            f"count(*) FILTER (WHERE list_contains({column}, {_lit(v)})) AS {prefix}_{v}"
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
    incidents are sensitive must not appear at all (its row would reveal one)."""
    if not town_level or not c.crimes_sensitive:
        return ""
    return f"WHERE crime_type NOT IN ({', '.join(_lit(x) for x in c.crimes_sensitive)})"


def outcome_tables(visits: pa.Table, incidents: pa.Table, c: Categories) -> dict[str, pa.Table]:
    """Outcome metrics per municipality × town × month and per municipality × month."""
    con = _con()
    con.register("visits", visits)
    con.register("incidents", incidents)
    out = {}
    for name, keys in (
        ("town_month", ["municipality_code", "town"]),
        ("municipality_month", ["municipality_code"]),
    ):
        town_level = "town" in keys
        k = ", ".join(keys)
        sql = f"""
        WITH v AS (
          SELECT {k}, strftime(visited_at, '%Y-%m') AS month,
            {_visit_metrics(c, town_level)}
          FROM visits GROUP BY {k}, month),
        i AS (
          SELECT {k}, strftime(occurred_at, '%Y-%m') AS month,
            {_incident_metrics(c, town_level)}
          FROM incidents {_incident_scope(c, town_level)} GROUP BY {k}, month)
        SELECT * EXCLUDE (i_keys) FROM (
          SELECT {", ".join(f"coalesce(v.{x}, i.{x}) AS {x}" for x in [*keys, "month"])},
            v.* EXCLUDE ({k}, month), i.* EXCLUDE ({k}, month), 1 AS i_keys
          FROM v FULL OUTER JOIN i USING ({k}, month))
        ORDER BY {k}, month
        """
        t = con.sql(sql).to_arrow_table()
        counts = [f for f in t.column_names if f not in (*keys, "month", "satisfaction_mean")]
        t = _fill_zero(t, counts)
        completion = pc.if_else(
            pc.greater(t.column("visits"), 0),
            pc.divide(
                pc.cast(t.column("visits_completed"), pa.float64()),
                pc.cast(t.column("visits"), pa.float64()),
            ),
            pa.scalar(None, pa.float64()),
        )
        per_1000 = pc.if_else(
            pc.greater(t.column("households_visited"), 0),
            pc.multiply(
                pc.divide(
                    pc.cast(t.column("incidents_total"), pa.float64()),
                    pc.cast(t.column("households_visited"), pa.float64()),
                ),
                1000.0,
            ),
            pa.scalar(None, pa.float64()),
        )
        t = t.append_column("completion_rate", completion).append_column(
            "incidents_per_1000_visited_households", per_1000
        )
        out[name] = t
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


def repeat_victimization(visits: pa.Table, incidents: pa.Table) -> pa.Table:
    """Incidents at households visited before the incident (police only: pseudonyms, days)."""
    con = _con()
    con.register("visits", visits)
    con.register("incidents", incidents)
    # One output row per incident (numbered, so two incidents alike stay two rows).
    return con.sql("""
        WITH i AS (SELECT row_number() OVER () AS n, * FROM incidents
                   WHERE victim_household_pseudonym IS NOT NULL)
        SELECT any_value(i.municipality_code) AS municipality_code, any_value(i.town) AS town,
          any_value(i.victim_household_pseudonym) AS household_pseudonym,
          any_value(i.crime_type) AS crime_type,
          any_value(i.occurred_at)::DATE AS occurred_date,
          max(v.visited_at)::DATE AS last_visit_date,
          datediff('day', max(v.visited_at)::DATE, any_value(i.occurred_at)::DATE)
            AS days_since_visit,
          count(*) AS visits_before
        FROM i JOIN visits v
          ON v.household_pseudonym = i.victim_household_pseudonym AND v.visited_at < i.occurred_at
        GROUP BY i.n ORDER BY municipality_code, town, occurred_date
    """).to_arrow_table()


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
    table: pa.Table, name: str, group_keys: list[str], threshold: int, column_totals: bool
) -> tuple[pa.Table, SuppressionReport]:
    """Null out count cells with 1..threshold-1 subjects, and cells that would reveal them.

    Within each group (e.g. one municipality × month of the town table), a family of columns
    that adds up to a published row total is protected along rows; every column is protected
    along the group when its total is published elsewhere (`column_totals`: the municipality
    table publishes the town table's column totals). Rates and means whose counts are withheld
    are withheld too.
    """
    report = SuppressionReport(table=name)
    if not table.num_rows:
        return table, report
    groups = _group_index(table, group_keys)
    masks: dict[str, np.ndarray] = {}
    for columns, row_total in _families(table.column_names):
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
    derived = {
        "completion_rate": ("visits", "visits_completed"),
        "satisfaction_mean": ("visits_completed",),
        "incidents_per_1000_visited_households": ("incidents_total", "households_visited"),
    }
    for c, sources in derived.items():
        if c in out.column_names:
            mask = np.zeros(out.num_rows, bool)
            for s in sources:
                mask |= masks.get(s, np.zeros(out.num_rows, bool))
            if c == "satisfaction_mean":  # a mean over fewer than `threshold` visits is withheld
                mask |= table.column("visits_completed").to_numpy(zero_copy_only=False) < threshold
            report.derived_nulled += int(
                (mask & pc.is_valid(out.column(c)).to_numpy(zero_copy_only=False)).sum()
            )
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
