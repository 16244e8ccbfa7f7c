"""Landing: Kafka topics → raw Parquet files in the lake, exactly once, with a manifest.

How exactly-once holds:
- Where to resume comes from the manifest (`visitshare.manifest`), never from consumer groups.
- A file is written under a temporary name, fsynced and linked into place; only then is its
  manifest row committed. A crash before the commit leaves an orphan file that no reader uses
  (readers go through the manifest); the next run writes that range again and removes the
  orphan. A crash after the commit loses nothing: the next run resumes after the file.
- The manifest refuses a file that does not continue its partition's range, so two landers on
  one partition cannot both land the same offsets. This fences a lander that lost a partition
  without knowing it yet (revoked, paused, cut off from the group coordinator): its late file
  is refused and removed, and it lands that partition again from the manifest if it still
  owns it. Files are named after their writer too, so a late file never replaces (or, once
  refused, removes) the file that won.

One code path, two modes: `drain` lands up to the high watermark seen at start and returns
(what an Airflow task calls); `follow` runs until asked to stop (the landing service).
`land()` runs `land_workers` processes: kafka-python's record parsing and the Parquet encoding
both need a core. Who lands which partition:
- `follow` (the service): every process of every landing service is a member of the consumer
  group `land_group_id`, which spreads the partitions over them and moves them when a member
  comes or goes. A member seeks each partition it is given to the manifest's next offset (the
  group's committed offsets are only a mirror for monitoring) and drops what it holds unwritten
  of a partition taken away (see `Lander._revoke`).
- `drain` (and `follow` with an empty `land_group_id`): a fixed share of the partitions per
  process, no group membership. A drain is a bounded job: in the group it would make every
  service rebalance when it starts and ends, and could be handed nothing or lose partitions
  before reaching its high watermarks. Run next to the services, both land the same
  partitions and the manifest lets each offset in once.
Offsets are expected to be contiguous (our producers are idempotent, not transactional, and
topics are not compacted); a jump is recorded as a gap, never silently skipped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field

import psutil
import pyarrow as pa
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import KafkaError

from visitshare.contracts import ContractRegistry
from visitshare.db import engine_for
from visitshare.lake import lake_for
from visitshare.landing import manifest, zones
from visitshare.landing.errors import LandingError
from visitshare.landing.files import ParquetStream
from visitshare.landing.rawfile import (
    Decoder,
    arrow_without_pandas,
    complete_table,
    kafka_batch,
)
from visitshare.processes import (
    die_with_parent,
    mp_context,
    parent_gone,
    peak_rss_mb,
    release_memory,
)
from visitshare.producing import kafka
from visitshare.producing.topics import DLQ_SUFFIX, declared_topics, is_dlq
from visitshare.settings import Settings

log = logging.getLogger(__name__)

CONVERT_EVERY = 1024  # records kept as Python objects before they become an Arrow batch
ENCODE_ROWS = 4096  # rows kept as Arrow batches before they are encoded into their file
# The group's assignment: cooperative (KIP-429), so a rebalance takes away only the partitions
# that change owner and the others go on landing (an eager one would make every member drop
# every open file at each rebalance). All members of a group must offer the same one.
GROUP_ASSIGNOR = CooperativeStickyAssignor
# A member whose loop has not polled for this long (stuck writing to the lake or the database)
# leaves the group, and its partitions move on; kafka-python's default is 5 minutes.
# (Would be the setting VISITSHARE_LAND_GROUP_MAX_POLL_INTERVAL_SECONDS.)
GROUP_MAX_POLL_INTERVAL_MS = 60_000


@dataclass
class PartitionReport:
    topic: str
    partition: int
    topic_id: str
    files: int = 0
    rows: int = 0
    first_offset: int | None = None
    last_offset: int | None = None
    bytes: int = 0

    def plus(self, other: PartitionReport) -> PartitionReport:
        """Both reports of a partition that the group moved between two workers of one run."""
        if other.topic_id != self.topic_id or not other.files:
            return self
        if not self.files:
            return other
        assert self.first_offset is not None and other.first_offset is not None
        assert self.last_offset is not None and other.last_offset is not None
        return PartitionReport(
            self.topic,
            self.partition,
            self.topic_id,
            self.files + other.files,
            self.rows + other.rows,
            min(self.first_offset, other.first_offset),
            max(self.last_offset, other.last_offset),
            self.bytes + other.bytes,
        )


@dataclass
class LandReport:
    run_id: str
    mode: str
    partitions: dict[tuple[str, int], PartitionReport] = field(default_factory=dict)
    gaps: int = 0
    fenced: int = 0  # files the manifest refused: another lander had landed their offsets
    orphans_removed: int = 0
    elapsed_s: float = 0.0
    process_peak_rss_mb: list[float] = field(default_factory=list)  # one per landing process

    def rows_by_topic(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (topic, _), p in sorted(self.partitions.items()):
            out[topic] = out.get(topic, 0) + p.rows
        return out

    @property
    def peak_rss_mb(self) -> float:
        """The largest peak resident memory of one landing process."""
        return max(self.process_peak_rss_mb, default=0.0)

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions.values())

    @property
    def files(self) -> int:
        return sum(p.files for p in self.partitions.values())

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.partitions.values())


def _estimate(record) -> int:
    """Memory of one fetched record until converted: payload plus the Python objects around it."""
    return record.serialized_value_size + record.serialized_header_size + 600


@dataclass
class _OpenFile:
    """The bytes of a closed open file, ready to write."""

    data: pa.Buffer
    first_offset: int
    last_offset: int
    rows: int


@dataclass
class _Partition:
    """Landing state of one topic-partition: resume point and the open (unwritten) file.

    The open file's rows pass through three stages, so that what it holds in memory stays
    small whatever its size: fetched records (at most CONVERT_EVERY), Arrow batches of their
    Kafka columns (at most about ENCODE_ROWS rows), then decoded and encoded as a row group of
    the file (`ParquetStream`, compressed). The file is written and committed when it closes.
    """

    topic: str
    partition: int
    topic_id: str
    expected: int | None  # next offset to land; None: nothing of this incarnation landed yet
    target: int | None = None  # drain: stop before this offset
    decoder: Decoder | None = None  # the topic's contract fields; None: Kafka columns only
    records: list = field(default_factory=list)  # fetched, not yet converted to Arrow
    chunks: list[pa.RecordBatch] = field(default_factory=list)  # converted, not yet encoded
    stream: ParquetStream | None = None  # the open file, encoded so far
    rows: int = 0  # of the open file
    nbytes: int = 0  # of the open file as Kafka columns in Arrow: what land_roll_bytes limits
    first_offset: int = -1  # of the open file
    last_offset: int = -1
    opened_at: float = 0.0
    gap_reason: str | None = None
    _converted: int = 0  # Arrow bytes of the open file's converted records
    _pending: int = 0  # Arrow bytes of `chunks`

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    @property
    def held(self) -> int:
        """Memory the open file holds: fetched records (estimated), Arrow batches, encoded bytes."""
        unconverted = self.nbytes - self._converted
        return unconverted + self._pending + (self.stream.nbytes if self.stream else 0)

    def append(self, records: list) -> None:
        if not self.rows:
            self.opened_at = time.monotonic()
            self.first_offset = records[0].offset
        self.records.extend(records)
        self.rows += len(records)
        self.nbytes += len(records) * _estimate(records[-1])
        self.last_offset = records[-1].offset
        self.expected = self.last_offset + 1
        if len(self.records) >= CONVERT_EVERY:
            self.convert()

    def convert(self) -> None:
        """Turn the held ConsumerRecords into a compact Arrow batch (frees the Python objects)."""
        if self.records:
            batch = kafka_batch(self.topic, self.partition, self.records)
            self.chunks.append(batch)
            self.records = []
            self._converted += batch.nbytes
            self._pending += batch.nbytes
            self.nbytes = self._converted
            if sum(c.num_rows for c in self.chunks) >= ENCODE_ROWS:
                self.encode()

    def encode(self) -> None:
        """Decode the Arrow batches and append them to the open file as a row group."""
        if not self.chunks:
            return
        table = complete_table(pa.Table.from_batches(self.chunks), self.decoder)
        if self.stream is None:
            self.stream = ParquetStream(
                table.schema,
                {
                    "kafka_topic": self.topic,
                    "kafka_topic_id": self.topic_id,
                    "kafka_partition": str(self.partition),
                    "first_offset": str(self.first_offset),
                },
            )
        self.stream.write(table)
        self.chunks, self._pending = [], 0

    def take_file(self) -> _OpenFile | None:
        """The open file's bytes, and start a new file."""
        self.convert()
        self.encode()
        if self.stream is None:
            return None
        data = self.stream.finish({"last_offset": str(self.last_offset)})
        out = _OpenFile(data, self.first_offset, self.last_offset, self.rows)
        self.stream, self.rows, self.nbytes, self._converted = None, 0, 0, 0
        return out

    def done(self, position: int) -> bool:
        return self.target is not None and position >= self.target


