"""Landing on a real broker: exactly once, rolling, restarts, new topics, bad conditions."""

import hashlib
import threading
from collections import defaultdict

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from consumers.landing import Lander, land, landing_status
from producers.publisher import Outgoing, Publisher
from producers.simulator import SimConfig, Simulator
from tests.helpers import read_topic, wait_for
from visitshare.db import engine_for
from visitshare.landing import manifest
from visitshare.landing.errors import LandingError
from visitshare.producing import kafka
from visitshare.producing.topics import TopicSpec, apply_topics
from visitshare.settings import Settings

VISITS = "visits.outcomes.v1"


def publish(settings, contracts, days=1, seed=1, bad_rate=0.0):
    events = Simulator(SimConfig(days=days, seed=seed, bad_rate=bad_rate), contracts).events()
    with Publisher(settings, contracts) as pub:
        report = pub.publish(Outgoing(e.dataset, e.payload) for e in events)
    assert report.outboxed == 0
    return report


def landed_table(settings, topic) -> pa.Table:
    files = manifest.files(engine_for(settings), settings.topic(topic))
    return (
        pa.concat_tables([pq.read_table(settings.lake / f.path) for f in files]) if files else None
    )


def assert_exactly_once(settings, topic, high_watermarks: dict[int, int]):
    """Every offset of every partition landed exactly once, in contiguous files, checksums ok."""
    engine = engine_for(settings)
    by_partition = defaultdict(list)
    for f in manifest.files(engine, settings.topic(topic)):
        by_partition[f.partition].append(f)
        data = (settings.lake / f.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f.sha256 and len(data) == f.bytes
        offsets = (
            pq.read_table(settings.lake / f.path, columns=["kafka_offset"]).column(0).to_pylist()
        )
        assert offsets == list(range(f.first_offset, f.last_offset + 1))
    for p, hw in high_watermarks.items():
        files = sorted(by_partition[p], key=lambda f: f.first_offset)
        covered = [o for f in files for o in range(f.first_offset, f.last_offset + 1)]
        assert covered == list(range(hw)), f"partition {p}"


def source_counts(settings, topic) -> dict[int, int]:
    counts = defaultdict(int)
    for r in read_topic(settings, settings.topic(topic)):
        counts[r.partition] += 1
    return dict(counts)


@pytest.mark.parametrize("workers", [1, 2])
def test_drain_lands_every_message_exactly_once(kafka_settings, contracts, monkeypatch, workers):
    published = publish(kafka_settings, contracts, days=2, bad_rate=0.05)
    report = land(kafka_settings, workers=workers)
    rows = report.rows_by_topic()
    assert rows[kafka_settings.topic(VISITS)] == published.delivered[kafka_settings.topic(VISITS)]
    dlq_sent = sum(
        n
        for (t, _), n in published.dead_lettered.items()
        if t.startswith(kafka_settings.topic(VISITS))
    )
    assert rows[kafka_settings.topic(VISITS + ".dlq")] == dlq_sent > 0
    for topic in (VISITS, VISITS + ".dlq", "incidents.reports.v1"):
        assert_exactly_once(kafka_settings, topic, source_counts(kafka_settings, topic))
    # Byte-faithful: the landed values are exactly the messages on the topic.
    source = {
        (r.partition, r.offset): r.value
        for r in read_topic(kafka_settings, kafka_settings.topic(VISITS))
    }
    table = landed_table(kafka_settings, VISITS)
    landed = dict(
        zip(
            zip(
                table.column("kafka_partition").to_pylist(),
                table.column("kafka_offset").to_pylist(),
                strict=True,
            ),
            table.column("kafka_value").to_pylist(),
            strict=True,
        )
    )
    assert landed == source
    assert set(table.column("parse_status").to_pylist()) == {"ok"}
    dlq = landed_table(kafka_settings, VISITS + ".dlq")
    assert {"invalid_json", "invalid_utf8"} <= set(dlq.column("parse_status").to_pylist())
    # A second drain finds nothing new.
    again = land(kafka_settings, workers=workers)
    assert again.rows == 0


def test_next_drain_lands_only_what_is_new(kafka_settings, contracts):
    publish(kafka_settings, contracts, seed=1)
    first = land(kafka_settings, workers=1)
    publish(kafka_settings, contracts, seed=2)
    second = land(kafka_settings, workers=1)
    assert first.rows > 0 and second.rows > 0
    assert_exactly_once(kafka_settings, VISITS, source_counts(kafka_settings, VISITS))


def test_files_roll_by_rows_and_by_bytes(kafka_settings, contracts, monkeypatch):
    publish(kafka_settings, contracts)
    monkeypatch.setenv("VISITSHARE_LAND_ROLL_ROWS", "100")
    land(Settings(), [kafka_settings.topic(VISITS)], workers=1)
    files = manifest.files(engine_for(kafka_settings), kafka_settings.topic(VISITS))
    assert max(f.row_count for f in files) == 100 and len(files) > 6
    monkeypatch.setenv("VISITSHARE_LAND_ROLL_ROWS", "100000")
    monkeypatch.setenv("VISITSHARE_LAND_ROLL_BYTES", "40000")  # ~ 40 records of ~700 B + overhead
    publish(kafka_settings, contracts, seed=3)
    report = land(Settings(), [kafka_settings.topic(VISITS)], workers=1)
    new = [
        f
        for f in manifest.files(engine_for(kafka_settings), kafka_settings.topic(VISITS))
        if f.run_id == report.run_id
    ]
    assert len(new) > 6 and max(f.row_count for f in new) < 100
    assert_exactly_once(kafka_settings, VISITS, source_counts(kafka_settings, VISITS))


def _follow(settings, topics=None):
    stop = threading.Event()
    box = {}

    def run():
        try:
            box["report"] = Lander(settings, topics).follow(stop)
        except Exception as exc:  # surfaced by the test
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return stop, thread, box


def test_follow_rolls_by_age_and_restarts_after_a_graceful_stop(
    kafka_settings, contracts, monkeypatch
):
    monkeypatch.setenv("VISITSHARE_LAND_ROLL_SECONDS", "0.5")
    settings = Settings()
    topic = settings.topic(VISITS)
    stop, thread, box = _follow(settings, [topic])
    try:
        first = publish(settings, contracts, seed=4).delivered[topic]
        # No more data arrives, yet the open files close by age and land.
        wait_for(
            lambda: sum(f.row_count for f in manifest.files(engine_for(settings), topic)) == first
        )
    finally:
        stop.set()
        thread.join(30)
    assert "error" not in box and box["report"].rows == first
    second = publish(settings, contracts, seed=5).delivered[topic]
    stop, thread, box = _follow(settings, [topic])
    try:
        wait_for(
            lambda: (
                sum(f.row_count for f in manifest.files(engine_for(settings), topic))
                == first + second
            )
        )
    finally:
        stop.set()
        thread.join(30)
    assert box["report"].rows == second
    assert_exactly_once(settings, VISITS, source_counts(settings, VISITS))


def test_a_topic_that_appears_later_is_picked_up(kafka_settings, contracts, monkeypatch):
    monkeypatch.setenv("VISITSHARE_LAND_METADATA_REFRESH_SECONDS", "0.3")
    monkeypatch.setenv("VISITSHARE_LAND_ROLL_SECONDS", "0.3")
    settings = Settings()
    late = settings.topic("late.topic")
    stop, thread, box = _follow(settings, [late])
    try:
        apply_topics(settings, [TopicSpec("late.topic", 2, 86_400_000)])
        producer = kafka.producer(settings)
        for i in range(20):
            producer.send(late, key=b"k%d" % i, value=b'{"n": %d}' % i)
        producer.flush()
        producer.close()
        wait_for(lambda: sum(f.row_count for f in manifest.files(engine_for(settings), late)) == 20)
    finally:
        stop.set()
        thread.join(30)
    assert "error" not in box
    table = landed_table(settings, "late.topic")
    assert sorted(table.column("kafka_value").to_pylist()) == sorted(
        b'{"n": %d}' % i for i in range(20)
    )
    assert set(table.column("parse_status").to_pylist()) == {"no_contract"}


def test_a_recreated_topic_lands_as_a_new_incarnation(kafka_settings, contracts):
    settings = kafka_settings
    topic = settings.topic("releases.v1")

    def send(n):
        producer = kafka.producer(settings)
        for i in range(n):
            producer.send(topic, key=b"r", value=b'{"release": %d}' % i)
        producer.flush()
        producer.close()

    send(5)
    land(settings, [topic], workers=1)
    admin = kafka.admin(settings)
    admin.delete_topics([topic])
    admin.close()
    wait_for(lambda: topic not in kafka.admin(settings).list_topics())
    apply_topics(settings, [TopicSpec("releases.v1", 3, 86_400_000)])  # now 3 partitions
    send(9)
    report = land(settings, [topic], workers=1)
    assert report.rows == 9
    files = manifest.files(engine_for(settings), topic)
    assert len({f.topic_id for f in files}) == 2
    assert sum(f.row_count for f in files) == 14
    assert all((settings.lake / f.path).exists() for f in files)


def test_missing_topic_is_a_clear_error(kafka_settings):
    with pytest.raises(LandingError, match=r"topics not on .*: nope\.topic .*topics apply"):
        land(kafka_settings, ["nope.topic"], workers=1)


def test_status_shows_high_watermark_landed_and_lag(kafka_settings, contracts):
    published = publish(kafka_settings, contracts)
    before = {(r.topic, r.partition): r for r in landing_status(kafka_settings)}
    topic = kafka_settings.topic(VISITS)
    assert sum(r.lag for (t, _), r in before.items() if t == topic) == published.delivered[topic]
    land(kafka_settings, workers=1)
    after = landing_status(kafka_settings)
    assert all(r.lag == 0 for r in after)
    assert all(r.last_file for r in after if r.topic == topic)


def test_manifest_on_postgres(kafka_settings, contracts, pg_url, monkeypatch):
    monkeypatch.setenv("VISITSHARE_DATABASE_URL", pg_url)
    settings = Settings()
    published = publish(settings, contracts)
    report = land(settings, workers=2)
    assert (
        report.rows_by_topic()[settings.topic(VISITS)]
        == published.delivered[settings.topic(VISITS)]
    )
    assert engine_for(settings).dialect.name == "postgresql"
    assert_exactly_once(settings, VISITS, source_counts(settings, VISITS))
