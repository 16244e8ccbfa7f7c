"""What the Delta Sharing server shows a partner: shares, schemas, tables, versions, files.

One share per partner, named by its id. Its schemas are the Iceberg namespaces of the tables
it may read: `shared` (tables of level town and municipality) for everyone, `police` (tables of
level police) for the police only. A table's version is a release id: the latest published
release by default, an older one while it is not expired.

A ward's query lists only the data files holding its rows: a release writes every table's
files per municipality (`release_files`), so for a town-level table the ward gets exactly the
files of its municipality, for a municipality-level table all files, for a police-only table
none (the table is not in its share). This is the access control; a client's predicate hints
are never consulted for it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath

import pyarrow as pa
import sqlalchemy as sa

from visitshare.access.partners import Partner
from visitshare.db import engine_for
from visitshare.db.tables import release_files, releases
from visitshare.lake import Lake, lake_for
from visitshare.landing import zones
from visitshare.release import shared
from visitshare.settings import Settings


class SharingError(Exception):
    """A refused or malformed request, with its HTTP status and Delta Sharing error code."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def not_found(what: str) -> SharingError:
    return SharingError(404, "RESOURCE_DOES_NOT_EXIST", f"{what} does not exist")


def bad_request(message: str) -> SharingError:
    return SharingError(400, "INVALID_PARAMETER_VALUE", message)


# -- the catalogue a partner sees -----------------------------------------------------------------
def schema_of(spec: shared.SharedTable) -> str:
    return spec.iceberg.split(".")[0]


def tables_of(settings: Settings, partner: Partner) -> list[tuple[str, shared.SharedTable]]:
    """(schema, table) of every table in the partner's share, in declaration order."""
    return [(schema_of(s), s) for s in shared.tables(settings) if partner.can_read(s)]


def schemas_of(settings: Settings, partner: Partner) -> list[str]:
    return list(dict.fromkeys(schema for schema, _ in tables_of(settings, partner)))


def check_share(partner: Partner, share: str) -> None:
    """Another partner's share (or one that does not exist): 403, revealing neither."""
    if share.lower() != partner.id:
        raise SharingError(403, "PERMISSION_DENIED", f"the share {share!r} is not yours")


def resolve(
    settings: Settings, partner: Partner, share: str, schema: str, table: str
) -> shared.SharedTable:
    """The table a path names in the partner's share; 404 for anything not in it."""
    check_share(partner, share)
    for sch, spec in tables_of(settings, partner):
        if sch == schema.lower() and spec.name == table.lower():
            return spec
    raise not_found(f"table {share}.{schema}.{table}")


def share_id(partner: Partner) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"visit-share:share:{partner.id}"))


def table_id(spec: shared.SharedTable) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"visit-share:{spec.iceberg}"))


# -- versions = releases -------------------------------------------------------------------------
def release_at(
    settings: Settings,
    version: int | None = None,
    timestamp: datetime | None = None,
    starting: datetime | None = None,
) -> sa.Row:
    """The release a request reads: a version (release id), the latest published at or before
    `timestamp`, the earliest published at or after `starting`, or the latest."""
    published = sa.select(releases).where(releases.c.status == "published")
    with engine_for(settings).connect() as conn:
        if version is not None:
            row = conn.execute(sa.select(releases).where(releases.c.id == version)).first()
            if row is None:
                raise not_found(f"version {version}")
            if row.status != "published":
                raise bad_request(
                    f"version {version} has expired (releases are kept "
                    f"{settings.release_retention_days} days)"
                )
            return row
        if timestamp is not None:
            q = published.where(releases.c.published_at <= timestamp).order_by(releases.c.id.desc())
        elif starting is not None:
            q = published.where(releases.c.published_at >= starting).order_by(releases.c.id)
        else:
            q = published.order_by(releases.c.id.desc())
        row = conn.execute(q).first()
    if row is None:
        raise not_found("a published release" + (" at that time" if timestamp or starting else ""))
    return row


# -- metadata ------------------------------------------------------------------------------------
def _delta_type(t: pa.DataType):
    """An Arrow type as Delta's (Spark's) JSON schema type."""
    simple = [
        (pa.types.is_boolean, "boolean"),
        (pa.types.is_int8, "byte"),
        (pa.types.is_int16, "short"),
        (pa.types.is_int32, "integer"),
        (pa.types.is_int64, "long"),
        (pa.types.is_float32, "float"),
        (pa.types.is_float64, "double"),
        (pa.types.is_date, "date"),
        (pa.types.is_timestamp, "timestamp"),
        (pa.types.is_string, "string"),
        (pa.types.is_large_string, "string"),
        (pa.types.is_binary, "binary"),
        (pa.types.is_large_binary, "binary"),
    ]
    for test, name in simple:
        if test(t):
            return name
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {
            "type": "array",
            "elementType": _delta_type(t.value_type),
            "containsNull": t.value_field.nullable,
        }
    if pa.types.is_struct(t):
        return delta_schema(pa.schema(list(t)))
    raise ValueError(f"no Delta type for Arrow type {t}")


