"""The cluster profile's databases on a PostgreSQL server: created when missing.

Used on first connection to the project database (`engine_for`) and before Airflow's metadata
database is migrated, so any command of the profile works on a server that has never seen it.
"""

from __future__ import annotations

import sqlalchemy as sa

from visitshare.settings import Settings

AIRFLOW_DB_SUFFIX = "_airflow"


class ClusterUnavailable(RuntimeError):
    """A service the cluster profile uses (PostgreSQL, Redis) does not answer."""


def _databases(settings: Settings) -> list[str]:
    return [settings.pg_database_prefix, settings.pg_database_prefix + AIRFLOW_DB_SUFFIX]


def ensure_databases(settings: Settings) -> list[str]:
    """Create our databases on the PostgreSQL server when missing; the ones created now."""
    server = sa.make_url(settings.pg_server_url.rstrip("/")).set(database="postgres")
    engine = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    created = []
    try:
        with engine.connect() as conn:
            have = set(conn.execute(sa.text("select datname from pg_database")).scalars())
            for name in _databases(settings):
                if name not in have:
                    quoted = conn.dialect.identifier_preparer.quote(name)
                    conn.exec_driver_sql(f"create database {quoted}")
                    created.append(name)
    except sa.exc.OperationalError as exc:
        raise ClusterUnavailable(
            f"PostgreSQL does not answer at {server.render_as_string(hide_password=True)} "
            f"(VISITSHARE_PG_SERVER_URL): {exc.orig}"
        ) from None
    finally:
        engine.dispose()
    return created
