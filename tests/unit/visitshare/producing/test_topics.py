import pytest

from visitshare.producing.topics import declared_topics, load_topics, parse_retention


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
