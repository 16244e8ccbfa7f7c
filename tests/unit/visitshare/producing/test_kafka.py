"""Kafka clients: the memoized partitioner picks the partition Kafka's default partitioner
would; the options built for each security protocol are exactly what kafka-python needs."""

import logging

import pytest
from kafka.cluster import ClusterMetadata
from kafka.partitioner.default import DefaultPartitioner
from pydantic import ValidationError

from visitshare.producing import kafka
from visitshare.producing.kafka import KeyPartitions
from visitshare.settings import Settings


class _Metadata(ClusterMetadata):
    def __init__(self, topic: str, count: int):
        super().__init__()
        self._topic, self._count = topic, count

    def topics(self, exclude_internal_topics=True):
        return {self._topic}

    def partitions_for_topic(self, topic):
        return set(range(self._count))

    def available_partitions_for_topic(self, topic):
        return set(range(self._count))


def test_same_partition_as_kafkas_default_partitioner():
    ours = KeyPartitions()
    keys = [f"13104:{town}".encode() for town in ("西新宿", "歌舞伎町", "高田馬場", "四谷")] + [
        b"",
        b"x" * 100,
    ]
    for count in (1, 3, 6, 12):
        theirs = _Metadata("visits.outcomes.v1", count)
        for key in keys:
            expected = DefaultPartitioner().partition(
                "visits.outcomes.v1", key, key, None, None, theirs
            )
            assert ours("visits.outcomes.v1", count, key) == expected
            assert ours("visits.outcomes.v1", count, key) == expected  # memoized, same answer


# --- client options per security protocol -------------------------------------------------

