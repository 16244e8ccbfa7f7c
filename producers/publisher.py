"""Publishing events to Kafka: validate against the contract, then send, confirmed per event.

- Valid events go to the contract's topic, keyed by the contract's key fields
  (municipality code + town), with the event_id, the source system and the contract version
  in headers. Each event is checked against the version of the dataset's contract its
  `schema_version` names (v1 and v2 events of one dataset are sent side by side).
- Invalid events never reach the main topic: they go to `<topic>.dlq` with their original
  bytes and headers that say why (reason codes and field names, never the values).
- When the broker cannot take events (unreachable at start, or a send not confirmed within the
  delivery timeout), events go to the durable outbox in their original order; the outbox is
  sent first, in order, the next time a publisher runs or by `visitshare outbox flush`.

Every event ends in exactly one of: delivered, dead-lettered, outboxed (`PublishReport`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.future import Future

from producers.outbox import Headers, Outbox, OutboxRecord
from visitshare.contracts import Contract, ContractRegistry, EventValidator, Violation
from visitshare.errors import VisitShareError
from visitshare.producing import kafka
from visitshare.producing.topics import dlq_topic
from visitshare.settings import Settings

log = logging.getLogger(__name__)

OUTBOX_BATCH = 2000
CHUNK = 256


class PublishError(VisitShareError):
    """Publishing cannot start (e.g. a topic is missing); nothing was sent."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event to publish: a decoded event (dict) or the raw bytes a source system gave."""

    dataset: str  # contract name, e.g. "visit_outcome"
    payload: dict | bytes
    # Problems a source found before the contract could look (e.g. a CSV row of the wrong
    # shape): the payload goes to the DLQ with them, as it is.
    problems: tuple[Violation, ...] = ()


@dataclass
class PublishReport:
    events_in: int = 0
    delivered: Counter = field(default_factory=Counter)  # topic → events confirmed
    dead_lettered: Counter = field(default_factory=Counter)  # (dlq topic, reason) → confirmed
    rejected: Counter = field(default_factory=Counter)  # reason → events that failed the contract
    outboxed: int = 0  # this run's events waiting in the outbox
    outbox_flushed: int = 0  # earlier events the outbox delivered during this run
    outbox_pending: int = 0  # rows left in the outbox at the end
    bytes_sent: int = 0
    elapsed_s: float = 0.0
    broker_error: str | None = None

    @property
    def delivered_total(self) -> int:
        return sum(self.delivered.values())

    @property
    def dead_lettered_total(self) -> int:
        return sum(self.dead_lettered.values())

    def reconciles(self) -> bool:
        """Every event that came in ended delivered, dead-lettered or outboxed."""
        return self.events_in == self.delivered_total + self.dead_lettered_total + self.outboxed

    @property
    def rate(self) -> float:
        return self.events_in / self.elapsed_s if self.elapsed_s else 0.0


@dataclass(frozen=True)
class _Route:
    """Where and how events of one contract are sent."""

    validator: EventValidator
    topic: str
    key_fields: tuple[str, ...]
    # Headers per contract version (the `contract` header names the event's own version);
    # `headers` (the latest's) for an event that names no version with a contract.
    headers: tuple[tuple[str, bytes], ...]
    by_version: dict[int, tuple[tuple[str, bytes], ...]]

    def headers_of(self, event: dict) -> tuple[tuple[str, bytes], ...]:
        number = event.get("schema_version")
        return self.by_version.get(number, self.headers) if type(number) is int else self.headers


