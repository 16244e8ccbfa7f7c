import pytest

from visitshare.producing.topics import (
    TopicSpec,
    declared_topics,
    load_topics,
    new_topic,
    parse_retention,
)
from visitshare.settings import Settings


@pytest.mark.parametrize(
    ("text", "ms"), [("14d", 14 * 86_400_000), ("6h", 6 * 3_600_000), ("500ms", 500), (42, 42)]
)
def test_parse_retention(text, ms):
    assert parse_retention(text) == ms


def test_parse_retention_rejects_unitless_text():
    with pytest.raises(ValueError, match="unit"):
        parse_retention("14 days")


def test_declared_topics_cover_every_contract_and_its_dlq(settings, contracts):
    names = {t.name: t for t in declared_topics(settings)}
    assert len(contracts.names()) == 6
    for contract in contracts:
        assert contract.topic in names and f"{contract.topic}.dlq" in names
        assert names[f"{contract.topic}.dlq"].partitions == 1
    assert "releases.v1" in names
    assert names["visits.outcomes.v1"].partitions == 6


def test_malformed_declarations_name_the_file(tmp_path):
    path = tmp_path / "topics.yaml"
    path.write_text("topics:\n  - name: x\n    partitions: 0\n    retention: 1d\n")
    with pytest.raises(ValueError, match=r"topics\.yaml"):
        load_topics(path)
    path.write_text("topics:\n  - name: x\n")
    with pytest.raises(ValueError, match=r"topics\.yaml: invalid"):
        load_topics(path)


OVERRIDES = """\
topics:
  - name: plain
    partitions: 3
    retention: 14d
  - name: replicated
    partitions: 6
    retention: 1d
    replication_factor: 3
    min_insync_replicas: 2
"""


def test_embedded_defaults_send_retention_only(settings, tmp_path):
    """The embedded broker gets what it got before: replication 1, retention.ms alone."""
    for spec in declared_topics(settings):
        topic = new_topic(settings, spec)
        assert topic.name == spec.name and topic.num_partitions == spec.partitions
        assert topic.replication_factor == 1
        assert topic.topic_configs == {"retention.ms": str(spec.retention_ms)}


def test_topics_yaml_overrides_reach_new_topic(isolated_env, monkeypatch, tmp_path):
    path = tmp_path / "topics.yaml"
    path.write_text(OVERRIDES)
    monkeypatch.setenv("VISITSHARE_TOPIC_PREFIX", "prod.")
    monkeypatch.setenv("VISITSHARE_TOPIC_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("VISITSHARE_TOPIC_MIN_INSYNC_REPLICAS", "1")
    s = Settings()
    plain, replicated = load_topics(path)
    assert replicated == TopicSpec(
        "replicated", 6, 86_400_000, "", replication_factor=3, min_insync_replicas=2
    )  # fmt: skip
    topic = new_topic(s, plain)  # the settings' layout
    assert (topic.name, topic.num_partitions, topic.replication_factor) == ("prod.plain", 3, 3)
    assert topic.topic_configs == {"retention.ms": "1209600000", "min.insync.replicas": "1"}
    topic = new_topic(s, replicated)  # the topic's own
    assert (topic.name, topic.replication_factor) == ("prod.replicated", 3)
    assert topic.topic_configs == {"retention.ms": "86400000", "min.insync.replicas": "2"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("    replication_factor: 0\n", "replication_factor must be a whole number >= 1"),
        ("    min_insync_replicas: two\n", "min_insync_replicas must be a whole number >= 1"),
        ("    replication_factor: 2\n    min_insync_replicas: 3\n", "min_insync_replicas 3 exceeds replication_factor 2"),
    ],
)  # fmt: skip
def test_invalid_overrides_name_the_file_and_topic(tmp_path, extra, message):
    path = tmp_path / "topics.yaml"
    path.write_text("topics:\n  - name: x\n    partitions: 1\n    retention: 1d\n" + extra)
    with pytest.raises(ValueError, match=r"topics\.yaml") as caught:
        load_topics(path)
    assert message in str(caught.value) and "'x'" in str(caught.value)


def test_min_insync_above_the_settings_replication_is_refused(isolated_env, monkeypatch, tmp_path):
    (tmp_path / "topics.yaml").write_text(
        "topics:\n  - name: x\n    partitions: 1\n    retention: 1d\n    min_insync_replicas: 2\n"
    )
    monkeypatch.setenv("VISITSHARE_INFRA_DIR", str(tmp_path))
    with pytest.raises(
        ValueError, match=r"min\.insync\.replicas 2 exceeds its replication factor 1"
    ):
        declared_topics(Settings())
