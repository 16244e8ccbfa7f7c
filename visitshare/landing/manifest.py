"""The landing manifest: every raw file that reached the lake, and where landing resumes.

A raw file counts only once its row commits here. The next offset to read is the last landed
offset + 1, taken from this table, never from consumer-group commits. Rows of one
topic-partition are contiguous: `record_file` refuses a file that does not start right after
the previous one, so two landers racing on the same partition cannot both win. That is how a
lander that lost its partitions (revoked by the consumer group, paused, cut off from the
group coordinator) is fenced: its late file is refused, whoever commits first wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from visitshare.db.locks import lock_transaction
from visitshare.db.tables import landing_gaps, landing_signals, raw_files, validated_raw_files
from visitshare.landing.errors import ManifestConflict

if TYPE_CHECKING:
    from visitshare.settings import Settings


@dataclass(frozen=True)
class RawFile:
    topic: str
    topic_id: str
    partition: int
    first_offset: int
    last_offset: int
    row_count: int
    bytes: int
    sha256: str
    path: str  # relative to the lake
    run_id: str
    landed_at: datetime  # from the settings' clock


def _partition_filter(topic: str, topic_id: str, partition: int):
    c = raw_files.c
    return sa.and_(c.topic == topic, c.topic_id == topic_id, c.partition == partition)


def next_offset(engine: Engine, topic: str, topic_id: str, partition: int) -> int | None:
    """The offset landing resumes at, or None if nothing of this incarnation has landed."""
    with engine.connect() as conn:
        last = conn.execute(
            sa.select(sa.func.max(raw_files.c.last_offset)).where(
                _partition_filter(topic, topic_id, partition)
            )
        ).scalar()
    return None if last is None else last + 1


def next_offsets(engine: Engine, topic: str, topic_id: str) -> dict[int, int]:
    """Resume offsets of every partition of a topic incarnation that has landed files."""
    c = raw_files.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(c.partition, sa.func.max(c.last_offset))
            .where(c.topic == topic, c.topic_id == topic_id)
            .group_by(c.partition)
        ).all()
    return {p: last + 1 for p, last in rows}


def record_file(engine: Engine, f: RawFile, *, gap_reason: str | None = None) -> None:
    """Commit one landed file: the moment it becomes part of the raw zone.

    The file must start at the partition's next offset. If it starts later, the skipped range
    is recorded as a gap (with `gap_reason`) in the same transaction, or refused without one.
    Two commits on one partition at the same moment run one after the other (on PostgreSQL
    under a lock of the partition): the second sees the first's file and is refused.
    """
    landed_at = f.landed_at
    with engine.begin() as conn:
        lock_transaction(conn, f"raw_files:{f.topic}:{f.topic_id}:{f.partition}")
        last = conn.execute(
            sa.select(sa.func.max(raw_files.c.last_offset)).where(
                _partition_filter(f.topic, f.topic_id, f.partition)
            )
        ).scalar()
        expected = None if last is None else last + 1
        if expected is not None and f.first_offset < expected:
            raise ManifestConflict(
                f"{f.topic}[{f.partition}] offsets {f.first_offset}..{f.last_offset} overlap the "
                f"landed range (next offset is {expected}): another lander was faster"
            )
        if expected is not None and f.first_offset > expected:
            if gap_reason is None:
                raise ManifestConflict(
                    f"{f.topic}[{f.partition}] file starts at {f.first_offset}, expected {expected}"
                )
            conn.execute(
                landing_gaps.insert().values(
                    topic=f.topic,
                    topic_id=f.topic_id,
                    partition=f.partition,
                    from_offset=expected,
                    to_offset=f.first_offset - 1,
                    detected_at=landed_at,
                    reason=gap_reason,
                )
            )
        conn.execute(
            raw_files.insert().values(
                topic=f.topic,
                topic_id=f.topic_id,
                partition=f.partition,
                first_offset=f.first_offset,
                last_offset=f.last_offset,
                row_count=f.row_count,
                bytes=f.bytes,
                sha256=f.sha256,
                path=f.path,
                landed_at=landed_at,
                run_id=f.run_id,
            )
        )


def files(engine: Engine, topic: str | None = None) -> list[RawFile]:
    """Landed files, ordered by topic, incarnation, partition and offset."""
    c = raw_files.c
    query = sa.select(raw_files).order_by(c.topic, c.landed_at, c.partition, c.first_offset)
    if topic is not None:
        query = query.where(c.topic == topic)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return [RawFile(**{k: v for k, v in row.items() if k != "id"}) for row in rows]


def landed_paths(engine: Engine, topic: str, partition: int) -> set[str]:
    c = raw_files.c
    with engine.connect() as conn:
        return set(
            conn.execute(
                sa.select(c.path).where(c.topic == topic, c.partition == partition)
            ).scalars()
        )


def gaps(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(landing_gaps)).mappings()]


def pending_raw_files(
    settings: Settings, topics: list[str], name: str | None = None
) -> dict[str, Any] | None:
    """Raw files of `topics` that validation has not taken yet, or None.

    With a signal `name` (the landing watcher): only files newer than its last signal, and
    this signal is recorded. Without: all of them, nothing recorded.
    """
    from visitshare.db import engine_for

    engine = engine_for(settings)
    with engine.begin() as conn:
        signalled = 0
        if name is not None:
            signalled = (
                conn.execute(
                    sa.select(landing_signals.c.raw_file_id).where(landing_signals.c.name == name)
                ).scalar()
                or 0
            )
        unvalidated = (
            sa.select(
                sa.func.count(), sa.func.max(raw_files.c.id), sa.func.sum(raw_files.c.row_count)
            )
            .select_from(
                raw_files.outerjoin(
                    validated_raw_files, validated_raw_files.c.raw_file_id == raw_files.c.id
                )
            )
            .where(
                validated_raw_files.c.raw_file_id.is_(None),
                raw_files.c.id > signalled,
                raw_files.c.topic.in_(topics),
            )
        )
        files, newest, rows = conn.execute(unvalidated).one()
        if not files:
            return None
        if name is None:
            pass
        elif signalled:
            conn.execute(
                landing_signals.update()
                .where(landing_signals.c.name == name)
                .values(raw_file_id=newest)
            )
        else:
            conn.execute(landing_signals.insert().values(name=name, raw_file_id=newest))
    return {"raw_files": files, "rows": int(rows or 0), "up_to_raw_file_id": newest}