class _Rebalance(ConsumerRebalanceListener):
    """Hands a group member's assignment changes to its lander.

    kafka-python calls these on its IO thread, but only from within `poll()` or `close()` while
    the lander's own thread waits in that call: the lander's state needs no lock.
    `on_partitions_lost` (evicted from the group) does what `on_partitions_revoked` does.
    """

    def __init__(self, lander: Lander, consumer: KafkaConsumer):
        self.lander, self.consumer = lander, consumer

    def on_partitions_assigned(self, assigned) -> None:
        self.lander._assign(self.consumer, assigned)

    def on_partitions_revoked(self, revoked) -> None:
        self.lander._revoke(revoked)


class Lander:
    """Lands the partitions this worker owns: worker `worker` of `workers` by a fixed rule, or
    (following with a group) what the consumer group assigns it."""

    def __init__(
        self,
        settings: Settings,
        topics: list[str] | None = None,
        run_id: str | None = None,
        worker: int = 0,
        workers: int = 1,
    ):
        self.settings = settings
        self.engine = engine_for(settings)
        self.lake = lake_for(settings)
        self.contracts = ContractRegistry.load(settings.contracts_dir)
        self.topics = topics or [settings.topic(t.name) for t in declared_topics(settings)]
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.worker, self.workers = worker, workers
        # Part of every file name: two landers never write the same path, even for one range.
        self.writer = f"{self.run_id}-{worker}"
        self._parts: dict[TopicPartition, _Partition] = {}
        # Partitions the group assigned us; None: not a group member (a fixed share).
        self._assigned: set[TopicPartition] | None = None
        self._meta: dict[str, tuple[str, int]] = {}  # topic → (topic id, partitions), last seen
        self._consumer: KafkaConsumer | None = None  # while running: to seek after a refusal
        self._decoders: dict[str, Decoder | None] = {}
        # consumer that mirrors landed offsets to a group (monitoring)
        self._mirror: KafkaConsumer | None = None
        self._report = LandReport(self.run_id, "drain")

    def owns(self, topic: str, partition: int) -> bool:
        """In a group, what it assigned us; otherwise a fixed share of partitions per worker (a
        topic's partitions spread over workers)."""
        if self._assigned is not None:
            return TopicPartition(topic, partition) in self._assigned
        return (zlib.crc32(topic.encode()) + partition) % self.workers == self.worker

    # -- setup ------------------------------------------------------------------------------
    def decoder(self, topic: str) -> Decoder | None:
        if topic not in self._decoders:
            name = topic.removeprefix(self.settings.topic_prefix).removesuffix(DLQ_SUFFIX)
            try:
                contract = self.contracts.by_topic(name)
            except KeyError:
                contract = None
            # DLQ values are invalid by definition: skip the fast path that would refuse them.
            self._decoders[topic] = Decoder(contract, fast=not is_dlq(topic)) if contract else None
        return self._decoders[topic]

    def _check_lake_writable(self) -> None:
        raw = zones.Zone.RAW
        # Per process: the coordinator and its workers probe at the same moment.
        probe = f"{raw}/.probe-{self.run_id}-{os.getpid()}"
        try:
            self.lake.write_bytes(b"", probe)
            self.lake.remove(probe)
        except OSError as exc:
            raise LandingError(
                f"cannot write to the lake at {self.lake.uri(raw)}: {exc.strerror or exc}; "
                "nothing was landed"
            ) from None

    def _describe(self) -> dict[str, tuple[str, int]]:
        """topic → (topic id, partition count) for the topics that exist on the broker."""
        try:
            admin = kafka.admin(self.settings)
        except KafkaError as exc:
            raise LandingError(f"broker {self.settings.bootstrap} unreachable: {exc}") from None
        try:
            existing = set(admin.list_topics())
            wanted = [t for t in self.topics if t in existing]
            described = admin.describe_topics(wanted) if wanted else []
        except KafkaError as exc:
            raise LandingError(
                f"cannot read topic metadata from {self.settings.bootstrap}: {exc}"
            ) from None
        finally:
            admin.close()
        return {d["name"]: (str(d["topic_id"]), len(d["partitions"])) for d in described}

    def _track(self, meta: dict[str, tuple[str, int]]) -> list[_Partition]:
        """Start tracking partitions (new ones, or every one of a re-created topic)."""
        added = []
        for topic, (topic_id, count) in meta.items():
            resume = manifest.next_offsets(self.engine, topic, topic_id)
            for p in range(count):
                if not self.owns(topic, p):
                    continue
                tp = TopicPartition(topic, p)
                known = self._parts.get(tp)
                if known is not None and known.topic_id == topic_id:
                    continue
                if known is not None:
                    log.warning(
                        "%s was re-created (topic id %s → %s): landing it anew",
                        topic,
                        known.topic_id,
                        topic_id,
                    )
                    self._report.partitions.pop((topic, p), None)
                state = _Partition(topic, p, topic_id, resume.get(p), decoder=self.decoder(topic))
                self._parts[tp] = state
                # A partition the group gives back keeps the report of what we landed before.
                self._report.partitions.setdefault((topic, p), PartitionReport(topic, p, topic_id))
                added.append(state)
        return added

    def _seek(self, consumer, states: list[_Partition]) -> None:
        if self._assigned is None:  # a group member's partitions are the group's to assign
            consumer.assign(list(self._parts))
        for s in states:
            if s.expected is None:
                consumer.seek_to_beginning(s.tp)
            else:
                consumer.seek(s.tp, s.expected)

    # -- group membership ---------------------------------------------------------------------
    def _group_consumer(self) -> KafkaConsumer:
        """A member of the landing group (heartbeats run on kafka-python's IO thread)."""
        s = self.settings
        return kafka.consumer(
            s,
            group_id=s.land_group_id,
            partition_assignment_strategy=[GROUP_ASSIGNOR],
            max_poll_interval_ms=GROUP_MAX_POLL_INTERVAL_MS,
            # The group's leader sees new topics and partitions (and rebalances) this often.
            metadata_max_age_ms=int(s.land_metadata_refresh_seconds * 1000),
            allow_auto_create_topics=False,  # a declared topic not created yet is waited for
        )

    def _assign(self, consumer, assigned) -> None:
        """Partitions the group gave us: land each from the manifest's next offset."""
        assert self._assigned is not None
        self._assigned |= set(assigned)
        if any(
            tp.topic not in self._meta or tp.partition >= self._meta[tp.topic][1] for tp in assigned
        ):
            self._meta = self._describe_quietly(self._meta)  # a topic or partition new to us
        added = self._track(self._meta)
        self._seek(consumer, added)
        if added:
            log.info(
                "assigned %s", ", ".join(f"{s.topic}[{s.partition}]@{s.expected}" for s in added)
            )

    def _revoke(self, revoked) -> None:
        """Partitions the group took away: stop landing them, drop what they hold unwritten.

        Their open files are not written. The group calls this before it gives the partitions
        to another member, so writing them here would still be in time, but it would run on
        kafka-python's IO thread, holding up this member's heartbeats and the whole group's
        rebalance for as long as the lake and the database take (files of up to
        `land_roll_bytes` each); past the rebalance timeout the member is evicted and the
        writes are refused anyway. What is dropped is at most `land_roll_seconds` of records,
        still on the broker: the new owner reads them again from the manifest's next offset.
        When the member was evicted (`on_partitions_lost`), the new owner may already be
        landing them, and writing would only race it.
        """
        assert self._assigned is not None
        self._assigned -= set(revoked)
        for tp in revoked:
            st = self._parts.pop(tp, None)
            if st is not None and st.rows:
                log.info(
                    "%s[%d] revoked: dropping %d unwritten rows (its new owner lands them)",
                    st.topic,
                    st.partition,
                    st.rows,
                )

    # -- the loop ---------------------------------------------------------------------------
    def drain(self) -> LandReport:
        """Land everything up to the high watermarks seen at start, then return."""
        return self._run(follow=False, stop=threading.Event())

    def follow(self, stop: threading.Event) -> LandReport:
        """Land continuously until `stop` is set; then close the open files and return."""
        return self._run(follow=True, stop=stop)

    def _run(self, follow: bool, stop: threading.Event) -> LandReport:
        started = time.monotonic()
        self._report.mode = "follow" if follow else "drain"
        self._check_lake_writable()
        meta = self._describe()
        missing = [t for t in self.topics if t not in meta]
        if missing and not follow:
            raise LandingError(
                f"topics not on {self.settings.bootstrap}: {', '.join(missing)} "
                "(run `visitshare topics apply`, or check VISITSHARE_TOPIC_PREFIX)"
            )
        for topic in missing:
            log.warning("topic %s does not exist yet; landing it once it appears", topic)
        self._report.orphans_removed += self._remove_orphans(meta)
        self._meta = meta
        group = follow and bool(self.settings.land_group_id)
        if group:
            consumer = self._group_consumer()
        else:
            consumer = kafka.consumer(self.settings, group_id=None, enable_auto_commit=False)
        self._consumer = consumer
        try:
            if group:
                self._assigned = set()
                self._mirror = consumer  # landed offsets are committed as the member
                # By name: a declared topic created later is assigned once the leader sees it.
                consumer.subscribe(topics=self.topics, listener=_Rebalance(self, consumer))
            else:
                self._seek(consumer, self._track(meta))
            if not follow:
                self._observe_targets(consumer, stop)
            self._loop(consumer, follow, stop)
            self._close_all()
        except (LandingError, KafkaError):
            # What was fetched before the failure still lands consistently.
            with contextlib.suppress(Exception):
                self._close_all()
            raise
        finally:
            consumer.close()  # a member leaves the group (its open files are closed by now)
            if self._mirror is not None and self._mirror is not consumer:
                self._mirror.close()
            self._consumer = None
        self._report.orphans_removed += self._remove_orphans(self._describe_quietly(meta))
        self._report.elapsed_s = time.monotonic() - started
        self._report.process_peak_rss_mb = [peak_rss_mb()]
        return self._report

    def _observe_targets(self, consumer, stop: threading.Event) -> None:
        """Drain targets: each partition's high watermark from its first fetch response.

        `end_offsets()` cannot be trusted on the embedded broker; the high watermark
        in fetch responses can, on every Kafka-compatible broker.
        """
        deadline = time.monotonic() + self.settings.land_idle_timeout_seconds
        waiting = set(self._parts)
        while waiting and not stop.is_set():
            self._take(consumer.poll(timeout_ms=500))
            for tp in list(waiting):
                hw = consumer.highwater(tp)
                if hw is not None:
                    self._parts[tp].target = hw
                    waiting.discard(tp)
            if waiting and time.monotonic() > deadline:
                raise LandingError(self._no_progress_message(waiting, "no fetch response"))

    def _loop(self, consumer, follow: bool, stop: threading.Event) -> None:
        s = self.settings
        last_progress = last_refresh = time.monotonic()
        while not stop.is_set():
            if not follow:
                active = [
                    tp for tp, st in self._parts.items() if not st.done(consumer.position(tp))
                ]
                if not active:
                    return
                consumer.pause(*[tp for tp in self._parts if tp not in active])
            got = self._take(consumer.poll(timeout_ms=200))
            now = time.monotonic()
            if got:
                last_progress = now
            for st in self._parts.values():
                if st.rows and (
                    st.rows >= s.land_roll_rows
                    or st.nbytes >= s.land_roll_bytes
                    or now - st.opened_at >= s.land_roll_seconds
                ):
                    self._close(st)
            while (
                sum(st.held for st in self._parts.values()) > s.land_max_buffer_bytes / self.workers
            ):
                self._close(max(self._parts.values(), key=lambda st: st.held))
            if parent_gone():
                os._exit(1)  # our coordinator was killed: stop as abruptly as it did
            if follow and now - last_refresh >= s.land_metadata_refresh_seconds:
                last_refresh = now
                self._refresh(consumer)
            if not follow and not got and now - last_progress > s.land_idle_timeout_seconds:
                behind = [
                    tp for tp, st in self._parts.items() if not st.done(consumer.position(tp))
                ]
                raise LandingError(self._no_progress_message(behind, "no data"))

    def _take(self, fetched: dict) -> int:
        """Add fetched records to their partitions' open files; returns how many were taken."""
        taken = 0
        for tp, records in fetched.items():
            st = self._parts.get(tp)
            if st is None or not records:
                continue
            first, last = records[0].offset, records[-1].offset
            if (
                st.expected in (None, first)
                and last - first + 1 == len(records)
                and (st.target is None or last < st.target)
            ):
                self._add(st, records)  # the usual case: contiguous, nothing to filter
                taken += len(records)
                continue
            for r in records:
                offset = r.offset
                if st.target is not None and offset >= st.target:
                    break  # drain: beyond the high watermark seen at start
                if st.expected is not None and offset < st.expected:
                    continue  # already landed (the consumer was reset behind our position)
                if st.expected is not None and offset > st.expected:
                    # Offsets jumped (retention deleted records before they landed): the open
                    # file ends here and the next one records the gap.
                    if not self._close(st):
                        break
                    st.gap_reason = f"offsets {st.expected}..{offset - 1} were not on the broker"
                    log.error("%s[%d]: %s", st.topic, st.partition, st.gap_reason)
                if not self._add(st, [r]):
                    break
                taken += 1
        return taken

    def _add(self, st: _Partition, records: list) -> bool:
        """Append records to the open file, closing it at `land_roll_rows` / `land_roll_bytes`.

        False if the manifest refused a file it closed: the partition then starts again from
        the manifest, and the rest of `records` is not ours to land.
        """
        s = self.settings
        while records:
            per_record = _estimate(records[0])
            room = min(
                s.land_roll_rows - st.rows, max(1, (s.land_roll_bytes - st.nbytes) // per_record)
            )
            st.append(records[:room])
            records = records[room:]
            rolled = st.rows >= s.land_roll_rows or st.nbytes >= s.land_roll_bytes
            if rolled and not self._close(st):
                return False
        return True

    def _refresh(self, consumer) -> None:
        """Pick up new topics, new partitions and re-created topics (new topic ids)."""
        try:
            meta = self._describe()
        except LandingError as exc:
            log.warning("metadata refresh failed: %s", exc)
            return
        self._meta = meta
        recreated = {
            t
            for t, (tid, _) in meta.items()
            if any(st.topic == t and st.topic_id != tid for st in self._parts.values())
        }
        for tp, st in list(self._parts.items()):
            if st.topic in recreated:
                del self._parts[tp]  # offsets of the old incarnation: drop what is unwritten
        added = self._track(meta)
        if added:
            log.info(
                "landing %d new partition(s): %s",
                len(added),
                ", ".join(f"{s.topic}[{s.partition}]" for s in added),
            )
            self._seek(consumer, added)

    # -- writing files ------------------------------------------------------------------------
    def _close(self, st: _Partition) -> bool:
        """Write the partition's open file and commit it to the manifest.

        False if the manifest refused it (see `_fenced`); True if it landed or was empty.
        """
        gap_reason = st.gap_reason
        closed = st.take_file()
        if closed is None:
            return True
        st.gap_reason = None
        try:
            rf = self._write(st, closed, gap_reason)
        except manifest.ManifestConflict as exc:
            self._fenced(st, exc)
            return False
        except OSError as exc:  # FileExistsError is an OSError
            raise LandingError(f"landing {st.topic}[{st.partition}] stopped: {exc}") from exc
        release_memory()
        if gap_reason:
            self._report.gaps += 1
        p = self._report.partitions[(st.topic, st.partition)]
        p.files += 1
        p.rows += rf.row_count
        p.bytes += rf.bytes
        p.first_offset = rf.first_offset if p.first_offset is None else p.first_offset
        p.last_offset = rf.last_offset
        self._mirror_offset(st, rf.last_offset + 1)
        return True

    def _fenced(self, st: _Partition, refusal: manifest.ManifestConflict) -> None:
        """The manifest refused the partition's file: another lander landed (some of) its
        offsets first. It is one that took the partition over while we were revoked, paused or
        cut off from the group, or (drain) a service, or a drain beside a service. The refused
        file is already removed (`_write`) and counts nowhere. If the partition is still ours,
        landing goes on from the manifest's next offset; if not, the group takes it away at the
        next poll.
        """
        log.warning("%s; landing %s[%d] again from the manifest", refusal, st.topic, st.partition)
        self._report.fenced += 1
        st.expected = manifest.next_offset(self.engine, st.topic, st.topic_id, st.partition)
        if self._consumer is not None:
            self._seek(self._consumer, [st])

    def _close_all(self) -> None:
        for st in list(self._parts.values()):
            self._close(st)

    def _write(self, st: _Partition, closed: _OpenFile, gap_reason: str | None) -> manifest.RawFile:
        """Write one file, then commit it; remove it again if the commit is refused."""
        first, last = closed.first_offset, closed.last_offset
        rel = zones.raw_file(
            st.topic, st.partition, first, last, st.topic_id, self.writer
        ).as_posix()
        nbytes, digest = self.lake.write_bytes(
            closed.data,
            rel,
            # A file already there is a crashed run's leftover unless the manifest has it.
            replace=lambda _: rel not in manifest.landed_paths(self.engine, st.topic, st.partition),
        )
        rf = manifest.RawFile(
            topic=st.topic,
            topic_id=st.topic_id,
            partition=st.partition,
            first_offset=first,
            last_offset=last,
            row_count=closed.rows,
            bytes=nbytes,
            sha256=digest,
            path=rel,
            run_id=self.run_id,
            landed_at=self.settings.clock.now(),
        )
        try:
            manifest.record_file(self.engine, rf, gap_reason=gap_reason)
        except BaseException:
            self.lake.remove(rel)  # ours, never committed: no reader knows it
            raise
        return rf

    def _mirror_offset(self, st: _Partition, next_offset: int) -> None:
        """Best effort: monitoring tools read consumer-group lag; the manifest stays the truth."""
        if not self.settings.land_group_id:
            return
        from kafka.structs import OffsetAndMetadata

        offsets = {st.tp: OffsetAndMetadata(next_offset, "", -1)}
        with contextlib.suppress(Exception):
            if self._assigned is not None:  # as the group member: never holds up landing
                assert self._mirror is not None
                self._mirror.commit_async(offsets)
                return
            if self._mirror is None:
                self._mirror = kafka.consumer(self.settings, group_id=self.settings.land_group_id)
            self._mirror.commit(offsets)

    # -- orphans ------------------------------------------------------------------------------
    def _describe_quietly(self, fallback: dict) -> dict:
        try:
            return self._describe()
        except LandingError:
            return fallback

    def _remove_orphans(self, meta: dict[str, tuple[str, int]]) -> int:
        """Delete files no reader can ever use: uncommitted, and superseded or abandoned.

        A file not in the manifest is removed when its range starts at or before the landed
        range's end (the manifest can no longer accept it), when it belongs to another topic
        incarnation, or when it is older than ten minutes (its lander is gone). Temporary files
        of dead processes go too. A live lander's just-written file is left alone.
        """
        removed = 0
        now = time.time()  # compared with file modification times: the file system's clock
        for topic, (topic_id, count) in meta.items():
            resume = manifest.next_offsets(self.engine, topic, topic_id)
            for p in range(count):
                files = self.lake.list(zones.raw_partition(topic, p), recursive=False)
                if not files:
                    continue
                committed = manifest.landed_paths(self.engine, topic, p)
                prefix = topic_id.replace("-", "")[:12]
                for f in files:
                    rel, name = f.path, f.path.rsplit("/", 1)[-1]
                    if name.startswith("."):
                        pid = name.rsplit(".", 2)[-2] if name.endswith(".tmp") else ""
                        stale = not (pid.isdigit() and psutil.pid_exists(int(pid)))
                        if stale or now - f.mtime > 600:
                            self.lake.remove(rel)
                            removed += 1
                        continue
                    if rel in committed or not name.endswith(".parquet"):
                        continue
                    first = int(name.split("-", 1)[0])
                    superseded = p in resume and first < resume[p]
                    other_incarnation = not name.endswith(f".{prefix}.parquet")
                    if superseded or other_incarnation or now - f.mtime > 600:
                        log.info("removing orphan %s (written, never committed)", rel)
                        self.lake.remove(rel)
                        removed += 1
        return removed

    def _no_progress_message(self, behind, what: str) -> str:
        names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(behind)[:6])
        try:
            admin = kafka.admin(self.settings)
            admin.close()
            cause = f"{what} for {self.settings.land_idle_timeout_seconds:.0f} s"
        except KafkaError as exc:
            cause = f"broker {self.settings.bootstrap} unreachable ({exc})"
        return (
            f"landing stopped: {cause} while behind the high watermark on {names}. "
            "Files landed so far are committed; run again to continue"
        )


