"""What SeaweedFS's Iceberg REST catalog does with pyiceberg (docs/operations.md reports it)."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.exceptions import ForbiddenError

from visitshare.orchestration import seaweed
from visitshare.settings import Settings


def _catalog(s: Settings, signing_name: str) -> RestCatalog:
    key, secret = s.s3_credentials() or ("", "")
    return RestCatalog(
        "seaweedfs",
        uri=f"http://127.0.0.1:{s.seaweed_iceberg_port}",
        warehouse=f"s3://{seaweed.table_bucket(s)}/",
        **{
            "rest.sigv4-enabled": "true",
            "rest.signing-region": s.s3_region,
            "rest.signing-name": signing_name,
            "client.access-key-id": key,
            "client.secret-access-key": secret,
            "client.region": s.s3_region,
            "s3.endpoint": s.s3_endpoint,
            "s3.access-key-id": key,
            "s3.secret-access-key": secret,
            "s3.region": s.s3_region,
        },
    )


def test_the_rest_catalog_keeps_tables_and_snapshots_when_signed_for_s3tables(seaweedfs):
    cat = _catalog(seaweedfs, "s3tables")
    ns = f"t{uuid.uuid4().hex[:8]}"
    cat.create_namespace(ns)
    tbl = cat.create_table(f"{ns}.counts", schema=pa.schema([("n", pa.int64())]))
    assert tbl.location().startswith(f"s3://{seaweed.table_bucket(seaweedfs)}/")
    tbl.append(pa.table({"n": [1, 2, 3]}))
    first = cat.load_table(f"{ns}.counts").current_snapshot()
    assert first is not None
    cat.load_table(f"{ns}.counts").overwrite(pa.table({"n": [7]}))
    again = cat.load_table(f"{ns}.counts")
    assert again.scan().to_arrow().column("n").to_pylist() == [7]
    older = again.scan(snapshot_id=first.snapshot_id).to_arrow()
    assert sorted(older.column("n").to_pylist()) == [1, 2, 3]


def test_writes_signed_for_s3_are_refused(seaweedfs):
    with pytest.raises(ForbiddenError, match="signature"):
        _catalog(seaweedfs, "s3").create_namespace(f"t{uuid.uuid4().hex[:8]}")
