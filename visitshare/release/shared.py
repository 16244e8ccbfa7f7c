"""The shared zone's tables: Apache Iceberg tables (pyiceberg SQL catalog) and SQL tables for BI.

Every shared table is declared once in `TABLES`: its Iceberg name, its partitioning, its
access level (what a partner sees, `visitshare.partners`) and, for the aggregated outcomes,
the SQL table BI tools read. Readers find a table's data through a release (`releases` row
→ snapshot id), never through the table's current snapshot: a publish in progress moves the
current snapshot before its release row commits.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa

from visitshare.landing import zones
from visitshare.settings import Settings


class Level(StrEnum):
    """Who may read a table's rows (see `visitshare.partners`)."""

    TOWN = "town"  # per municipality: a ward reads its own municipality's rows only
    MUNICIPALITY = "municipality"  # every partner reads every row
    POLICE = "police"  # police only (household pseudonyms)


@dataclass(frozen=True)
class SharedTable:
    name: str  # the release's name for it, e.g. "visits"
    iceberg: str  # namespace.table
    level: Level
    partition_identity: tuple[str, ...] = ()
    partition_month: str | None = None  # a date column partitioned by month
    sql: str | None = None  # SQL table for BI tools (aggregates only)
    description: str = ""


TABLES: tuple[SharedTable, ...] = (
    SharedTable(
        "visits",
        "shared.visits",
        Level.TOWN,
        ("municipality_code",),
        "visited_date",
        description="Visit outcomes, record level, k-anonymous (household pseudonyms).",
    ),
    SharedTable(
        "incidents",
        "shared.incidents",
        Level.TOWN,
        ("municipality_code", "occurred_month"),
        description="Incident reports, record level, k-anonymous; sensitive crimes without town.",
    ),
    SharedTable(
        "outcomes_town_month",
        "shared.outcomes_town_month",
        Level.TOWN,
        ("month",),
        sql="shared_outcomes_town_month",
        description="Programme outcomes per municipality × town × month (suppressed cells null).",
    ),
    SharedTable(
        "outcomes_municipality_month",
        "shared.outcomes_municipality_month",
        Level.MUNICIPALITY,
        ("month",),
        sql="shared_outcomes_municipality_month",
        description="Programme outcomes per municipality × month, sensitive categories included.",
    ),
    SharedTable(
        "before_after_town",
        "shared.before_after_town",
        Level.TOWN,
        sql="shared_before_after_town",
        description="Incidents 90 days before / after each town's first completed visit.",
    ),
    SharedTable(
        "repeat_victimization",
        "police.repeat_victimization",
        Level.POLICE,
        ("municipality_code",),
        sql="police_repeat_victimization",
        description="Incidents at households visited before, days since the visit (police only).",
    ),
)
BY_NAME = {t.name: t for t in TABLES}


def table(name: str) -> SharedTable:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"no shared table {name!r} (known: {', '.join(BY_NAME)})") from None


def warehouse(settings: Settings) -> Path:
    """Where the shared Iceberg tables keep their data and metadata files."""
    return settings.lake / zones.WAREHOUSE


# -- Iceberg -------------------------------------------------------------------------------------
def catalog(settings: Settings):
    from pyiceberg.catalog.sql import SqlCatalog

    where = warehouse(settings)
    where.mkdir(parents=True, exist_ok=True)
    return SqlCatalog("visitshare", uri=settings.catalog_uri, warehouse=where.as_uri())


def _iceberg_table(cat, spec: SharedTable, schema: pa.Schema):
    """The table, created (with its partitioning) on first use, its schema widened to `schema`."""
    from pyiceberg.transforms import MonthTransform

    namespace = spec.iceberg.split(".")[0]
    cat.create_namespace_if_not_exists(namespace)
    if not cat.table_exists(spec.iceberg):
        tbl = cat.create_table(spec.iceberg, schema=schema)
        with tbl.update_spec() as update:
            for col in spec.partition_identity:
                update.add_identity(col)
            if spec.partition_month:
                update.add_field(
                    spec.partition_month, MonthTransform(), f"{spec.partition_month}_month"
                )
        return cat.load_table(spec.iceberg)
    tbl = cat.load_table(spec.iceberg)
    with tbl.update_schema() as update:  # a contract that adds a field adds a column
        update.union_by_name(schema)
    return cat.load_table(spec.iceberg)


