"""Kafka clients configured from settings, in one place (kafka-python).

Choices that matter on the embedded Tansu broker live here: acks=all, short group
timeouts, no reliance on `end_offsets()`. They are also correct on Apache Kafka.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.partitioner.default import murmur2

from visitshare.errors import VisitShareError
from visitshare.settings import Settings

# kafka-python logs every reconnect attempt at WARNING/ERROR; our code reports outages itself.
# (At DEBUG it also logs an admin client's whole configuration, password included: silenced.)
for _name in ("kafka", "kafka.conn", "kafka.client", "kafka.producer", "kafka.coordinator"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


# Options whose values are secrets: never shown by `repr()` of the options (logs, errors).
SECRET_OPTIONS = frozenset({"sasl_plain_password", "ssl_password"})


class ClientOptions(dict[str, Any]):
    """kafka-python options; its repr shows secrets as '**********'."""

    def __repr__(self) -> str:
        shown = {k: "**********" if k in SECRET_OPTIONS else v for k, v in self.items()}
        return repr(shown)

    __str__ = __repr__


class KafkaSettingsError(VisitShareError):
    """A Kafka client setting that cannot be used (e.g. an unreadable password file)."""


def sasl_password(settings: Settings) -> str | None:
    """The SASL password: from the setting, or the password file (without its line end)."""
    if settings.kafka_sasl_password is not None:
        return settings.kafka_sasl_password.get_secret_value()
    path = settings.kafka_sasl_password_file
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KafkaSettingsError(
            f"VISITSHARE_KAFKA_SASL_PASSWORD_FILE: cannot read {path}: {exc}"
        ) from None
    password = text.rstrip("\r\n")
    if not password:
        raise KafkaSettingsError(f"VISITSHARE_KAFKA_SASL_PASSWORD_FILE: {path} is empty")
    return password


def client_options(settings: Settings) -> ClientOptions:
    """What every client (producer, consumer, admin) needs to reach and trust the cluster.

    Only the options the security protocol uses are set: PLAINTEXT (the embedded broker) gets
    none of the SASL or TLS ones.
    """
    protocol = settings.kafka_security_protocol
    opts = ClientOptions(
        bootstrap_servers=settings.bootstrap.split(","),
        client_id=settings.kafka_client_id,
        security_protocol=protocol,
        request_timeout_ms=settings.request_timeout_ms,
        bootstrap_timeout_ms=settings.kafka_connect_timeout_ms,
    )
    if protocol.startswith("SASL_"):
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism
        opts["sasl_plain_username"] = settings.kafka_sasl_username
        opts["sasl_plain_password"] = sasl_password(settings)
    if protocol.endswith("SSL"):
        opts["ssl_check_hostname"] = settings.kafka_ssl_check_hostname
        for option, path in (
            ("ssl_cafile", settings.kafka_ssl_cafile),
            ("ssl_certfile", settings.kafka_ssl_certfile),
            ("ssl_keyfile", settings.kafka_ssl_keyfile),
        ):
            if path is not None:
                opts[option] = str(path)
        if settings.kafka_ssl_key_password is not None:
            opts["ssl_password"] = settings.kafka_ssl_key_password.get_secret_value()
    return opts


def producer_options(settings: Settings) -> ClientOptions:
    """Durable, ordered, idempotent sends: acks=all (acks=0 loses messages on Tansu).

    On a cluster, acks=all with the topics' min.insync.replicas (2 with replication factor 3)
    means a confirmed send is on at least two brokers.
    """
    return ClientOptions(
        {
            **client_options(settings),
            "acks": "all",
            "enable_idempotence": True,
            "max_in_flight_requests_per_connection": 5,
            "compression_type": None if settings.compression == "none" else settings.compression,
            "linger_ms": settings.producer_linger_ms,
            "batch_size": settings.producer_batch_bytes,
            "delivery_timeout_ms": settings.delivery_timeout_ms,
            "request_timeout_ms": min(
                settings.request_timeout_ms, settings.delivery_timeout_ms - 1
            ),
            # Fail fast when the cluster is unreachable: the outbox takes over.
            "max_block_ms": min(10_000, settings.delivery_timeout_ms),
            "allow_auto_create_topics": False,
        }
    )


def producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    return KafkaProducer(**{**producer_options(settings), **overrides})


def consumer_options(settings: Settings) -> ClientOptions:
    return ClientOptions(
        {
            **client_options(settings),
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            # Tansu's default group join takes ~23 s; these give ~3 s.
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            "request_timeout_ms": max(settings.request_timeout_ms, 7000),
        }
    )


def consumer(settings: Settings, **overrides: Any) -> KafkaConsumer:
    return KafkaConsumer(**{**consumer_options(settings), **overrides})


def admin_options(settings: Settings) -> ClientOptions:
    return client_options(settings)


def admin(settings: Settings, **overrides: Any) -> KafkaAdminClient:
    return KafkaAdminClient(**{**admin_options(settings), **overrides})


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
