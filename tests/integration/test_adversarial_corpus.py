"""An adversarial corpus pushed straight to the topics with a plain kafka-python producer.

Every record bypasses our producer (and its contract check): decode tricks, encodings, types,
formats, lists, timestamps, geography, unknown fields, duplicates, keys, headers and sizes.
Then the stages run as a user runs them (`land --drain`, `validate`, `publish`), and for every
record the test asserts where it ended: validated with exactly its own content, or quarantined
with the reason the producer's own check gives. No stage may exit non-zero, and per dataset the
topic = landed = valid + quarantined.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime

import pytest
import sqlalchemy as sa
from kafka import KafkaProducer

from tests.corpus import NOW, PERSONAL_FIELD_NAME, VALID, corpus
from visitshare.contracts import ContractRegistry
from visitshare.contracts.formats import parse_timestamp
from visitshare.db import engine_for
from visitshare.db.tables import raw_files
from visitshare.quality.validate import read_curated


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "visitshare.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "VISITSHARE_NOW": NOW.isoformat(), "COLUMNS": "200"},
    )


def test_corpus_is_wide_enough():
    assert len(corpus()) >= 60
    assert len({c.name for c in corpus()}) == len(corpus())


@pytest.fixture(scope="module")
def landed(tmp_path_factory, broker):
    """The corpus pushed with a plain producer, then land, validate and publish by the CLI."""
    import uuid as _uuid

    from visitshare.producing.topics import apply_topics
    from visitshare.settings import Settings

    home = tmp_path_factory.mktemp("corpus") / "var"
    env = {
        "VISITSHARE_HOME": str(home),
        "VISITSHARE_KAFKA_BOOTSTRAP": broker,
        "VISITSHARE_TOPIC_PREFIX": f"c{_uuid.uuid4().hex[:8]}.",
        "VISITSHARE_LAND_WORKERS": "1",
        "VISITSHARE_PUBLISH_WORKERS": "1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        settings = Settings()
        apply_topics(settings)
        cases = corpus()
        contracts = ContractRegistry.load(settings.contracts_dir)
        producer = KafkaProducer(bootstrap_servers=broker, acks="all", max_request_size=4 << 20)
        where = {}
        for case in cases:
            topic = settings.topic(contracts.get(case.dataset).topic)
            meta = producer.send(topic, value=case.value, key=case.key, headers=case.headers).get(
                timeout=30
            )
            where[(topic, meta.partition, meta.offset)] = case
        producer.close()
        stages = {
            stage: _cli(*args)
            for stage, args in (
                ("land", ("land", "--drain")),
                ("validate", ("validate",)),
                ("publish", ("publish",)),
            )
        }
        yield settings, cases, where, stages
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_no_stage_exits_non_zero(landed):
    _, _, _, stages = landed
    for stage, out in stages.items():
        assert out.returncode == 0, f"{stage}: {out.stdout[-2000:]}\n{out.stderr[-3000:]}"


def test_every_record_ends_where_it_should(landed):
    settings, cases, where, _ = landed
    ended: dict[int, tuple[str, object]] = {}
    for dataset in sorted({c.dataset for c in cases}):
        valid = read_curated(settings, dataset, "validated")
        for row in valid.to_pylist() if valid is not None else []:
            case = where[(row["source_topic"], row["source_partition"], row["source_offset"])]
            ended[id(case)] = ("valid", row)
        quarantined = read_curated(settings, dataset, "quarantine")
        for row in quarantined.to_pylist() if quarantined is not None else []:
            case = where[(row["kafka_topic"], row["kafka_partition"], row["kafka_offset"])]
            assert id(case) not in ended, f"{case.name}: landed twice"
            ended[id(case)] = ("quarantined", row["reasons"])
    wrong = []
    for case in cases:
        how, what = ended.get(id(case), ("lost", None))
        if case.expect is VALID:
            if how != "valid":
                wrong.append(f"{case.name}: expected valid, {how} {what}")
                continue
            for name, expected in (case.event or {}).items():
                got = what[name]
                if isinstance(got, datetime):
                    expected = parse_timestamp(expected)
                if got != expected:
                    wrong.append(f"{case.name}: {name} is {got!r}, its own value is {expected!r}")
        elif how != "quarantined" or not case.expect <= set(what):
            wrong.append(f"{case.name}: expected quarantine with {case.expect}, {how} {what}")
    assert wrong == []


def test_counts_reconcile_per_dataset(landed):
    settings, cases, _, _ = landed
    with engine_for(settings).connect() as conn:
        landed_rows = dict(
            conn.execute(
                sa.select(raw_files.c.topic, sa.func.sum(raw_files.c.row_count)).group_by(
                    raw_files.c.topic
                )
            ).all()
        )
    contracts = ContractRegistry.load(settings.contracts_dir)
    for dataset in sorted({c.dataset for c in cases}):
        topic = contracts.get(dataset).topic
        sent = sum(c.dataset == dataset for c in cases)
        valid = read_curated(settings, dataset, "validated")
        quarantined = read_curated(settings, dataset, "quarantine")
        n_valid = valid.num_rows if valid is not None else 0
        n_quarantined = quarantined.num_rows if quarantined is not None else 0
        assert landed_rows[settings.topic(topic)] == sent == n_valid + n_quarantined


def test_reports_never_name_a_value_or_a_sender_chosen_field_name(landed):
    settings, _, _, stages = landed
    texts = [out.stdout + out.stderr for out in stages.values()]
    texts += [p.read_text() for p in (settings.reports_dir / "validation").rglob("*.json")]
    for text in texts:
        assert PERSONAL_FIELD_NAME not in text
        assert "中村 和也" not in text and "080-6400-2141" not in text
