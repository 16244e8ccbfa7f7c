"""Locks that serialize work across processes (and hosts), held through the project database.

`named_lock` holds for a block of work. SQLite (one machine): an exclusive `flock` on a file
beside the database. PostgreSQL: a session-level advisory lock, so that landers, validators and
publishers on several hosts serialize too. These locks are re-entrant within a process (a
publish that holds the lock can call a step that takes it again).

`lock_transaction` holds for one database transaction only (a check-then-write that must not
interleave with another one on the same key, such as a manifest commit).
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
import zlib
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

# PostgreSQL's two-key advisory locks are apart from its one-key ones (`named_lock`'s): the
# first key says which of ours, the second is the name's checksum.
_TRANSACTION_LOCKS = zlib.crc32(b"visit-share:transaction") - 2**31

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


def lock_transaction(conn: Connection, name: str) -> None:
    """Make the rest of `conn`'s transaction wait for any other one holding `name`.

    PostgreSQL: a transaction-level advisory lock, released by the commit or the rollback, so
    a check followed by a write cannot interleave with another one on the same name (read
    committed would let both read the same state and both write). SQLite needs nothing: its
    write transactions start with BEGIN IMMEDIATE (`visitshare.db`), so each runs alone.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("select pg_advisory_xact_lock(:space, :key)"),
            {"space": _TRANSACTION_LOCKS, "key": zlib.crc32(name.encode()) - 2**31},
        )
