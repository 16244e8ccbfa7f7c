"""Landing that scales out: services share the partitions through the consumer group, and the
manifest fences a lander that lost its partitions."""

import contextlib
import hashlib
import json
import signal
import subprocess
import sys
import threading
from collections import Counter, defaultdict

import pyarrow.parquet as pq

from consumers.landing import Lander, land
from tests.helpers import wait_for
from visitshare.db import engine_for
from visitshare.landing import manifest
from visitshare.producing import kafka
from visitshare.producing.topics import TopicSpec, apply_topics
from visitshare.settings import Settings

PARTITIONS = 6


def create_topic(settings: Settings, name: str, partitions: int) -> str:
    apply_topics(settings, [TopicSpec(name, partitions, 86_400_000)])
    return settings.topic(name)


def landed(settings: Settings, topic: str) -> list[manifest.RawFile]:
    return manifest.files(engine_for(settings), topic)


def next_offsets(settings: Settings, topic: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for f in landed(settings, topic):
        out[f.partition] = max(out.get(f.partition, 0), f.last_offset + 1)
    return out


def assert_landed_exactly_once(
    settings: Settings, topic: str, sent: dict[int, tuple[int, int]], partitions: int = PARTITIONS
):
    """Per partition, the manifest's files cover offsets 0..end once each (no overlap, no gap);
    their rows are the sent events, each once, at the offset it was sent to; the lake holds the
    manifest's files, byte for byte, and nothing else."""
    files = landed(settings, topic)
    ends: dict[int, int] = defaultdict(int)
    for partition, offset in sent.values():
        ends[partition] = max(ends[partition], offset + 1)
    for p in range(partitions):
        ranges = sorted((f.first_offset, f.last_offset) for f in files if f.partition == p)
        covered = [o for first, last in ranges for o in range(first, last + 1)]
        assert covered == list(range(ends[p])), f"partition {p}: {ranges}"
    where: Counter = Counter()
    for f in files:
        data = (settings.lake / f.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f.sha256
        table = pq.read_table(settings.lake / f.path, columns=["kafka_offset", "kafka_value"])
        offsets = table.column("kafka_offset").to_pylist()
        assert offsets == list(range(f.first_offset, f.last_offset + 1))
        for offset, value in zip(offsets, table.column("kafka_value").to_pylist(), strict=True):
            where[(json.loads(value)["id"], f.partition, offset)] += 1
    assert where == Counter({(i, p, o): 1 for i, (p, o) in sent.items()})
    raw = settings.lake / "raw"
    on_disk = {p.relative_to(settings.lake).as_posix() for p in raw.rglob("*") if p.is_file()}
    assert on_disk == {f.path for f in files}, "orphan or temporary files left in the lake"
    assert manifest.gaps(engine_for(settings)) == []


class Feed(threading.Thread):
    """Sends events with unique ids until stopped; `sent`: id → (partition, offset)."""

    def __init__(self, settings: Settings, topic: str):
        super().__init__(name="feed")
        self.settings, self.topic = settings, topic
        self.sent: dict[int, tuple[int, int]] = {}
        self.stop = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        producer = kafka.producer(self.settings)
        try:
            n = 0
            while not self.stop.is_set():
                batch = [
                    (i, producer.send(self.topic, key=b"%d" % i, value=b'{"id": %d}' % i))
                    for i in range(n, n + 20)
                ]
                producer.flush()
                for i, future in batch:
                    meta = future.get()
                    self.sent[i] = (meta.partition, meta.offset)
                n += len(batch)
                self.stop.wait(0.02)  # a steady stream, not a flood
        except Exception as exc:  # surfaced by the test
            self.error = exc
        finally:
            producer.close()


def log_tails(tmp_path) -> str:
    return "\n".join(
        f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        for log in sorted(tmp_path.glob("lander-*.log"))
    )


@contextlib.contextmanager
def landing_services(tmp_path, topic: str):
    """Starts `visitshare land --follow` processes on demand (the test's environment); every
    one still running at the end is killed, whatever happened."""
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        log = open(tmp_path / f"lander-{len(procs)}.log", "wb")  # noqa: SIM115 (the process's)
        cmd = [sys.executable, "-m", "visitshare.cli", "land", "--follow", "--topic", topic]
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        log.close()
        return procs[-1]

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


def test_landing_services_share_partitions_and_survive_a_kill(
    kafka_settings, monkeypatch, tmp_path
):
    """Three services land a topic of six partitions while events keep coming; one is killed
    (its partitions move to the others once its session expires), a fourth joins later (it is
    given partitions that others give up). Every offset lands exactly once."""
    monkeypatch.setenv("VISITSHARE_LAND_ROLL_SECONDS", "1")
    monkeypatch.setenv("VISITSHARE_LAND_ROLL_ROWS", "400")
    monkeypatch.setenv("VISITSHARE_LAND_METADATA_REFRESH_SECONDS", "2")
    settings = Settings()
    topic = create_topic(settings, "group.events", PARTITIONS)

    def landers_seen() -> int:  # runs with a file in the manifest
        return len({f.run_id for f in landed(settings, topic)})

    feed = Feed(settings, topic)
    with landing_services(tmp_path, topic) as start:
        services = [start() for _ in range(3)]
        feed.start()
        try:
            wait_for(lambda: landers_seen() >= 3, timeout_s=40)
            services[1].send_signal(signal.SIGKILL)
            services[1].wait(10)
            at_kill = next_offsets(settings, topic)
            # Every partition moves on, the killed one's too (its session expired).
            wait_for(
                lambda: all(
                    next_offsets(settings, topic).get(p, 0) > at_kill.get(p, 0)
                    for p in range(PARTITIONS)
                ),
                timeout_s=40,
            )
            services.append(start())
            wait_for(lambda: landers_seen() >= 4, timeout_s=40)  # it was given partitions
        finally:
            feed.stop.set()
            feed.join(30)
        assert feed.error is None, feed.error
        ends = {p: o + 1 for p, o in sorted(feed.sent.values())}
        wait_for(lambda: next_offsets(settings, topic) == ends, timeout_s=30)
        running = [s for s in services if s.poll() is None]
        assert len(running) == 3, "a landing service died"
        for service in running:
            service.send_signal(signal.SIGTERM)
        for service in running:
            assert service.wait(30) == 0, log_tails(tmp_path)
    assert_landed_exactly_once(settings, topic, feed.sent)


def follow_in_thread(settings: Settings, topic: str):
    """A landing service's follow loop in a thread: (lander, stop, thread, outcome box)."""
    lander, stop, box = Lander(settings, [topic]), threading.Event(), {}

    def run():
        try:
            box["report"] = lander.follow(stop)
        except Exception as exc:  # surfaced by the test
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return lander, stop, thread, box


def test_a_revoked_partition_is_dropped_and_landed_by_its_new_owner(kafka_settings, monkeypatch):
    """A lander holds both partitions' records in open files when a second one joins; the group
    moves one partition: its first owner drops what it held (no late commit, nothing fenced)
    and the new owner lands it from the manifest's next offset (here the very beginning)."""
    monkeypatch.setenv("VISITSHARE_LAND_ROLL_SECONDS", "600")  # files close only at the end
    settings = Settings()
    topic = create_topic(settings, "moved.events", 2)
    producer = kafka.producer(settings)
    sent = {i: producer.send(topic, key=b"%d" % i, value=b'{"id": %d}' % i) for i in range(200)}
    producer.flush()
    producer.close()
    sent = {i: (m.partition, m.offset) for i, m in ((i, f.get()) for i, f in sent.items())}
    first, stop_first, thread_first, box_first = follow_in_thread(settings, topic)
    try:
        wait_for(lambda: sum(st.rows for st in list(first._parts.values())) == 200)
        second, stop_second, thread_second, box_second = follow_in_thread(settings, topic)
        try:
            wait_for(lambda: len(first._parts) == 1 and len(second._parts) == 1)
        finally:
            stop_second.set()
            thread_second.join(30)
    finally:
        stop_first.set()
        thread_first.join(30)
    assert "error" not in box_first and "error" not in box_second
    kept, moved = box_first["report"], box_second["report"]
    assert (kept.fenced, moved.fenced) == (0, 0)
    assert len([p for p in kept.partitions.values() if p.rows]) == 1
    assert [p.first_offset for p in moved.partitions.values() if p.rows] == [0]
    assert kept.rows + moved.rows == 200
    assert_landed_exactly_once(settings, topic, sent, partitions=2)


def test_a_lander_that_lost_its_partition_is_fenced(kafka_settings, any_db, monkeypatch):
    """A lander stalls between writing a file and committing it (a GC pause, a revocation it
    has not seen yet, a network cut), and meanwhile the partition's new owner lands the same
    offsets, in files of the same ranges. The late commit is refused; the late file is removed,
    not the winner's; it counts nowhere; the stalled lander goes on from the manifest."""
    monkeypatch.setenv("VISITSHARE_LAND_ROLL_ROWS", "25")
    settings = Settings()  # with any_db's database
    topic = create_topic(settings, "fenced.events", 1)
    producer = kafka.producer(settings)
    for i in range(60):
        producer.send(topic, key=b"k", value=b'{"id": %d}' % i)
    producer.flush()
    producer.close()

    commit = manifest.record_file
    owner_reports = []
    stalled = Lander(settings, [topic])

    def stalled_commit(engine, f, **kwargs):
        if f.run_id == stalled.run_id and not owner_reports:  # its first commit waits...
            owner_reports.append(land(settings, [topic], workers=1))  # ...for the new owner
        return commit(engine, f, **kwargs)

    monkeypatch.setattr(manifest, "record_file", stalled_commit)
    report = stalled.drain()

    (owner,) = owner_reports
    assert (owner.rows, owner.files, owner.fenced) == (60, 3, 0)
    assert (report.rows, report.files, report.fenced) == (0, 0, 1)
    sent = {i: (0, i) for i in range(60)}
    assert_landed_exactly_once(settings, topic, sent, partitions=1)
    files = landed(settings, topic)
    assert sorted((f.first_offset, f.last_offset) for f in files) == [(0, 24), (25, 49), (50, 59)]
    assert {f.run_id for f in files} == {owner.run_id}
