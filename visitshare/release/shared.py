"""The shared zone's tables: Apache Iceberg tables (pyiceberg SQL catalog) and SQL tables for BI.

Every shared table is declared once in `TABLES`: its Iceberg name, its partitioning, its
access level (what a partner sees, `visitshare.partners`) and, for the aggregated outcomes,
the SQL table BI tools read. Readers find a table's data through a release (`releases` row
→ snapshot id), never through the table's current snapshot: a publish in progress moves the
current snapshot before its release row commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from visitshare.lake import iceberg_properties, lake_for
from visitshare.landing import zones
from visitshare.settings import Settings

PERIOD = "_period"  # staged record-level rows: their partition's month (never published)
# The snapshot property of a maintenance rewrite (`visitshare.release.maintain`): the release
# whose files it rewrote. Until that release's row names the snapshot, recovery undoes it.
REWRITE_PROPERTY = "visitshare.maintain"
ALL = "all"  # the period of a table partitioned by municipality only

Partition = tuple[str, str]  # (municipality_code, YYYY-MM or "all")


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
    # The column that gives a row's partition month (a date column: its month); None: the
    # table's partitions are whole municipalities (period "all").
    period: str | None = None


# The record-level tables of the outcome roles keep the partitioning they were created with;
# any other dataset's table is partitioned by municipality (`tables`).
ROLE_LAYOUTS = {
    "visits": SharedTable(
        "visits",
        "shared.visits",
        Level.TOWN,
        ("municipality_code",),
        "visited_date",
        description="Visit outcomes, record level, k-anonymous (household pseudonyms).",
        period=PERIOD,
    ),
    "incidents": SharedTable(
        "incidents",
        "shared.incidents",
        Level.TOWN,
        ("municipality_code", "occurred_month"),
        description="Incident reports, record level, k-anonymous; sensitive crimes without town.",
        period=PERIOD,
    ),
}
AGGREGATE_TABLES: tuple[SharedTable, ...] = (
    SharedTable(
        "outcomes_town_month",
        "shared.outcomes_town_month",
        Level.TOWN,
        ("municipality_code", "month"),
        sql="shared_outcomes_town_month",
        description="Programme outcomes per municipality × town × month (suppressed cells null).",
        period="month",
    ),
    SharedTable(
        "outcomes_municipality_month",
        "shared.outcomes_municipality_month",
        Level.MUNICIPALITY,
        ("municipality_code", "month"),
        sql="shared_outcomes_municipality_month",
        description="Programme outcomes per municipality × month, sensitive categories included.",
        period="month",
    ),
    SharedTable(
        "before_after_town",
        "shared.before_after_town",
        Level.TOWN,
        ("municipality_code",),
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
        period="occurred_date",
    ),
)


def record_table(name: str, contract) -> SharedTable:
    """The record-level shared table of a contract's rows (`name`: its role, or its dataset)."""
    if name in ROLE_LAYOUTS:
        return ROLE_LAYOUTS[name]
    return SharedTable(
        name,
        f"shared.{name}",
        Level.TOWN,
        ("municipality_code",),
        description=f"{contract.name} v{contract.version}, record level, k-anonymous.",
        period=PERIOD,
    )


def tables(settings: Settings) -> tuple[SharedTable, ...]:
    """Every shared table under the settings' contracts: one record-level table per contract
    (`visitshare.contracts.roles.record_contracts`), the built-in aggregate tables, then the
    outcome tables declared next to the contracts (`visitshare.release.declared`)."""
    from visitshare.contracts.roles import record_contracts
    from visitshare.release import declared

    records = record_contracts(settings.contracts_dir)
    by_dataset = {c.name: c for c in records.values()}
    defined = declared.load(settings.contracts_dir, by_dataset)
    out = (
        tuple(record_table(n, c) for n, c in records.items())
        + AGGREGATE_TABLES
        + tuple(outcome_table(d) for d in defined)
    )
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        from visitshare.contracts import ContractError

        twice = sorted({n for n in names if names.count(n) > 1})
        raise ContractError(f"two shared tables would be named {twice}: rename one")
    return out


def outcome_table(d) -> SharedTable:
    """The shared table of an outcome declared in a file (`declared.OutcomeDefinition`)."""
    zone = "police" if d.level == "police" else "shared"
    history = d.spans_history  # one partition per municipality (period "all")
    return SharedTable(
        d.name,
        f"{zone}.{d.name}",
        Level(d.level),
        ("municipality_code",) if history else ("municipality_code", "month"),
        sql=f"{zone}_{d.name}",
        description=d.description.strip().splitlines()[0],
        period=None if history else "month",
    )


def by_name(settings: Settings) -> dict[str, SharedTable]:
    return {t.name: t for t in tables(settings)}


