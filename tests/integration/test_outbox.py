"""Broker outages: events wait in the outbox and arrive once, in order, when it is back."""

from collections import defaultdict

from producers.publisher import CHUNK, Outgoing, Publisher
from producers.simulator import SimConfig, Simulator
from tests.helpers import headers, read_topic
from visitshare.producing.topics import apply_topics

VISITS = "visits.outcomes.v1"


def _events(contracts, days=2, seed=31, bad_rate=0.0):
    return [
        Outgoing(e.dataset, e.payload)
        for e in Simulator(SimConfig(days=days, seed=seed, bad_rate=bad_rate), contracts).events()
    ]


def _visit_ids(items):
    return [
        i.payload["event_id"]
        for i in items
        if i.dataset == "visit_outcome" and isinstance(i.payload, dict)
    ]


def _partition_order(records):
    order = defaultdict(list)
    for r in records:
        order[r.partition].append(headers(r)["event_id"].decode())
    return order


def test_broker_stopped_mid_stream_then_back(own_broker, contracts):
    settings = own_broker.settings
    own_broker.start()
    apply_topics(settings)
    items = [i for i in _events(contracts) if i.dataset == "visit_outcome"]
    # The publisher takes events in chunks; stopping on a chunk boundary makes "before the
    # stop" exact: the first k events were handed over, the rest come after the outage.
    k = 2 * CHUNK
    assert len(items) > k + CHUNK
    before_stop = []

    def stream():
        for i, item in enumerate(items):
            if i == k:
                # Tansu keeps messages in memory only: read what arrived before stopping it.
                before_stop.extend(read_topic(settings, VISITS, expected=k))
                own_broker.stop()
            yield item

    with Publisher(settings, contracts) as pub:
        report = pub.publish(stream())
    assert report.reconciles()
    assert report.delivered_total == k == len(before_stop)
    assert report.outboxed == report.outbox_pending == len(items) - k
    assert "not confirmed" in report.broker_error or "unreachable" in report.broker_error

    own_broker.start()  # a new, empty broker
    apply_topics(settings)
    with Publisher(settings, contracts) as later:  # e.g. `visitshare outbox flush`
        flushed = later.flush_outbox()
        assert flushed.outbox_flushed == len(items) - k and flushed.outbox_pending == 0
        assert later.flush_outbox().outbox_flushed == 0  # nothing is sent twice

    after = read_topic(settings, VISITS, expected=len(items) - k)
    ids_before = [headers(r)["event_id"].decode() for r in before_stop]
    ids_after = [headers(r)["event_id"].decode() for r in after]
    assert sorted(ids_before + ids_after) == sorted(_visit_ids(items))  # every event, once
    assert not set(ids_before) & set(ids_after)
    # In order: per partition, the outbox delivered events in their original order.
    position = {eid: n for n, eid in enumerate(_visit_ids(items))}
    for ids in _partition_order(after).values():
        assert ids == sorted(ids, key=position.get)


def test_unreachable_at_start_then_outbox_goes_first(own_broker, contracts):
    settings = own_broker.settings
    items = _events(contracts, days=1, seed=32, bad_rate=0.05)
    first, second = items[: len(items) // 2], items[len(items) // 2 :]
    with Publisher(settings, contracts) as pub:  # broker not started yet
        report = pub.publish(first)
    assert report.outboxed == len(first) and report.delivered_total == 0
    assert "unreachable" in report.broker_error
    assert sum(report.rejected.values()) > 0  # bad events wait in the outbox too, as DLQ records

    own_broker.start()
    apply_topics(settings)
    with Publisher(settings, contracts) as pub:
        report = pub.publish(second)
    assert report.outbox_flushed == len(first) and report.outbox_pending == 0
    assert report.reconciles() and report.outboxed == 0

    with Publisher(settings, contracts) as pub:
        prepared = [(i, pub.prepare(i)) for i in items]
    good = [
        i.payload["event_id"]
        for i, rec in prepared
        if rec.kind == "event" and i.dataset == "visit_outcome"
    ]
    n_dlq = sum(1 for i, rec in prepared if rec.kind == "dlq" and i.dataset == "visit_outcome")
    records = read_topic(settings, VISITS, expected=len(good))
    got = [headers(r)["event_id"].decode() for r in records]
    assert sorted(got) == sorted(good)  # each exactly once
    position = {eid: n for n, eid in enumerate(good)}
    for ids in _partition_order(records).values():
        assert ids == sorted(ids, key=position.get)  # outbox (first half) before the second half
    assert len(read_topic(settings, VISITS + ".dlq", expected=n_dlq)) == n_dlq > 0
