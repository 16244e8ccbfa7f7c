"""The landing manifest: every raw file that reached the lake, and where landing resumes.

A raw file counts only once its row commits here. The next offset to read is the last landed
offset + 1, taken from this table, never from consumer-group commits. Rows of one
topic-partition are contiguous: `record_file` refuses a file that does not start right after
the previous one, so two landers racing on the same partition cannot both win.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from visitshare.db import metadata

if TYPE_CHECKING:
    from visitshare.settings import Settings

raw_files = sa.Table(
    "raw_files",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.String(249), nullable=False),
    # A topic deleted and created again restarts its offsets; its topic id tells them apart.
    sa.Column("topic_id", sa.String(64), nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("first_offset", sa.BigInteger, nullable=False),
    sa.Column("last_offset", sa.BigInteger, nullable=False),
    sa.Column("row_count", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("path", sa.String(1024), nullable=False, unique=True),  # relative to the lake
    sa.Column("landed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.UniqueConstraint("topic", "topic_id", "partition", "first_offset"),
    sa.CheckConstraint("last_offset >= first_offset", name="offset_range"),
    sa.CheckConstraint("row_count = last_offset - first_offset + 1", name="contiguous_rows"),
)

landing_gaps = sa.Table(
    "landing_gaps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.String(249), nullable=False),
    sa.Column("topic_id", sa.String(64), nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("from_offset", sa.BigInteger, nullable=False),
    sa.Column("to_offset", sa.BigInteger, nullable=False),
    sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
)


class ManifestConflict(RuntimeError):
    """A file does not continue its partition's landed range (another lander got there first)."""


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
    landed_at: datetime | None = None


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
    """
    landed_at = f.landed_at or datetime.now(UTC)
    with engine.begin() as conn:
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


# What the landing watcher (visitshare.triggers) last signalled to Airflow.
landing_signals = sa.Table(
    "landing_signals",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("raw_file_id", sa.Integer, nullable=False),
)


def event_topics(settings: Settings) -> list[str]:
    """The contracts' topics and their DLQs: the raw files validation takes."""
    from visitshare.contracts import ContractRegistry

    return [
        settings.topic(c.topic) + suffix
        for c in ContractRegistry.load(settings.contracts_dir)
        for suffix in ("", ".dlq")
    ]


def pending_raw_files(
    settings: Settings, topics: list[str], name: str | None = None
) -> dict[str, Any] | None:
    """Raw files of `topics` that validation has not taken yet, or None.

    With a signal `name` (the landing watcher): only files newer than its last signal, and
    this signal is recorded. Without: all of them, nothing recorded.
    """
    from visitshare.db import engine_for
    from visitshare.quality.records import validated_raw_files

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
