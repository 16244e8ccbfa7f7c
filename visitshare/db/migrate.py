"""Schema migrations of the project database with Alembic (SQLite and PostgreSQL).

`upgrade(engine)` brings any older database to the current schema; every command that opens
the database calls it through `engine_for`, and `visitshare db upgrade` runs it on purpose.
Concurrent first use is safe: processes take a lock (a lock file beside a SQLite database,
an advisory lock on PostgreSQL) before they look at the schema, so one migrates and the
others find it current. A database already at `HEAD` costs one small query.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from visitshare.db.locks import named_lock

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions (a test checks that they agree).
HEAD = "0006"


def _config(connection: sa.Connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def current_revision(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.exec_driver_sql("select version_num from alembic_version").scalar()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Migrate the database to `revision` (default: the newest); returns the revision reached."""
    with named_lock(engine, "migrate"):
        if engine.dialect.name == "sqlite":  # persistent: set once per file, under the lock
            raw = engine.raw_connection()
            try:
                sqlite = raw.driver_connection
                assert sqlite is not None  # None only once the connection is closed
                sqlite.execute("pragma journal_mode=wal")
            finally:
                raw.close()
        if revision == "head":
            with engine.connect() as conn:
                if current_revision(conn) == HEAD:
                    return HEAD
        # We report the outcome ourselves; alembic logs its plugins already on import.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        from alembic import command

        with engine.begin() as conn:
            command.upgrade(_config(conn), revision)
        with engine.connect() as conn:
            return current_revision(conn)


def upgrade_database(url: str) -> tuple[str | None, str | None]:
    """Migrate the database at `url` to the newest revision; (revision before, after)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            before = current_revision(conn)
        return before, upgrade(engine)
    finally:
        engine.dispose()