def table(settings: Settings, name: str) -> SharedTable:
    known = by_name(settings)
    try:
        return known[name]
    except KeyError:
        raise ValueError(f"no shared table {name!r} (known: {', '.join(known)})") from None


def warehouse(settings: Settings) -> str:
    """Where the shared Iceberg tables keep their data and metadata files (a file:// or s3://
    URI: the lake's shared zone)."""
    return lake_for(settings).uri(zones.WAREHOUSE)


# -- Iceberg -------------------------------------------------------------------------------------
def catalog(settings: Settings):
    """The Iceberg catalog (one per process and database: opening one costs ~50 ms)."""
    from pyiceberg.catalog.sql import SqlCatalog

    lake = lake_for(settings)
    where = lake.uri(zones.WAREHOUSE)
    if lake.is_local:
        lake.local_path(zones.WAREHOUSE).mkdir(parents=True, exist_ok=True)
    uri = settings.catalog_uri
    identity: object = None
    if uri.startswith("sqlite:///"):  # a database file replaced on disk is another catalog
        try:
            identity = Path(uri.removeprefix("sqlite:///")).stat().st_ino
        except OSError:
            identity = None
    key = (uri, where, identity)
    cat = _CATALOGS.get(key)
    if cat is None or identity is None:
        # On object storage, pyiceberg's own FileIO reaches it with the lake's S3 settings.
        cat = SqlCatalog("visitshare", uri=uri, warehouse=where, **iceberg_properties(settings))
        _CATALOGS[key] = cat
    return cat


_CATALOGS: dict[tuple, object] = {}


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


def partition_keys(spec: SharedTable, data: pa.Table) -> pa.Array:
    """Each row's partition as one string, "<municipality>|<period>"."""
    import pyarrow.compute as pc

    munis = data.column("municipality_code")
    if spec.period is None:
        periods = pa.array([ALL] * data.num_rows, pa.string())
    else:
        periods = data.column(spec.period)
        if not pa.types.is_string(periods.type):
            periods = pc.strftime(periods, format="%Y-%m")
    return pc.binary_join_element_wise(munis, periods, "|").combine_chunks()


def split_partitions(spec: SharedTable, data: pa.Table) -> dict[Partition, pa.Table]:
    """The table's rows per partition (internal columns dropped)."""
    import pyarrow.compute as pc

    if not data.num_rows:
        return {}
    keys = pc.dictionary_encode(partition_keys(spec, data))
    codes = keys.indices.to_numpy(zero_copy_only=False)
    public = data.drop_columns([c for c in data.column_names if c.startswith("_")])
    out = {}
    import numpy as np

    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(keys.dictionary) + 1))
    for code, key in enumerate(keys.dictionary.to_pylist()):
        muni, period = key.split("|", 1)
        out[(muni, period)] = public.take(pa.array(order[bounds[code] : bounds[code + 1]]))
    return out


def write_partitions(
    cat,
    spec: SharedTable,
    schema: pa.Schema,
    parts: dict[Partition, pa.Table],
    carried: set[str],
    release_id: int,
) -> tuple[int | None, list[dict]]:
    """Replace the table's data files by `carried` (paths of the files it keeps) plus new files
    for `parts`, in one Iceberg snapshot (operation overwrite). Files in the current snapshot
    that are not carried go: the replaced partitions, and anything a write that never
    committed left. Returns the snapshot id (None: the table has no snapshot) and a row per
    new file (partition, path, rows, bytes)."""
    tbl = _iceberg_table(cat, spec, schema)
    current: dict[str, object] = {}
    snapshot = tbl.current_snapshot()
    if snapshot is not None:
        for manifest in snapshot.manifests(tbl.io):
            for entry in manifest.fetch_manifest_entry(tbl.io, discard_deleted=True):
                current[entry.data_file.file_path] = entry.data_file
    missing = carried - set(current)
    if missing:
        raise RuntimeError(
            f"{spec.iceberg}: {len(missing)} file(s) the previous release holds are not in the "
            "table's current snapshot (was the table changed outside visit-share?)"
        )
    new_files, rows = [], []
    for (muni, period), data_file in _data_files(tbl, parts):
        new_files.append(data_file)
        rows.append(
            {
                "table_name": spec.name,
                "municipality_code": muni,
                "period": period,
                "path": data_file.file_path,
                "rows": data_file.record_count,
                "bytes": data_file.file_size_in_bytes,
            }
        )
    gone = [f for path, f in current.items() if path not in carried]
    if new_files or gone:
        with tbl.transaction() as tx:
            props = {"visitshare.release": str(release_id)}
            with tx.update_snapshot(snapshot_properties=props).overwrite() as overwrite:
                for f in gone:
                    overwrite.delete_data_file(f)
                for f in new_files:
                    overwrite.append_data_file(f)
        tbl = cat.load_table(spec.iceberg)
    snapshot = tbl.current_snapshot()
    return (snapshot.snapshot_id if snapshot is not None else None), rows


