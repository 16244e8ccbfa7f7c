"""The cluster profile creates its own databases on the PostgreSQL server, once."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from visitshare.db import provision
from visitshare.orchestration import cluster
from visitshare.settings import Settings

pytestmark = pytest.mark.postgres


def test_our_databases_are_created_once_and_an_unreachable_server_is_named(isolated_env, pg_server):
    prefix = f"vs_t{uuid.uuid4().hex[:8]}"
    s = Settings(profile="cluster", pg_database_prefix=prefix)
    admin = sa.create_engine(sa.make_url(pg_server).set(database="postgres"))
    try:
        assert provision.ensure_databases(s) == [prefix, prefix + "_airflow"]
        assert provision.ensure_databases(s) == []
        with admin.connect() as conn:
            names = set(conn.execute(sa.text("select datname from pg_database")).scalars())
        assert {prefix, prefix + "_airflow"} <= names
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name in (prefix, prefix + "_airflow"):
                conn.exec_driver_sql(f'drop database if exists "{name}" with (force)')
        admin.dispose()
    from tests.helpers import free_port

    down = Settings(
        profile="cluster", pg_server_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}"
    )
    with pytest.raises(cluster.ClusterUnavailable, match="VISITSHARE_PG_SERVER_URL"):
        provision.ensure_databases(down)
