"""Locks that serialize work across processes (and hosts), held through the project database.

SQLite (one machine): an exclusive `flock` on a file beside the database. PostgreSQL: a
session-level advisory lock, so that landers, validators and publishers on several hosts
serialize too. Locks are re-entrant within a process (a publish that holds the lock can call
a step that takes it again).
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
import zlib
from collections.abc import Iterator

from sqlalchemy.engine import Engine

_held: dict[tuple[str, str], int] = {}
_guard = threading.RLock()


@contextlib.contextmanager
def named_lock(engine: Engine, name: str) -> Iterator[None]:
    """Hold the lock `name` of this database for the duration of the block."""
    key = (str(engine.url), name)
    with _guard:
        if _held.get(key):
            _held[key] += 1
            try:
                yield
            finally:
                _held[key] -= 1
            return
        with _acquire(engine, name):
            _held[key] = 1
            try:
                yield
            finally:
                _held[key] = 0


@contextlib.contextmanager
def _acquire(engine: Engine, name: str) -> Iterator[None]:
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.{name}-lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return
    key = zlib.crc32(f"visit-share:{name}".encode())
    with engine.connect() as conn:
        conn.exec_driver_sql(f"select pg_advisory_lock({key})")
        try:
            yield
        finally:
            conn.exec_driver_sql(f"select pg_advisory_unlock({key})")
            conn.commit()
