"""The producer's contract check with two versions of a dataset: each event against its own
version, the `contract` header naming it; the same reason codes as validation (no broker:
`Publisher.prepare` decides where a record goes before anything is sent)."""

import json

import pytest

from producers.publisher import Outgoing, Publisher
from tests.corpus import CLOCK, visit
from visitshare.settings import Settings


@pytest.fixture
def publisher(contracts, isolated_env):
    settings = Settings(now=CLOCK.now())
    with Publisher(settings, contracts) as pub:
        yield pub


def _prepare(publisher, payload):
    record = publisher.prepare(Outgoing("visit_outcome", payload))
    headers = dict(record.headers)
    violations = json.loads(headers.get("dlq_violations", b"[]"))
    return record, headers, [(v["reason"], v["field"]) for v in violations]


@pytest.mark.parametrize("as_bytes", [False, True])
def test_v1_and_v2_events_go_to_the_same_topic_each_named_by_its_version(publisher, as_bytes):
    for event, contract in (
        (visit(), b"visit_outcome.v1"),
        (visit(schema_version=2, preferred_language="ko", interpreter_used=True), b"visit_outcome.v2"),
        (visit(schema_version=2), b"visit_outcome.v2"),
    ):  # fmt: skip
        payload = json.dumps(event, ensure_ascii=False).encode() if as_bytes else event
        record, headers, _ = _prepare(publisher, payload)
        assert (record.kind, record.reason) == ("event", None)
        assert record.topic.endswith("visits.outcomes.v1")
        assert headers["contract"] == contract


@pytest.mark.parametrize("as_bytes", [False, True])
@pytest.mark.parametrize(
    ("event", "reason", "field", "contract"),
    [
        (visit(preferred_language="ko"), "unknown_field", "preferred_language", b"visit_outcome.v1"),
        (visit(schema_version=2, interpreter_used="yes"), "wrong_type", "interpreter_used", b"visit_outcome.v2"),
        (visit(schema_version=3), "wrong_schema_version", "schema_version", b"visit_outcome.v2"),
        (visit(schema_version=3, preferred_language="ko"), "wrong_schema_version", "schema_version", b"visit_outcome.v2"),
    ],
)  # fmt: skip
def test_an_event_invalid_for_its_version_goes_to_the_dlq(
    publisher, as_bytes, event, reason, field, contract
):
    payload = json.dumps(event, ensure_ascii=False).encode() if as_bytes else event
    record, headers, violations = _prepare(publisher, payload)
    assert record.kind == "dlq" and record.topic.endswith("visits.outcomes.v1.dlq")
    assert record.reason == reason and violations[0] == (reason, field)
    assert headers["dlq_reason"] == reason.encode() and headers["contract"] == contract