class Publisher:
    def __init__(
        self,
        settings: Settings,
        contracts: ContractRegistry,
        *,
        source_system: str | None = None,
    ):
        self.settings = settings
        self.contracts = contracts
        self.source_system = (source_system or settings.source_system).encode()
        tolerance = timedelta(seconds=settings.future_tolerance_seconds)
        # Each event is checked against the contract version its schema_version names.
        self._validators = {
            c.name: contracts.validator(
                c.name,
                max_event_bytes=settings.max_event_bytes,
                future_tolerance=tolerance,
                clock=settings.clock,
            )
            for c in contracts
        }
        self._topics = {c.name: settings.topic(c.topic) for c in contracts}
        self._routes = {
            c.name: _Route(
                validator=self._validators[c.name],
                topic=self._topics[c.name],
                key_fields=tuple(c.key),
                headers=self._headers(c),
                by_version={v.version: self._headers(v) for v in contracts.compatible(c.name)},
            )
            for c in contracts
        }
        self._partition = kafka.KeyPartitions()
        self._sent: Counter = Counter()  # (topic, reason) → sends not (yet) failed
        self._bytes = 0
        self._started = 0.0
        self.outbox = Outbox(settings.outbox_path, settings.clock)
        self._producer: KafkaProducer | None = None
        self._error: str | None = None  # set once the broker failed us in this run
        self._failed: list[tuple[int, OutboxRecord]] = []
        self._report = PublishReport()

    def _headers(self, contract: Contract) -> tuple[tuple[str, bytes], ...]:
        return (
            ("source_system", self.source_system),
            ("contract", contract.id.encode()),
            ("content_type", b"application/json"),
        )

    # -- connection ---------------------------------------------------------------------------
    def _connect(self) -> bool:
        """Open the producer and check the topics; False (and outbox mode) if unreachable."""
        if self._producer is not None:
            return True
        needed = sorted({*self._topics.values()} | {dlq_topic(t) for t in self._topics.values()})
        try:
            admin = kafka.admin(self.settings)
            try:
                existing = set(admin.list_topics())
            finally:
                admin.close()
            missing = [t for t in needed if t not in existing]
            if missing:
                raise PublishError(
                    f"topics missing on {self.settings.bootstrap}: {', '.join(missing)}; "
                    "run `visitshare topics apply`"
                )
            self._producer = kafka.producer(self.settings)
        except (KafkaError, OSError) as exc:
            self._broker_failed(f"broker {self.settings.bootstrap} unreachable: {exc}")
            return False
        return True

    @property
    def _connected(self) -> KafkaProducer:
        """The open producer: sends happen only after `_connect()` succeeded and before the
        broker failed (a failure sets `_error`, which stops sending)."""
        assert self._producer is not None, "no open producer"
        return self._producer

    def _broker_failed(self, reason: str) -> None:
        if self._error is None:
            self._error = reason
            log.warning("%s; events go to the outbox %s", reason, self.outbox.path)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None
        self.outbox.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- preparing records --------------------------------------------------------------------
    def prepare(self, item: Outgoing) -> OutboxRecord:
        """Validate and serialize one event into the record to send (main topic or DLQ)."""
        route = (
            self._routes.get(item.dataset) or self._routes[self.contracts.get(item.dataset).name]
        )
        validator = route.validator
        payload = item.payload
        key: bytes | None
        headers: Headers | None
        if item.problems:
            raw = payload if isinstance(payload, bytes) else _dumps(payload)
            decoded, problems = None, list(item.problems)
        elif type(payload) is dict:
            raw = _dumps(payload)
            if len(raw) <= validator.max_event_bytes and validator.is_valid(payload):
                # The common case, kept short: a valid event has its key fields and event_id
                # as strings (the contract requires them).
                key = ":".join([payload[k] for k in route.key_fields]).encode()
                headers = [
                    *route.by_version[payload["schema_version"]],
                    ("event_id", payload["event_id"].encode()),
                ]
                return OutboxRecord(route.topic, key, raw, headers, "event")
            decoded, problems = payload, validator.check_size(raw) or validator.explain(payload)
        else:
            assert not isinstance(payload, dict)  # only an exact dict is an event; else bytes
            raw = payload
            decoded, problems = validator.decode(raw)
            if not problems:
                problems = validator.validate(decoded)
        key = headers = None
        base = route.headers
        if type(decoded) is dict:
            key = _key(route.key_fields, decoded)
            base = route.headers_of(decoded)
            event_id = decoded.get("event_id")
            if type(event_id) is str and len(event_id) <= 64:
                headers = [*base, ("event_id", event_id.encode())]
        headers = headers or list(base)
        if not problems:
            return OutboxRecord(route.topic, key, raw, headers, "event")
        return OutboxRecord(
            dlq_topic(route.topic), key, raw, headers + _dlq_headers(route.topic, problems, self.settings.clock.now()), "dlq",
            problems[0].reason.value,
        )  # fmt: skip

    # -- sending ------------------------------------------------------------------------------
    def _send_all(self, records: list[OutboxRecord], seq: int) -> list[OutboxRecord]:
        """Hand records to the producer; returns those left unsent because the broker failed.

        Sends are counted here and failures taken back in the errback: after flush() every
        future has resolved, so "sent and not failed" is "confirmed by the broker".
        """
        send, on_failure = self._connected.send, self._on_failure
        counts = self._partition_counts({r.topic for r in records})
        handed, rest = records, []
        for i, rec in enumerate(records):
            if self._error is not None:
                handed, rest = records[:i], records[i:]
                break
            count = counts.get(rec.topic)
            partition = (
                None if rec.key is None or not count else self._partition(rec.topic, count, rec.key)
            )
            try:
                future = send(
                    rec.topic,
                    key=rec.key,
                    value=rec.value,
                    headers=rec.headers,
                    partition=partition,
                )
            except KafkaError as exc:
                on_failure(seq + i, rec, exc)
                continue
            future.add_errback(on_failure, seq + i, rec)
        self._sent.update([(r.topic, r.reason) for r in handed])
        self._bytes += sum([len(r.value) for r in handed])
        return rest

    def _partition_counts(self, topics: set[str]) -> dict[str, int]:
        """Partition count per topic from the producer's metadata (empty if unknown yet)."""
        counts = {}
        for topic in topics:
            with contextlib.suppress(KafkaError):
                counts[topic] = len(self._connected.partitions_for(topic) or ())
        return counts

    def _settle(self) -> None:
        """Wait until every send in flight is confirmed or has expired (bounded)."""
        with contextlib.suppress(KafkaError):
            self._connected.flush(timeout=self.settings.delivery_timeout_ms / 1000 + 5)

    def _on_failure(self, seq: int, rec: OutboxRecord, exc: Exception) -> None:
        self._failed.append((seq, rec))
        self._broker_failed(f"delivery to {rec.topic} not confirmed: {exc}")

    def _divert_failed(self) -> None:
        """Let in-flight sends settle, then queue every unconfirmed one in original order."""
        if self._producer is not None:
            self._settle()
            self._producer.close(timeout=0)
            self._producer = None
        failed = sorted(self._failed, key=lambda x: x[0])
        self._failed.clear()
        for _, rec in failed:
            self._sent[(rec.topic, rec.reason)] -= 1
            self._bytes -= len(rec.value)
        self._report.outboxed += self.outbox.append(rec for _, rec in failed)

    def publish(
        self, items: Iterable[Outgoing], progress: Callable[[int], None] | None = None
    ) -> PublishReport:
        """Publish all items; returns where each ended. Sends the outbox's backlog first."""
        report = self._start_run()
        if self.outbox.pending():
            self._flush_outbox()  # older events first: that keeps the original order
        else:
            self._connect()
        queued: list[OutboxRecord] = []
        n = 0
        for chunk in _chunks(items, CHUNK):
            # Prepare a chunk, then send it: each loop stays hot in the CPU caches.
            records = [self.prepare(item) for item in chunk]
            report.rejected.update([r.reason for r in records if r.reason is not None])
            if self._error is None:
                records = self._send_all(records, n)
            if records:  # the broker failed us: from here on, everything goes to the outbox
                if self._producer is not None or self._failed:
                    self._divert_failed()
                queued.extend(records)
                if len(queued) >= OUTBOX_BATCH:
                    report.outboxed += self.outbox.append(queued)
                    queued.clear()
            n += len(chunk)
            if progress is not None:
                progress(len(chunk))
        report.events_in = n
        if self._producer is not None:
            self._producer.flush()  # no timeout: every future resolves (or expires) first
        if self._failed:
            self._divert_failed()
        report.outboxed += self.outbox.append(queued)
        return self._finish_run()

    def flush_outbox(self) -> PublishReport:
        """Send the outbox's backlog, oldest first; stops at the first unconfirmed send."""
        self._start_run()
        self._flush_outbox()
        return self._finish_run()

    def _start_run(self) -> PublishReport:
        self._report = PublishReport()
        self._error = None
        self._sent = Counter()
        self._bytes = 0
        self._started = time.perf_counter()
        return self._report

    def _finish_run(self) -> PublishReport:
        report = self._report
        for (topic, reason), n in self._sent.items():
            if n and reason is None:
                report.delivered[topic] += n
            elif n:
                report.dead_lettered[(topic, reason)] += n
        report.bytes_sent += self._bytes
        report.outbox_pending = self.outbox.pending()
        report.broker_error = self._error
        report.elapsed_s = time.perf_counter() - self._started
        return report

    def _flush_outbox(self) -> None:
        report = self._report
        while self._error is None and self._connect():
            batch = self.outbox.peek(OUTBOX_BATCH)
            if not batch:
                return
            futures = []
            for rec in batch:
                try:
                    future = self._connected.send(
                        rec.topic, key=rec.key, value=rec.value, headers=rec.headers
                    )
                except KafkaError as exc:
                    future = Future()
                    future.failure(exc)
                futures.append((rec, future))
            self._settle()
            confirmed = [rec.stored_seq for rec, f in futures if f.succeeded()]
            # Delete only confirmed rows; the first failure stops the flush to keep the order.
            self.outbox.delete(confirmed)
            report.outbox_flushed += len(confirmed)
            for rec, f in futures:
                if f.succeeded():
                    report.bytes_sent += len(rec.value)
            if len(confirmed) < len(batch):
                why = next(f.exception or "timed out" for _, f in futures if not f.succeeded())
                self._broker_failed(f"outbox flush stopped: {why}")
                self._connected.close(timeout=0)
                self._producer = None


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _dumps(event: dict) -> bytes:
    # Compact UTF-8 JSON; same bytes as json.dumps(ensure_ascii=False, separators=(",", ":")).
    return orjson.dumps(event)


def _key(fields: tuple[str, ...], event: dict) -> bytes | None:
    """Contract key fields joined by ':' (e.g. b"13104:西新宿"); None if any is unusable."""
    parts = []
    for name in fields:
        part = event.get(name)
        if type(part) is not str or not 0 < len(part) <= 100:
            return None
        parts.append(part)
    return ":".join(parts).encode()


def _dlq_headers(topic: str, problems: list[Violation], at: datetime) -> list[tuple[str, bytes]]:
    first = problems[0]
    detail = "; ".join(p.message for p in problems)[:1000]
    return [
        ("dlq_reason", first.reason.value.encode()),
        ("dlq_detail", detail.encode()),
        (
            "dlq_violations",
            json.dumps([{"reason": p.reason.value, "field": p.field} for p in problems]).encode(),
        ),
        ("dlq_source_topic", topic.encode()),
        ("dlq_stage", b"producer"),
        ("dlq_at", at.isoformat(timespec="milliseconds").encode()),
    ]
