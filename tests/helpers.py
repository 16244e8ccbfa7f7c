"""Helpers shared by the tests: reading topics back from a real broker, free ports."""

from __future__ import annotations

import socket
import time

from kafka import TopicPartition

from visitshare.producing import kafka
from visitshare.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_topic(settings: Settings, topic: str, expected: int | None = None, timeout_s: float = 30):
    """Every record of `topic` from the beginning, in partition order.

    Reads until `expected` records arrived (then one more fetch, so extras would show) or,
    without `expected`, until two fetches in a row return nothing.
    """
    consumer = kafka.consumer(settings, group_id=None)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records = []
        empty = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500, max_records=5000)
            got = [r for rs in batch.values() for r in rs]
            records.extend(got)
            empty = 0 if got else empty + 1
            if expected is not None and len(records) >= expected and empty >= 1:
                break
            if expected is None and empty >= 2:
                break
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def headers(record) -> dict[str, bytes]:
    return dict(record.headers or [])


def partition_count(settings: Settings, topic: str) -> int:
    admin = kafka.admin(settings)
    try:
        (description,) = admin.describe_topics([topic])
        return len(description["partitions"])
    finally:
        admin.close()


def wait_for(condition, timeout_s: float = 30.0, every_s: float = 0.1) -> None:
    """Wait until `condition()` is true (a condition, not a duration: fails after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(every_s)


def land_values(
    settings: Settings, topic: str, values: list, headers=None, partition: int = 0
) -> None:
    """Raw-zone files for `values`, written by landing's own code without a broker.

    For tests of the stages after landing: their input is the raw zone, not Kafka.
    """
    from visitshare.bench.validate import write_raw_files

    write_raw_files(settings, topic, partition, values, headers)


def validated_zone(settings: Settings, contracts, days: int = 3, seed: int = 5, **sim) -> list:
    """Simulated events landed (without a broker) and validated; returns the events.

    By default the `days` days end with the latest month closed at `settings.clock`, so that a
    release publishes their record-level rows (`start=` moves them)."""
    from producers.simulator import CORE_DATASETS, SimConfig, Simulator
    from visitshare.quality.validate import validate
    from visitshare.release.records import closed_window

    if "start" not in sim:
        grace = contracts.get("visit_outcome").disclosure.close_after_days
        sim["start"] = closed_window(days, settings.clock.now(), grace)
    # The release's tests are written for visits and incidents; `datasets=` adds the others.
    sim.setdefault("datasets", CORE_DATASETS)
    config = SimConfig(days=days, seed=seed, **sim)
    events = list(Simulator(config, contracts, clock=settings.clock).events())
    for dataset in config.datasets:
        contract = contracts.get(dataset)
        values = [e.payload for e in events if e.dataset == dataset]
        land_values(settings, settings.topic(contract.topic), values)
        validate(settings, dataset)
    return events


def personal_values(events: list, contracts) -> set[str]:
    """Every direct identifier, free text and coordinate in `events`, as text (≥ 6 chars)."""
    from visitshare.contracts import PiiClass

    secret: set[str] = set()
    for dataset in sorted({e.dataset for e in events}):
        contract = contracts.get(dataset)
        personal = [
            f.name
            for f in contract.fields
            if f.pii in (PiiClass.DIRECT_IDENTIFIER, PiiClass.FREE_TEXT)
        ]
        personal += ["latitude", "longitude"]
        for e in events:
            if e.dataset == dataset and isinstance(e.payload, dict):
                secret |= {
                    str(e.payload[k])
                    for k in personal
                    if isinstance(e.payload.get(k), str | float) and len(str(e.payload[k])) >= 6
                }
    return secret


def first_landed_schema(engine) -> None:
    """A project database as the first landed version made it: `create_all`, no Alembic, and
    a `releases` table without the columns later revisions added."""
    import sqlalchemy as sa

    from visitshare.db.tables import curated_files, metadata, releases

    later_tables = {
        "record_batches",
        "aggregate_states",
        "dp_spend",
        "release_files",
        "share_tokens",
        "share_access_log",
    }
    old = sa.MetaData()
    for table in metadata.sorted_tables:
        if table not in (releases, curated_files) and table.name not in later_tables:
            table.to_metadata(old)
    later = {"plan_token", "completed_at", "closed_through", "full"}
    sa.Table("releases", old, *[c.copy() for c in releases.columns if c.name not in later])
    sa.Table(
        "curated_files",
        old,
        *[c.copy() for c in curated_files.columns if c.name != "seq"],
        *[sa.Index(i.name, *[c.name for c in i.columns]) for i in curated_files.indexes],
    )
    old.create_all(engine)
