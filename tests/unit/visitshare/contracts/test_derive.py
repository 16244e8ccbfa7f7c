"""Arrow, SQL and JSON Schema are derived from the same contract fields."""

import jsonschema
import pyarrow as pa
import pytest
import sqlalchemy as sa

from producers.simulator import BAD_KINDS, SimConfig, Simulator
from visitshare.contracts import (
    arrow_schema,
    json_schema,
    parse_timestamp,
    sql_columns,
)
from visitshare.contracts.model import FieldType


def test_arrow_schema_types_nullability_and_pii_metadata(contracts):
    schema = arrow_schema(contracts.get("visit_outcome"))
    assert schema.metadata[b"contract"] == b"visit_outcome.v2"  # the latest: v1's fields and more
    visited = schema.field("visited_at")
    assert visited.type == pa.timestamp("us", tz="Asia/Tokyo") and not visited.nullable
    assert schema.field("satisfaction").type == pa.int32() and schema.field("satisfaction").nullable
    assert schema.field("concerns").type == pa.list_(pa.string())
    assert schema.field("phone").metadata[b"pii"] == b"direct_identifier"
    assert len(schema) == len(contracts.get("visit_outcome").fields)


def test_arrow_schema_accepts_simulated_events(contracts):
    contract = contracts.get("visit_outcome")
    timestamps = {f.name for f in contract.fields if f.type is FieldType.TIMESTAMP}
    # v1 and v2 visits: the latest version's schema holds both (v1 rows: null new columns).
    events = Simulator(SimConfig(days=1, seed=3, visit_v2_share=0.3), contracts).events()
    rows = [
        {k: parse_timestamp(v) if k in timestamps else v for k, v in e.payload.items()}
        for e in events
        if e.dataset == "visit_outcome"
    ]
    table = pa.Table.from_pylist(rows, schema=arrow_schema(contract))
    assert table.num_rows == len(rows) > 100
    assert table.column("visited_at").null_count == 0


def test_sql_columns_follow_field_types(contracts):
    cols = {c.name: c for c in sql_columns(contracts.get("incident_report"))}
    assert isinstance(cols["occurred_at"].type, sa.DateTime) and cols["occurred_at"].type.timezone
    assert isinstance(cols["latitude"].type, sa.Float) and cols["latitude"].nullable
    assert isinstance(cols["town"].type, sa.String) and cols["town"].type.length == 60
    assert not cols["event_id"].nullable
    assert "[free_text]" in cols["narrative"].comment


def test_json_schema_shape(contracts):
    contract = contracts.get("visit_outcome")
    schema = json_schema(contract)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {f.name for f in contract.fields if f.required}
    assert len(schema["allOf"]) == 62  # town membership, one clause per municipality
    assert schema["properties"]["phone"]["x-pii"] == "direct_identifier"


@pytest.fixture(scope="module")
def sample(contracts):
    """Good and malformed (decoded) events of both kinds."""
    good = list(Simulator(SimConfig(days=2, seed=11), contracts).events())
    bad = [
        e
        for e in Simulator(SimConfig(days=2, seed=12, bad_rate=1.0), contracts).events()
        if isinstance(e.payload, dict) and e.bad_kind != "future_timestamp"
    ]
    return good, bad


def test_json_schema_and_fast_validator_agree(contracts, sample):
    """The two derivations of one contract must accept and reject the same events (each event
    against the contract version its schema_version names)."""
    good, bad = sample
    checkers = {
        c.id: jsonschema.Draft202012Validator(
            json_schema(c), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        for c in contracts.all()
    }
    validators = {c.name: contracts.validator(c.name) for c in contracts}
    assert {e.bad_kind for e in bad} >= set(BAD_KINDS) - {
        "future_timestamp", "broken_json", "not_an_object", "non_utf8", "oversized_event"
    }  # fmt: skip
    for e in good + bad:
        fast = validators[e.dataset]
        checker = checkers[fast.contract_of(e.payload).id]
        fast_ok = not fast.validate(e.payload)
        schema_ok = checker.is_valid(e.payload)
        assert fast_ok == schema_ok == (e.bad_kind is None), (e.bad_kind, e.payload)


def test_every_field_type_has_all_three_derivations(contracts):
    seen = {f.type for c in contracts for f in c.fields}
    assert seen == set(FieldType)