def delta_schema(schema: pa.Schema) -> dict:
    return {
        "type": "struct",
        "fields": [
            {"name": f.name, "type": _delta_type(f.type), "nullable": f.nullable, "metadata": {}}
            for f in schema
            if not f.name.startswith("_")
        ],
    }


def arrow_schema(settings: Settings, spec: shared.SharedTable, release: sa.Row) -> pa.Schema:
    """The table's schema as the release has it (its snapshot's schema)."""
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    tbl = shared.catalog(settings).load_table(spec.iceberg)
    snapshot_id = (release.tables.get(spec.name) or {}).get("snapshot_id")
    snapshot = tbl.snapshot_by_id(snapshot_id) if snapshot_id is not None else None
    schema = tbl.schema()
    if snapshot is not None and snapshot.schema_id is not None:
        schema = next(
            (s for s in tbl.schemas().values() if s.schema_id == snapshot.schema_id), schema
        )
    return schema_to_pyarrow(schema, include_field_ids=False)


def metadata(settings: Settings, spec: shared.SharedTable, release: sa.Row) -> dict:
    if spec.name not in release.tables:
        raise not_found(f"table {spec.name} in version {release.id}")
    return {
        "id": table_id(spec),
        "name": spec.name,
        "description": spec.description,
        "format": {"provider": "parquet"},
        "schemaString": json.dumps(delta_schema(arrow_schema(settings, spec, release))),
        # Files hold every column (no partition column is left out of them).
        "partitionColumns": [],
        "configuration": {},
        "version": release.id,
    }


# -- files ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SharedFile:
    path: str  # under the warehouse, '/'-separated
    municipality_code: str
    rows: int
    bytes: int

    @property
    def id(self) -> str:
        """The same file has the same id in every response (clients cache by it)."""
        return hashlib.sha256(self.path.encode()).hexdigest()[:32]


def _relative(lake: Lake, location: str) -> str:
    """An Iceberg data file location (file://, s3:// or a plain path) as a path under the
    warehouse."""
    return PurePosixPath(lake.relative(location)).relative_to(zones.WAREHOUSE).as_posix()


def files_for(
    settings: Settings, partner: Partner, spec: shared.SharedTable, release: sa.Row
) -> list[SharedFile]:
    """The data files of `spec` in `release` that hold rows the partner may read."""
    if not partner.can_read(spec):
        return []
    q = sa.select(release_files).where(
        release_files.c.table_name == spec.name,
        release_files.c.release_from <= release.id,
        sa.or_(release_files.c.release_to.is_(None), release_files.c.release_to > release.id),
    )
    row_filter = partner.row_filter(spec)
    if row_filter is not None:  # a ward, a town-level table: its municipality's files only
        q = q.where(release_files.c.municipality_code == partner.municipality_code)
    with engine_for(settings).connect() as conn:
        rows = conn.execute(q.order_by(release_files.c.period, release_files.c.path)).all()
    lake = lake_for(settings)
    return [SharedFile(_relative(lake, r.path), r.municipality_code, r.rows, r.bytes) for r in rows]


def file_grantable(settings: Settings, partner: Partner, path: str) -> bool:
    """Whether `path` is a data file of a shared table that holds rows the partner may read:
    the file endpoint asks this again for every download, whatever the URL says."""
    try:
        locations = _locations(lake_for(settings), zones.WAREHOUSE / path)
    except ValueError:  # a path out of the warehouse
        return False
    with engine_for(settings).connect() as conn:
        rows = conn.execute(
            sa.select(release_files.c.table_name, release_files.c.municipality_code).where(
                release_files.c.path.in_(locations)
            )
        ).all()
    for table_name, muni in rows:
        spec = shared.by_name(settings).get(table_name)
        if spec is None or not partner.can_read(spec):
            continue
        if partner.row_filter(spec) is not None and muni != partner.municipality_code:
            continue
        return True
    return False


def _locations(lake: Lake, rel: PurePosixPath) -> list[str]:
    """How Iceberg metadata (`release_files.path`) may spell the location of a lake file."""
    if not lake.is_local:
        return [lake.uri(rel)]
    path = lake.local_path(rel).resolve()
    if not path.is_relative_to(lake.local_path(zones.WAREHOUSE)):
        raise ValueError(f"{rel} is not in the warehouse")
    return [path.as_uri(), f"file://{path.as_posix()}", str(path)]
