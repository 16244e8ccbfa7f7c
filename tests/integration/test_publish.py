"""Publishing to a real broker: read back exactly what was sent, DLQ with reasons."""

import json
from collections import Counter, defaultdict

from kafka.partitioner.default import murmur2

from producers.publisher import Outgoing, Publisher
from producers.simulator import BAD_KINDS, SimConfig, Simulator
from tests.helpers import headers, partition_count, read_topic


def _publish(settings, contracts, config):
    events = list(Simulator(config, contracts).events())
    with Publisher(settings, contracts) as pub:
        report = pub.publish(Outgoing(e.dataset, e.payload) for e in events)
    return events, report


def test_published_events_read_back_exactly(kafka_settings, contracts):
    # Visits of contract versions 1 and 2 side by side, on one topic.
    config = SimConfig(days=2, seed=21, visit_v2_share=0.3)
    events, report = _publish(kafka_settings, contracts, config)
    assert report.reconciles() and report.outboxed == 0 and not report.rejected
    versions = Counter()
    for dataset, contract in (("visit_outcome", contracts.get("visit_outcome")),
                              ("incident_report", contracts.get("incident_report"))):  # fmt: skip
        topic = kafka_settings.topic(contract.topic)
        sent = [e.payload for e in events if e.dataset == dataset]
        records = read_topic(kafka_settings, topic, expected=len(sent))
        assert len(records) == len(sent) == report.delivered[topic]
        received = {headers(r)["event_id"].decode(): r for r in records}
        assert set(received) == {e["event_id"] for e in sent}  # each exactly once
        by_partition = defaultdict(list)
        for event in sent:
            r = received[event["event_id"]]
            assert json.loads(r.value) == event
            assert r.key == f"{event['municipality_code']}:{event['town']}".encode()
            h = headers(r)
            assert h["source_system"] == b"mpd-home-visit"
            assert h["contract"] == f"{dataset}.v{event['schema_version']}".encode()
            versions[h["contract"]] += 1
            by_partition[r.partition].append(r.offset)
        # Per partition, offsets follow the order the events were given in.
        for offsets in by_partition.values():
            assert offsets == sorted(offsets)
        # One key, one partition, the one Kafka's default partitioner picks (murmur2):
        # a town's events stay ordered, whoever produces them.
        count = partition_count(kafka_settings, topic)
        for r in records:
            assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % count
    assert set(versions) == {b"visit_outcome.v1", b"visit_outcome.v2", b"incident_report.v1"}


def test_bad_events_go_to_the_dlq_with_reasons_and_original_bytes(kafka_settings, contracts):
    events, report = _publish(kafka_settings, contracts, SimConfig(days=1, seed=8, bad_rate=1.0))
    assert report.reconciles() and report.delivered_total == 0
    assert report.dead_lettered_total == len(events)
    expected = sum(report.rejected.values())
    assert expected == len(events)
    dlq = []
    for contract in contracts:
        dlq += read_topic(kafka_settings, kafka_settings.topic(contract.topic) + ".dlq")
        assert read_topic(kafka_settings, kafka_settings.topic(contract.topic)) == []
    assert len(dlq) == len(events)
    by_value = {r.value: r for r in dlq}
    for e in events:
        raw = (
            e.payload
            if isinstance(e.payload, bytes)
            else json.dumps(e.payload, ensure_ascii=False, separators=(",", ":")).encode()
        )
        r = by_value[raw]  # byte-faithful
        h = headers(r)
        reasons = {v["reason"] for v in json.loads(h["dlq_violations"])}
        assert BAD_KINDS[e.bad_kind].value in reasons
        assert h["dlq_source_topic"].decode().endswith(contracts.get(e.dataset).topic)
        assert h["dlq_detail"]


def test_dlq_headers_carry_no_personal_values(kafka_settings, contracts):
    visit = next(
        e.payload for e in Simulator(SimConfig(days=1, seed=3), contracts).events()
        if e.dataset == "visit_outcome" and "phone" in e.payload
    )  # fmt: skip
    bad = {**visit, "phone": visit["phone"] + "9", "resident_name": "山田 花子" * 40}
    with Publisher(kafka_settings, contracts) as pub:
        report = pub.publish([Outgoing("visit_outcome", bad)])
    assert report.dead_lettered_total == 1
    (record,) = read_topic(
        kafka_settings, kafka_settings.topic("visits.outcomes.v1.dlq"), expected=1
    )
    header_text = b" ".join(v for _, v in record.headers).decode()
    assert visit["phone"] not in header_text and "山田" not in header_text
    assert "phone" in header_text and "resident_name" in header_text