SASL_KEYS = {"sasl_mechanism", "sasl_plain_username", "sasl_plain_password"}
SSL_KEYS = {"ssl_check_hostname", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"}
BUILDERS = (
    kafka.client_options,
    kafka.producer_options,
    kafka.consumer_options,
    kafka.admin_options,
)


@pytest.fixture
def pem(tmp_path):
    """Stand-in CA, certificate and key files (the options carry paths, not contents)."""
    files = {}
    for name in ("ca.pem", "client.pem", "client.key"):
        files[name] = tmp_path / name
        files[name].write_text("-----BEGIN-----\n")
    return files


def _cluster(monkeypatch, **env):
    monkeypatch.setenv("VISITSHARE_KAFKA_BOOTSTRAP", "kafka-1:9093,kafka-2:9093")
    for key, value in env.items():
        monkeypatch.setenv(f"VISITSHARE_{key.upper()}", str(value))
    return Settings()


@pytest.mark.parametrize("build", BUILDERS)
def test_plaintext_embedded_gets_no_security_options(settings, build):
    opts = build(settings)
    assert opts["security_protocol"] == "PLAINTEXT"
    assert not (SASL_KEYS | SSL_KEYS) & opts.keys()
    assert opts["bootstrap_servers"] == ["127.0.0.1:19092"]


@pytest.mark.parametrize("build", BUILDERS)
def test_sasl_ssl_scram_with_ca(isolated_env, monkeypatch, pem, build):
    s = _cluster(
        monkeypatch,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="visit-share",
        kafka_sasl_password="s3cret-pw",
        kafka_ssl_cafile=pem["ca.pem"],
    )
    opts = build(s)
    security = {k: v for k, v in opts.items() if k in SASL_KEYS | SSL_KEYS}
    assert opts["security_protocol"] == "SASL_SSL"
    assert opts["bootstrap_servers"] == ["kafka-1:9093", "kafka-2:9093"]
    assert security == {
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "visit-share",
        "sasl_plain_password": "s3cret-pw",
        "ssl_check_hostname": True,
        "ssl_cafile": str(pem["ca.pem"]),
    }


def test_sasl_plaintext_gets_no_tls_options(isolated_env, monkeypatch, tmp_path):
    secret = tmp_path / "kafka.password"
    secret.write_text("from-a-file\n")
    s = _cluster(
        monkeypatch,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="u",
        kafka_sasl_password_file=secret,
    )
    opts = kafka.client_options(s)
    assert {k: opts[k] for k in SASL_KEYS} == {
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "u",
        "sasl_plain_password": "from-a-file",
    }
    assert not SSL_KEYS & opts.keys() and opts["security_protocol"] == "SASL_PLAINTEXT"


def test_mutual_tls(isolated_env, monkeypatch, pem):
    s = _cluster(
        monkeypatch,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pem["ca.pem"],
        kafka_ssl_certfile=pem["client.pem"],
        kafka_ssl_keyfile=pem["client.key"],
        kafka_ssl_key_password="key-pw",
        kafka_ssl_check_hostname="false",
    )
    opts = kafka.client_options(s)
    assert {k: v for k, v in opts.items() if k in SASL_KEYS | SSL_KEYS} == {
        "ssl_check_hostname": False,
        "ssl_cafile": str(pem["ca.pem"]),
        "ssl_certfile": str(pem["client.pem"]),
        "ssl_keyfile": str(pem["client.key"]),
        "ssl_password": "key-pw",
    }
    assert opts["security_protocol"] == "SSL"


def test_kafka_python_accepts_every_option_we_build(isolated_env, monkeypatch, pem):
    """Each key is a config kafka-python's producer, consumer and admin client know."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    s = _cluster(
        monkeypatch,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="u",
        kafka_sasl_password="p",
        kafka_ssl_cafile=pem["ca.pem"],
        kafka_ssl_certfile=pem["client.pem"],
        kafka_ssl_keyfile=pem["client.key"],
        kafka_ssl_key_password="k",
    )
    for build, cls in (
        (kafka.producer_options, KafkaProducer),
        (kafka.consumer_options, KafkaConsumer),
        (kafka.admin_options, KafkaAdminClient),
    ):
        assert set(build(s)) <= set(cls.DEFAULT_CONFIG), cls.__name__


def test_secrets_never_show(isolated_env, monkeypatch, pem, caplog):
    s = _cluster(
        monkeypatch,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="u",
        kafka_sasl_password="s3cret-pw",
        kafka_ssl_certfile=pem["client.pem"],
        kafka_ssl_key_password="key-pw",
    )
    for shown in (repr(s), str(s), repr(s.model_dump()), s.model_dump_json()):
        assert "s3cret-pw" not in shown and "key-pw" not in shown
    caplog.set_level(logging.DEBUG)
    for build in BUILDERS:
        opts = build(s)
        logging.getLogger("visitshare.test").info("options %s %r", opts, opts)
        for shown in (repr(opts), str(opts), f"{opts}", caplog.text):
            assert "s3cret-pw" not in shown and "key-pw" not in shown
            assert "**********" in shown
    # kafka-python logs an admin client's configuration at DEBUG: its loggers stay silent.
    caplog.clear()
    logging.getLogger("kafka.admin.client").debug("config %s", {"sasl_plain_password": "x"})
    assert not caplog.records


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, ["KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD or"]),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "u"},
            ["KAFKA_SASL_PASSWORD or VISITSHARE_KAFKA_SASL_PASSWORD_FILE is required"],
        ),
        ({"kafka_sasl_mechanism": "PLAIN"}, ["KAFKA_SASL_MECHANISM is set but PLAINTEXT"]),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nowhere/ca.pem"}, ["KAFKA_SSL_CAFILE: no such file"]),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "{key}"}, ["KAFKA_SSL_KEYFILE needs VISITSHARE_KAFKA_SSL_CERTFILE"]),
        ({"kafka_ssl_cafile": "{ca}"}, ["KAFKA_SSL_CAFILE is set but PLAINTEXT"]),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "u",
             "kafka_sasl_password": "p", "kafka_sasl_password_file": "/nowhere/pw"},
            ["not both", "KAFKA_SASL_PASSWORD_FILE: no such file"],
        ),
        ({"topic_replication_factor": "3", "topic_min_insync_replicas": "4"}, ["TOPIC_MIN_INSYNC_REPLICAS=4 exceeds"]),
    ],
)  # fmt: skip
def test_invalid_combinations_are_refused_by_name(isolated_env, monkeypatch, pem, env, names):
    paths = {"key": pem["client.key"], "ca": pem["ca.pem"]}
    env = {k: v.format(**paths) for k, v in env.items()}
    with pytest.raises(ValidationError) as caught:
        _cluster(monkeypatch, **env)
    for name in names:
        assert name in str(caught.value)


def test_unsupported_mechanism_is_refused(isolated_env, monkeypatch):
    with pytest.raises(ValidationError, match="kafka_sasl_mechanism"):
        _cluster(monkeypatch, kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="GSSAPI")


def test_the_embedded_broker_speaks_plaintext_only(isolated_env, monkeypatch, pem):
    monkeypatch.setenv("VISITSHARE_KAFKA_SECURITY_PROTOCOL", "SSL")
    with pytest.raises(ValidationError, match="VISITSHARE_KAFKA_BOOTSTRAP"):
        Settings()


def test_an_unreadable_password_file_is_named(isolated_env, monkeypatch, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("\n")
    s = _cluster(
        monkeypatch,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="u",
        kafka_sasl_password_file=secret,
    )
    with pytest.raises(kafka.KafkaSettingsError, match="VISITSHARE_KAFKA_SASL_PASSWORD_FILE"):
        kafka.client_options(s)