def write_iceberg(cat, spec: SharedTable, data: pa.Table, release_id: int) -> int | None:
    """Replace the table's content with `data`; the new snapshot id (None: empty table)."""
    tbl = _iceberg_table(cat, spec, data.schema)
    with warnings.catch_warnings():  # "Delete operation did not match any records": empty table
        warnings.simplefilter("ignore", UserWarning)
        tbl.overwrite(data, snapshot_properties={"visitshare.release": str(release_id)})
    tbl = cat.load_table(spec.iceberg)
    if not data.num_rows:
        return None
    return tbl.current_snapshot().snapshot_id


def read_iceberg(cat, spec: SharedTable, snapshot_id: int | None, row_filter=None) -> pa.Table:
    """A table as of a snapshot (None: the release had no rows)."""
    from pyiceberg.expressions import AlwaysTrue

    tbl = cat.load_table(spec.iceberg)
    if snapshot_id is None:
        return tbl.schema().as_arrow().empty_table()
    if tbl.snapshot_by_id(snapshot_id) is None:
        raise LookupError(f"snapshot {snapshot_id} of {spec.iceberg} no longer exists")
    return tbl.scan(row_filter=row_filter or AlwaysTrue(), snapshot_id=snapshot_id).to_arrow()


def tag_release(cat, spec: SharedTable, snapshot_id: int | None, release_id: int) -> None:
    """Tag the release's snapshot (tags protect it from snapshot expiry)."""
    if snapshot_id is None:
        return
    tbl = cat.load_table(spec.iceberg)
    name = f"release-{release_id}"
    if name not in tbl.refs():
        tbl.manage_snapshots().create_tag(snapshot_id, name).commit()


def untag_release(cat, spec: SharedTable, release_id: int) -> None:
    if not cat.table_exists(spec.iceberg):
        return
    tbl = cat.load_table(spec.iceberg)
    name = f"release-{release_id}"
    if name in tbl.refs():
        tbl.manage_snapshots().remove_tag(name).commit()


# -- SQL tables for BI tools -------------------------------------------------------------------
def _sql_type(t: pa.DataType) -> sa.types.TypeEngine:
    if pa.types.is_integer(t):
        return sa.BigInteger()
    if pa.types.is_floating(t):
        return sa.Float()
    if pa.types.is_boolean(t):
        return sa.Boolean()
    if pa.types.is_date(t):
        return sa.Date()
    return sa.Text()


def sql_table(name: str, schema: pa.Schema, metadata: sa.MetaData) -> sa.Table:
    """A shared SQL table: `release_id` plus the Arrow schema's columns."""
    columns = [sa.Column("release_id", sa.Integer, nullable=False, index=True)]
    columns += [sa.Column(f.name, _sql_type(f.type)) for f in schema]
    return sa.Table(name, metadata, *columns)


def ensure_sql_table(conn: sa.Connection, name: str, schema: pa.Schema) -> sa.Table:
    """Create the SQL table, or add the columns a contract change brought (never drops any)."""
    target = sql_table(name, schema, sa.MetaData())
    inspector = sa.inspect(conn)
    if not inspector.has_table(name):
        target.create(conn)
        return target
    existing = {c["name"] for c in inspector.get_columns(name)}
    prep = conn.dialect.identifier_preparer
    for col in target.columns:
        if col.name not in existing:
            ddl = col.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(
                f"ALTER TABLE {prep.quote(name)} ADD COLUMN {prep.quote(col.name)} {ddl}"
            )
    return target


def insert_sql_rows(conn: sa.Connection, table: sa.Table, data: pa.Table, release_id: int) -> None:
    batch = 5000
    for offset in range(0, data.num_rows, batch):
        rows = data.slice(offset, batch).to_pylist()
        for r in rows:
            r["release_id"] = release_id
        conn.execute(table.insert(), rows)
