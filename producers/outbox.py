"""A durable local outbox (SQLite) for events the broker could not take.

Rows keep the order in which they were enqueued; `peek` returns them in that order and a row is
deleted only after the broker confirmed its delivery. A crash between confirmation and delete
re-sends that row once more, which the event_id idempotency key makes harmless downstream.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from visitshare.clock import SYSTEM_CLOCK, Clock

Headers = list[tuple[str, bytes]]


class OutboxRecord(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    kind: str  # "event" (main topic) or "dlq"
    reason: str | None = None  # rejection reason for DLQ records
    seq: int | None = None  # assigned by the outbox

    @property
    def stored_seq(self) -> int:
        """Its sequence number in the outbox (a record read from the outbox always has one)."""
        assert self.seq is not None, "the record was not read from the outbox"
        return self.seq


def _encode_headers(headers: Headers) -> str:
    return json.dumps([[k, base64.b64encode(v).decode()] for k, v in headers])


def _decode_headers(text: str) -> Headers:
    return [(k, base64.b64decode(v)) for k, v in json.loads(text)]


class Outbox:
    def __init__(self, path: Path, clock: Clock = SYSTEM_CLOCK):
        self.path = path
        self.clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=full")  # an enqueued event survives a power cut
        self._db.execute(
            """create table if not exists outbox (
                   seq integer primary key autoincrement,
                   topic text not null,
                   key blob,
                   value blob not null,
                   headers text not null,
                   kind text not null,
                   reason text,
                   enqueued_at text not null)"""
        )

    def append(self, records: Iterable[OutboxRecord]) -> int:
        now = self.clock.now().isoformat(timespec="milliseconds")
        rows = [
            (r.topic, r.key, r.value, _encode_headers(r.headers), r.kind, r.reason, now)
            for r in records
        ]
        if rows:
            with self._transaction():
                self._db.executemany(
                    "insert into outbox (topic, key, value, headers, kind, reason, enqueued_at)"
                    " values (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        return len(rows)

    def peek(self, limit: int) -> list[OutboxRecord]:
        """The oldest `limit` records, oldest first."""
        cur = self._db.execute(
            "select seq, topic, key, value, headers, kind, reason from outbox order by seq limit ?",
            (limit,),
        )
        return [
            OutboxRecord(topic, key, value, _decode_headers(h), kind, reason, seq)
            for seq, topic, key, value, h, kind, reason in cur
        ]

    def delete(self, seqs: Iterable[int]) -> None:
        rows = [(s,) for s in seqs]
        if rows:
            with self._transaction():
                self._db.executemany("delete from outbox where seq = ?", rows)

    def pending(self) -> int:
        return self._db.execute("select count(*) from outbox").fetchone()[0]

    def summary(self) -> dict[str, int]:
        """Pending records per topic."""
        return dict(
            self._db.execute("select topic, count(*) from outbox group by topic order by 1")
        )

    def oldest(self) -> str | None:
        row = self._db.execute("select min(enqueued_at) from outbox").fetchone()
        return row[0] if row else None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self):
        self._db.execute("begin immediate")
        try:
            yield
        except BaseException:
            self._db.execute("rollback")
            raise
        self._db.execute("commit")
