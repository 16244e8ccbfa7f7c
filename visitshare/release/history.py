"""The validated history the cross-month tables need, read narrow (police zone).

The before/after table (a town's first completed visit, incidents 90 days either side) and
the repeat-victimization join (earlier visits of a victim's household) depend on every month,
not on one partition. A release reads the few columns they need from every validated file
(one dataset scan, projected), and recomputes them for the partitions whose inputs changed.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import sqlalchemy as sa

from visitshare.contracts import Contract
from visitshare.db import engine_for
from visitshare.db.tables import content_seq, curated_files
from visitshare.settings import Settings

VISITS = ["municipality_code", "town", "household_id", "visited_at", "outcome"]
INCIDENTS = ["municipality_code", "town", "victim_household_id", "crime_type", "occurred_at"]


def read(
    settings: Settings, contract: Contract, columns: list[str], upto: int, since: int = 0
) -> pa.Table:
    """`columns` of the dataset's validated rows whose content sequence is in (since, upto]."""
    from visitshare.quality.validate import validated_schema

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
    schema = validated_schema(contract)
    if not paths:
        return pa.schema([schema.field(c) for c in columns]).empty_table()
    dataset = ds.dataset([str(settings.lake / p) for p in paths], schema=schema, format="parquet")
    return dataset.to_table(columns=columns)


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
