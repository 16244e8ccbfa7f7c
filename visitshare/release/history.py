"""The validated history the cross-month tables need, read narrow (police zone).

The before/after table (a town's first completed visit, incidents 90 days either side) and
the repeat-victimization join (earlier visits of a victim's household) depend on every month,
not on one partition. A release asks DuckDB for just what they need of every validated file
(the first completed visit per town; the visits of given households; the incidents, a few
columns), and recomputes them for the partitions whose inputs changed.
"""

from __future__ import annotations

import os

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from visitshare.contracts import Contract
from visitshare.db import engine_for
from visitshare.db.tables import content_seq, curated_files
from visitshare.lake import lake_for
from visitshare.settings import Settings

TOKYO = "Asia/Tokyo"
INCIDENTS = ["municipality_code", "town", "victim_household_id", "crime_type", "occurred_at"]


def _paths(settings: Settings, contract: Contract, upto: int, since: int) -> list[str]:
    with engine_for(settings).connect() as conn:
        paths = (
            conn.execute(
                sa.select(curated_files.c.path)
                .where(
                    curated_files.c.zone == "validated",
                    curated_files.c.dataset == contract.name,
                    curated_files.c.rows > 0,
                    content_seq() > since,
                    content_seq() <= upto,
                )
                .order_by(content_seq())
            )
            .scalars()
            .all()
        )
    return list(paths)


class Session:
    """One DuckDB connection for a release's history queries: the files' Parquet metadata is
    read once (object cache), not once per query."""

    def __init__(self) -> None:
        self.con = duckdb.connect()
        self.con.execute(f"SET TimeZone='{TOKYO}'")
        self.con.execute("SET enable_object_cache = true")

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _select(
    settings: Settings,
    contract: Contract,
    columns: list[str],
    upto: int,
    since: int = 0,
    where: str = "",
    group: bool = False,
    params: dict | None = None,
    session: Session | None = None,
) -> pa.Table:
    """One DuckDB query over the dataset's validated files (content sequence in (since,
    upto]); DuckDB scans many files' few columns, filters and aggregates in parallel, without
    materializing what it does not return."""
    from visitshare.quality.validate import validated_schema

    schema = validated_schema(contract)
    target = pa.schema([schema.field(c.split(" AS ")[-1].strip('"')) for c in columns])
    paths = _paths(settings, contract, upto, since)
    if not paths:
        return target.empty_table()
    lake = lake_for(settings)
    own = session is None
    session = session or Session()
    try:
        if lake.is_local:
            # DuckDB reads the files itself. The folders are named like Hive partitions
            # (municipality_code=13104/): the columns come from the files only, never from
            # their paths.
            files = [str(lake.local_path(p)) for p in paths]
            missing = [f for f in files if not os.path.exists(f)]
            if missing:  # the manifest lists it: the lake lost a file
                raise FileNotFoundError(
                    f"{missing[0]} (a validated file in the manifest) is missing"
                )
            source = "read_parquet($files, union_by_name = true, hive_partitioning = false)"
            params = {"files": files, **(params or {})}
        else:
            # DuckDB cannot reach object storage here (no httpfs): pyarrow reads the files,
            # DuckDB scans them as an Arrow dataset (columns and filters pushed down).
            session.con.register("validated_files", lake.dataset(paths, schema))
            source = "validated_files"
        # Columns and conditions are this module's own text; values (files, codes, ids) are
        # bound parameters.
        sql = (
            f"SELECT {', '.join(columns)} FROM {source} "  # noqa: S608
            f"{'WHERE ' + where if where else ''} {'GROUP BY ALL' if group else ''}"
        )
        table = session.con.sql(sql, params=params).to_arrow_table()
    finally:
        if own:
            session.close()
    return table.cast(target)


def read(
    settings: Settings,
    contract: Contract,
    columns: list[str],
    upto: int,
    since: int = 0,
    session: Session | None = None,
) -> pa.Table:
    """`columns` of the dataset's validated rows whose content sequence is in (since, upto]."""
    return _select(settings, contract, [_quote(c) for c in columns], upto, since, session=session)


def read_municipalities(
    settings: Settings,
    contract: Contract,
    columns: list[str] | None,
    upto: int,
    municipalities: list[str],
    session: Session | None = None,
) -> pa.Table:
    """`columns` (None: every validated column) of the dataset's rows in `municipalities`."""
    from visitshare.quality.validate import validated_schema

    names = columns if columns is not None else validated_schema(contract).names
    return _select(
        settings,
        contract,
        [_quote(c) for c in names],
        upto,
        where="municipality_code IN (SELECT unnest($munis::VARCHAR[]))",
        params={"munis": municipalities},
        session=session,
    )


def first_completed_visits(
    settings: Settings,
    contract: Contract,
    upto: int,
    municipalities: list[str],
    session: Session | None = None,
) -> pa.Table:
    """Per town of `municipalities`, its first completed visit, shaped as visit rows
    (municipality_code, town, visited_at, outcome): what the before/after table needs of the
    whole visit history."""
    return _select(
        settings,
        contract,
        ["municipality_code", "town", "min(visited_at) AS visited_at", "outcome"],
        upto,
        where="outcome = 'completed' AND municipality_code IN (SELECT unnest($munis::VARCHAR[]))",
        group=True,
        params={"munis": municipalities},
        session=session,
    )


def visits_of(
    settings: Settings,
    contract: Contract,
    upto: int,
    households: list[str],
    session: Session | None = None,
) -> pa.Table:
    """Every validated visit (household_id, visited_at) of the given households."""
    if not households:
        return _select(
            settings, contract, ["household_id", "visited_at"], upto, where="false", session=session
        )
    return _select(
        settings,
        contract,
        ["household_id", "visited_at"],
        upto,
        where="household_id IN (SELECT unnest($households::VARCHAR[]))",
        params={"households": households},
        session=session,
    )


def _quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def month_keys(munis: pa.Array | pa.ChunkedArray, times: pa.Array | pa.ChunkedArray) -> pa.Array:
    """ "<municipality>|<YYYY-MM>" of each row (the month as validation files it)."""
    months = pc.strftime(times, format="%Y-%m")
    joined = pc.binary_join_element_wise(munis, months, "|")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def in_partitions(table: pa.Table, time: str, partitions: set[tuple[str, str]]) -> pa.Table:
    """The rows of `table` in the given (municipality, month) partitions."""
    keys = month_keys(table.column("municipality_code"), table.column(time))
    wanted = pa.array([f"{m}|{p}" for m, p in sorted(partitions)], pa.string())
    return table.filter(pc.is_in(keys, value_set=wanted))


def revisited(incidents: pa.Table, new_visits: pa.Table) -> set[tuple[str, str]]:
    """Partitions of incidents whose victim household has a new visit before the incident:
    their repeat-victimization rows change."""
    if not new_visits.num_rows or not incidents.num_rows:
        return set()
    first = new_visits.group_by("household_id").aggregate([("visited_at", "min")])
    joined = incidents.join(
        first, keys="victim_household_id", right_keys="household_id", join_type="inner"
    )
    later = joined.filter(pc.greater(joined.column("occurred_at"), joined.column("visited_at_min")))
    keys = month_keys(later.column("municipality_code"), later.column("occurred_at"))
    return {(k.split("|", 1)[0], k.split("|", 1)[1]) for k in pc.unique(keys).to_pylist()}
