"""Police systems may produce with librdkafka: its current release talks to the embedded broker.

librdkafka 2.16 (the `confluent-kafka` wheel) produces to Tansu and what it sends lands and
validates like our own producer's events. (Debian bookworm's librdkafka 2.0.2, under kcat 1.7.1,
cannot: it misreads the tagged fields of Tansu's ApiVersions v3 response — "Read underflow" —
and `api.version.request=false` does not avoid the request. See README, embedded broker.)
"""

from __future__ import annotations

import json

from confluent_kafka import Producer

from producers.simulator import SimConfig, Simulator
from visitshare.db import engine_for
from visitshare.landing.manifest import files
from visitshare.quality.validate import validate


def test_librdkafka_producer_lands_and_validates(kafka_settings, contracts):
    from consumers.landing import land

    topic = kafka_settings.topic("visits.outcomes.v1")
    events = [
        e.payload
        for e in Simulator(
            SimConfig(days=1, seed=21, municipalities=("13104",)), contracts
        ).events()
        if e.dataset == "visit_outcome"
    ][:200]
    producer = Producer(
        {"bootstrap.servers": kafka_settings.bootstrap, "acks": "all", "enable.idempotence": True}
    )
    failures = []
    for e in events:
        producer.produce(
            topic,
            value=json.dumps(e, ensure_ascii=False).encode(),
            key=f"{e['municipality_code']}:{e['town']}".encode(),
            on_delivery=lambda err, _msg: err and failures.append(err),
        )
    assert producer.flush(30) == 0 and failures == []

    report = land(kafka_settings, [topic])
    assert report.rows == len(events)
    assert sum(f.row_count for f in files(engine_for(kafka_settings), topic)) == len(events)
    run = validate(kafka_settings, "visit_outcome")
    assert run.rows_in == run.valid == len(events)
