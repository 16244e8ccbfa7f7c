"""The project database (SQLite under var/ by default, PostgreSQL in production).

One SQLAlchemy `MetaData` holds every table the project owns; modules add their tables to it
and `engine_for(settings)` creates them on first use (idempotent, `create_all`).
"""

from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from visitshare.settings import Settings

metadata = sa.MetaData()


def _sqlite_engine(url: str) -> Engine:
    engine = sa.create_engine(url, connect_args={"timeout": 60})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # pysqlite's implicit BEGIN would start transactions lazily (deferred); we issue
        # BEGIN IMMEDIATE ourselves so that two writers serialize instead of deadlocking.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("pragma journal_mode=wal")
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
    """The engine for the settings' database, with the project's tables created."""
    url = settings.db_url
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                engine = _sqlite_engine(url)
            else:
                engine = sa.create_engine(url, pool_pre_ping=True)
            # The modules that define tables, so that create_all knows them all.
            from visitshare import (
                manifest,  # noqa: F401
                release,  # noqa: F401
            )
            from visitshare.quality import records  # noqa: F401

            metadata.create_all(engine)
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