def _worker_main(settings, topics, run_id, worker, workers, follow, stop, results) -> None:
    """A landing worker process: lands its share, reports back through `results`."""
    # The coordinator decides when to stop (SIGTERM/Ctrl-C reach it, then `stop` is set).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent()
    from visitshare.console import setup_logging
    from visitshare.db import forget_engines

    forget_engines()  # a forked child must not share the parent's database connections
    arrow_without_pandas()  # a spawned worker starts without the coordinator's setup

    setup_logging()
    try:
        lander = Lander(settings, topics, run_id, worker, workers)
        report = lander.follow(stop) if follow else lander.drain()
        results.put(("ok", report))
    except Exception as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def land(
    settings: Settings,
    topics: list[str] | None = None,
    follow: bool = False,
    stop: threading.Event | None = None,
    workers: int | None = None,
) -> LandReport:
    """Land the given topics (default: every declared topic), drain or follow.

    This process lands worker 0's share of the partitions; workers 1..n-1 run in child
    processes. Their reports are merged. A worker's failure stops the others (they finish
    their open files) and raises LandingError.
    """
    workers = workers or settings.land_workers
    stop = stop or threading.Event()
    arrow_without_pandas()  # before forking workers: they inherit it
    run_id = uuid.uuid4().hex[:12]
    if workers == 1:
        lander = Lander(settings, topics, run_id)
        return lander.follow(stop) if follow else lander.drain()
    # Forking is fast (the modules are already imported) but only safe while this process runs
    # no other thread; otherwise a clean interpreter is spawned.
    ctx = mp_context()
    child_stop, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(settings, topics, run_id, i, workers, follow, child_stop, results),
            name=f"land-worker-{i}",
        )
        for i in range(1, workers)
    ]
    for p in procs:
        p.start()

    def supervise() -> None:
        # Our stop reaches the children; a child that dies stops us all.
        while not child_stop.is_set():
            if stop.wait(0.2) or any(p.exitcode not in (None, 0) for p in procs):
                stop.set()
                child_stop.set()

    supervisor = threading.Thread(target=supervise, daemon=True)
    supervisor.start()
    outcomes: list[tuple[str, object]] = []
    try:
        own = Lander(settings, topics, run_id, 0, workers)
        outcomes.append(("ok", own.follow(stop) if follow else own.drain()))
    except (LandingError, KafkaError) as exc:
        outcomes.append(("error", f"{type(exc).__name__}: {exc}"))
        child_stop.set()
    for p in procs:
        p.join()
    child_stop.set()
    supervisor.join()
    while len(outcomes) < workers and not results.empty():
        outcomes.append(results.get())
    errors = [str(detail) for kind, detail in outcomes if kind == "error"]
    errors += [f"{p.name} died (exit code {p.exitcode})" for p in procs if p.exitcode != 0]
    if len(outcomes) < workers and not errors:
        errors.append("a landing worker ended without a report")
    if errors:
        raise LandingError("; ".join(errors))
    merged = LandReport(run_id, "follow" if follow else "drain")
    for _, report in outcomes:
        assert isinstance(report, LandReport)  # no errors: every outcome is ("ok", its report)
        for key, part in report.partitions.items():
            earlier = merged.partitions.get(key)
            merged.partitions[key] = part if earlier is None else part.plus(earlier)
        merged.gaps += report.gaps
        merged.fenced += report.fenced
        merged.orphans_removed += report.orphans_removed
        merged.elapsed_s = max(merged.elapsed_s, report.elapsed_s)
        merged.process_peak_rss_mb += report.process_peak_rss_mb
    return merged


