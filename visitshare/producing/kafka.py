"""Kafka clients configured from settings, in one place (kafka-python).

Choices that matter on the embedded Tansu broker live here: acks=all, short group
timeouts, no reliance on `end_offsets()`. They are also correct on Apache Kafka.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.partitioner.default import murmur2

from visitshare.settings import Settings

# kafka-python logs every reconnect attempt at WARNING/ERROR; our code reports outages itself.
for _name in ("kafka", "kafka.conn", "kafka.client", "kafka.producer", "kafka.coordinator"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


def client_options(settings: Settings) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap.split(","),
        "client_id": settings.kafka_client_id,
        "security_protocol": settings.kafka_security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
        "bootstrap_timeout_ms": settings.kafka_connect_timeout_ms,
    }
    if settings.kafka_sasl_mechanism:
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism
        opts["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            opts["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return opts


def producer_options(settings: Settings) -> dict[str, Any]:
    """Durable, ordered, idempotent sends: acks=all (acks=0 loses messages on Tansu)."""
    return {
        **client_options(settings),
        "acks": "all",
        "enable_idempotence": True,
        "max_in_flight_requests_per_connection": 5,
        "compression_type": None if settings.compression == "none" else settings.compression,
        "linger_ms": settings.producer_linger_ms,
        "batch_size": settings.producer_batch_bytes,
        "delivery_timeout_ms": settings.delivery_timeout_ms,
        "request_timeout_ms": min(settings.request_timeout_ms, settings.delivery_timeout_ms - 1),
        # Fail fast when the cluster is unreachable: the outbox takes over.
        "max_block_ms": min(10_000, settings.delivery_timeout_ms),
        "allow_auto_create_topics": False,
    }


def producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    return KafkaProducer(**{**producer_options(settings), **overrides})


def consumer_options(settings: Settings) -> dict[str, Any]:
    return {
        **client_options(settings),
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # Tansu's default group join takes ~23 s; these give ~3 s.
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "request_timeout_ms": max(settings.request_timeout_ms, 7000),
    }


def consumer(settings: Settings, **overrides: Any) -> KafkaConsumer:
    return KafkaConsumer(**{**consumer_options(settings), **overrides})


def admin(settings: Settings, **overrides: Any) -> KafkaAdminClient:
    return KafkaAdminClient(**{**client_options(settings), **overrides})


class KeyPartitions:
    """Kafka's default partition for a keyed record, memoized per key.

    The rule is the Java client's and kafka-python's: murmur2(key), made positive, modulo the
    partition count. kafka-python computes murmur2 in pure Python on every send; our keys
    (municipality code + town) repeat all day, so the result is remembered per topic and count.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int, bytes], int] = {}

    def __call__(self, topic: str, count: int, key: bytes) -> int:
        slot = (topic, count, key)
        partition = self._cache.get(slot)
        if partition is None:
            partition = self._cache[slot] = (murmur2(key) & 0x7FFFFFFF) % count
        return partition