def _data_files(tbl, parts: dict[Partition, pa.Table]) -> list[tuple[Partition, Any]]:
    """Write every partition's rows as data files of the table (each file holds one
    partition's rows), in one batch of write tasks: what pyiceberg's `_dataframe_to_data_files`
    does per table, with the schema conversion done once and one writer pool for all files
    (per partition it cost ~9 ms a file; a year has thousands of partitions). Pinned to
    pyiceberg 0.12's internal API (constraints.txt)."""
    import itertools
    import uuid

    from pyiceberg.io.pyarrow import (
        _determine_partitions,
        bin_pack_arrow_table,
        pyarrow_to_schema,
        write_file,
    )
    from pyiceberg.table import TableProperties, WriteTask
    from pyiceberg.utils.properties import property_as_int

    todo = [(key, part) for key, part in sorted(parts.items()) if part.num_rows]
    if not todo:
        return []
    meta = tbl.metadata
    target_size = (
        property_as_int(
            meta.properties,
            TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
            TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
        )
        or TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT
    )
    task_schema = pyarrow_to_schema(
        todo[0][1].schema,
        name_mapping=meta.schema().name_mapping,
        format_version=meta.format_version,
    )
    # Every file of the write is named <counter>-<task>-<write id>: one counter for all
    # partitions, since several release partitions share an Iceberg partition's folder.
    write_uuid, counter = uuid.uuid4(), itertools.count()
    owners: list[Partition] = []
    tasks = []
    for key, part in todo:
        part = part.select(todo[0][1].schema.names)
        groups = (
            [(None, part)]
            if meta.spec().is_unpartitioned()
            else [
                (p.partition_key, p.arrow_table_partition)
                for p in _determine_partitions(meta.spec(), meta.schema(), part)
            ]
        )
        for partition_key, rows in groups:
            for batches in bin_pack_arrow_table(rows, target_size):
                owners.append(key)
                tasks.append(
                    WriteTask(
                        write_uuid=write_uuid,
                        task_id=next(counter),
                        record_batches=batches,
                        partition_key=partition_key,
                        schema=task_schema,
                    )
                )
    files = list(write_file(io=tbl.io, table_metadata=meta, tasks=iter(tasks)))
    assert len(files) == len(owners)  # one data file per task, in task order
    return list(zip(owners, files, strict=True))


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
    """A shared SQL table: the Arrow schema's columns, plus which releases show each row: a
    row is in release N when `release_id <= N` and (`superseded_by` is null or `N <
    superseded_by`). An incremental release supersedes the rows of the partitions it
    recomputed and inserts their new rows; the other rows stay as they are."""
    columns = [
        sa.Column("release_id", sa.Integer, nullable=False, index=True),
        sa.Column("superseded_by", sa.Integer, index=True),
    ]
    columns += [sa.Column(f.name, _sql_type(f.type)) for f in schema if not f.name.startswith("_")]
    return sa.Table(name, metadata, *columns)


def in_release(table: sa.Table, release_id: int):
    """The SQL condition of the rows a release shows."""
    return (table.c.release_id <= release_id) & (
        table.c.superseded_by.is_(None) | (table.c.superseded_by > release_id)
    )


def supersede_sql_rows(
    conn: sa.Connection,
    table: sa.Table,
    spec: SharedTable,
    partitions: set[Partition] | None,
    release_id: int,
) -> None:
    """Mark the current rows of `partitions` (None: every partition) superseded by the release."""
    current = table.c.superseded_by.is_(None)
    if partitions is None:
        conn.execute(table.update().where(current).values(superseded_by=release_id))
        return
    for muni, period in sorted(partitions):
        where = current & (table.c.municipality_code == muni)
        if spec.period == "month":
            where &= table.c.month == period
        elif spec.period is not None:  # a date column
            from datetime import date

            year, month = int(period[:4]), int(period[5:7])
            start = date(year, month, 1)
            end = date(year + month // 12, month % 12 + 1, 1)
            column = table.c[spec.period]
            where &= (column >= start) & (column < end)
        conn.execute(table.update().where(where).values(superseded_by=release_id))


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
    if "superseded_by" not in existing:  # made when every release inserted all its rows
        conn.execute(
            target.update()
            .where(
                target.c.release_id < sa.select(sa.func.max(target.c.release_id)).scalar_subquery()
            )
            .values(superseded_by=target.c.release_id + 1)
        )
    return target


def insert_sql_rows(conn: sa.Connection, table: sa.Table, data: pa.Table, release_id: int) -> None:
    data = data.drop_columns([c for c in data.column_names if c.startswith("_")])
    batch = 5000
    for offset in range(0, data.num_rows, batch):
        rows = data.slice(offset, batch).to_pylist()
        for r in rows:
            r["release_id"] = release_id
        conn.execute(table.insert(), rows)