@dataclass(frozen=True)
class PartitionStatus:
    topic: str
    partition: int
    topic_id: str
    high_watermark: int | None  # None: the broker did not answer a fetch in time
    landed: int  # next offset to land (= messages landed for this incarnation)
    last_file: str | None
    last_landed_at: str | None

    @property
    def lag(self) -> int | None:
        return None if self.high_watermark is None else max(0, self.high_watermark - self.landed)


def landing_status(settings: Settings, timeout_s: float = 10.0) -> list[PartitionStatus]:
    """Per topic-partition: broker high watermark, landed offset, lag and the last file."""
    lander = Lander(settings)
    meta = lander._describe()
    files = manifest.files(lander.engine)
    last_file = {}
    for f in files:
        last_file[(f.topic, f.topic_id, f.partition)] = f
    consumer = kafka.consumer(settings, group_id=None)
    try:
        states = lander._track(meta)
        lander._seek(consumer, states)
        deadline = time.monotonic() + timeout_s
        waiting = {s.tp for s in states}
        while waiting and time.monotonic() < deadline:
            consumer.poll(timeout_ms=300, max_records=1)
            waiting = {tp for tp in waiting if consumer.highwater(tp) is None}
        out = []
        for s in states:
            last = last_file.get((s.topic, s.topic_id, s.partition))
            out.append(
                PartitionStatus(
                    topic=s.topic,
                    partition=s.partition,
                    topic_id=s.topic_id,
                    high_watermark=consumer.highwater(s.tp),
                    landed=s.expected or 0,
                    last_file=last.path if last else None,
                    last_landed_at=(
                        last.landed_at.isoformat(timespec="seconds")
                        if last and last.landed_at  # manifest rows always have it
                        else None
                    ),
                )
            )
        return out
    finally:
        consumer.close()
