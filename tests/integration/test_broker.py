"""The embedded broker: start, status, stop only our own process, clear errors."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.helpers import free_port
from visitshare.producing.broker import BrokerError, EmbeddedBroker
from visitshare.producing.topics import TopicAction, apply_topics
from visitshare.settings import Settings


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "visitshare.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_start_status_second_start_and_stop(own_broker):
    status, started = own_broker.start()
    assert started and status.running and status.pid
    assert own_broker.pid_path.exists() and own_broker.log_path.exists()
    # The broker answers the Kafka protocol.
    results = apply_topics(own_broker.settings)
    assert {r.action for r in results} == {TopicAction.CREATED}

    again, started_again = own_broker.start()
    assert not started_again and again.pid == status.pid
    out = cli("broker", "start")
    assert out.returncode == 0 and "already running" in out.stdout

    assert own_broker.stop()
    assert not own_broker.status().running and not own_broker.pid_path.exists()
    out = cli("broker", "status")
    assert out.returncode == 3 and "not running" in out.stdout


def test_a_taken_port_gives_a_clear_error(own_broker):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", own_broker.settings.broker_port))
        squatter.listen()
        with pytest.raises(BrokerError, match=r"already taken by another process"):
            own_broker.start()
        out = cli("broker", "start")
        assert out.returncode == 1 and "already taken" in out.stderr
    assert not own_broker.pid_path.exists()


def test_stop_never_signals_a_process_that_is_not_ours(own_broker):
    """A stale PID file naming a live, unrelated process (a recycled PID) is ignored."""
    own_broker.dir.mkdir(parents=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        own_broker.pid_path.write_text(json.dumps({"pid": bystander.pid}))
        assert not own_broker.status().running
        assert not own_broker.stop()
        assert bystander.poll() is None  # still alive
    finally:
        bystander.kill()
        bystander.wait()


def test_external_bootstrap_starts_nothing(isolated_env, monkeypatch):
    monkeypatch.setenv("VISITSHARE_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    out = cli("broker", "start")
    assert out.returncode == 0 and "nothing to start" in out.stdout
    assert not (isolated_env / "broker").exists()
    with pytest.raises(BrokerError, match="external cluster"):
        EmbeddedBroker(Settings()).start()


def test_topics_apply_is_idempotent_and_reports_drift(kafka_settings):
    again = apply_topics(kafka_settings)
    assert {r.action for r in again} == {TopicAction.EXISTS}
    # Declaring more partitions: Kafka adds them; Tansu cannot (reported, not crashed).
    from visitshare.producing.topics import TopicSpec

    grow = apply_topics(kafka_settings, [TopicSpec("releases.v1", 3, 1000)])
    assert grow[0].action in (TopicAction.GREW, TopicAction.FAILED)
    if grow[0].action is TopicAction.FAILED:
        assert "1 partitions, 3 declared" in grow[0].detail
    shrink = apply_topics(kafka_settings, [TopicSpec("visits.outcomes.v1", 2, 1000)])
    assert shrink[0].action is TopicAction.DRIFT and "cannot shrink" in shrink[0].detail


def test_topics_apply_with_replication_settings_on_the_embedded_broker(kafka_settings):
    """Per-topic min.insync.replicas and replication factor reach Tansu, which
    creates the topics, and acks=all sends to them succeed."""
    from visitshare.producing import kafka
    from visitshare.producing.topics import TopicSpec

    settings = kafka_settings.model_copy(update={"topic_min_insync_replicas": 1})
    specs = [
        TopicSpec("layout.default.v1", 2, 60_000),
        TopicSpec("layout.own.v1", 1, 60_000, replication_factor=1, min_insync_replicas=1),
    ]  # fmt: skip
    results = apply_topics(settings, specs)
    assert [r.action for r in results] == [TopicAction.CREATED] * 2, [r.detail for r in results]
    assert [r.action for r in apply_topics(settings, specs)] == [TopicAction.EXISTS] * 2
    producer = kafka.producer(settings)
    try:
        for spec in specs:
            producer.send(settings.topic(spec.name), b"x", key=b"k").get(timeout=10)
    finally:
        producer.close()


def test_the_pid_file_names_our_process(own_broker):
    status, _ = own_broker.start()
    info = json.loads(own_broker.pid_path.read_text())
    assert info["pid"] == status.pid and info["listener"].endswith(
        str(own_broker.settings.broker_port)
    )
    os.kill(status.pid, 0)  # alive
