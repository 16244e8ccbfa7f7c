"""The project database (SQLite under var/ by default, PostgreSQL in production).

`engine_for(settings)` is the only way code reaches it. The first time a process opens a
database, it brings its schema up to date with the Alembic migrations in
`visitshare/db/migrations/` (a no-op when it is current), under a lock that serializes
processes opening the same database at once: a brand-new database is created, set to WAL and
migrated by exactly one of them. The tables themselves are declared in `visitshare.db.tables`.
"""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from visitshare.db.migrate import upgrade
from visitshare.settings import Settings


def _sqlite_engine(url: str) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": 60})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # pysqlite's implicit BEGIN would start transactions lazily (deferred); we issue
        # BEGIN IMMEDIATE ourselves so that two writers serialize instead of deadlocking.
        # WAL is a property of the file, set once by `upgrade` under its lock: setting it here
        # on every connection needs a write lock and fails under concurrent first use.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("pragma synchronous=full")
        cur.execute("pragma foreign_keys=on")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()


def engine_for(settings: Settings) -> Engine:
    """The engine for the settings' database, its schema migrated to the current version."""
    url = settings.db_url
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                engine = _sqlite_engine(url)
            else:
                if settings.profile == "cluster" and url == settings.pg_database_url():
                    from visitshare.db.provision import ensure_databases

                    ensure_databases(settings)  # the profile's own database, on first use
                engine = sa.create_engine(url, pool_pre_ping=True)
            upgrade(engine)
            _ENGINES[url] = engine
    return engine


def dispose_all() -> None:
    """Close every pooled connection (tests, and processes about to fork)."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


def forget_engines() -> None:
    """In a forked child: drop the inherited engines without closing the parent's connections."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.dispose(close=False)
        _ENGINES.clear()
