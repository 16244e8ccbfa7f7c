"""Contract loading: the real contracts load, malformed ones fail naming file and field (ODCS
documents here; the ODCS mapping itself and the old format: test_odcs.py)."""

from pathlib import Path

import pytest
import yaml

from visitshare.contracts import ContractError, ContractRegistry, PiiClass, load_contract
from visitshare.contracts.odcs import custom_property, schema_property
from visitshare.settings import REPO_ROOT

SCHEMAS = REPO_ROOT / "schemas"


def test_both_contracts_load_with_every_design_field(contracts):
    visit = contracts.get("visit_outcome")
    incident = contracts.get("incident_report")
    # The latest version of the visits (v2, 1.1.0: v1 plus two optional fields), same topic.
    assert visit.id == "visit_outcome.v2" and visit.topic == "visits.outcomes.v1"
    assert (visit.semver, visit.major, visit.compatibility) == ("1.1.0", 1, "backward")
    assert incident.id == "incident_report.v1" and incident.topic == "incidents.reports.v1"
    # The design sketches
    for name in ("visit_id", "household_id", "resident_name", "phone", "address_line",
                 "municipality_code", "town", "visited_at", "outcome", "residents_count",
                 "elderly_only", "vulnerabilities", "recommendations", "materials", "concerns",
                 "follow_up_requested", "satisfaction", "officer_id", "koban_id", "notes"):  # fmt: skip
        visit.field(name)
    for name in ("incident_id", "reported_at", "occurred_at", "crime_type", "municipality_code",
                 "town", "latitude", "longitude", "address_line", "victim_household_id",
                 "victim_age_band", "status", "narrative"):  # fmt: skip
        incident.field(name)


def test_every_field_has_a_pii_class_and_a_description(contracts):
    for c in contracts:
        for f in c.fields:
            assert isinstance(f.pii, PiiClass) and f.description


def test_pii_classes_are_as_the_design_says(contracts):
    visit = contracts.get("visit_outcome")
    direct = {f.name for f in visit.fields_by_pii(PiiClass.DIRECT_IDENTIFIER)}
    assert {"visit_id", "household_id", "resident_name", "phone", "address_line"} <= direct
    assert visit.field("notes").pii is PiiClass.FREE_TEXT
    assert visit.field("town").pii is PiiClass.QUASI_IDENTIFIER
    crime = contracts.get("incident_report").field("crime_type")
    assert crime.pii is PiiClass.SENSITIVE
    assert set(crime.sensitive_values) == {"sexual_offence", "domestic_violence"}


def test_registry_lookup_by_name_id_and_topic(contracts):
    assert contracts.get("visit_outcome.v2") is contracts.get("visit_outcome")
    assert contracts.get("visit_outcome.v1") is contracts.version("visit_outcome", 1)
    assert [c.id for c in contracts.versions("visit_outcome")] == [
        "visit_outcome.v1", "visit_outcome.v2"
    ]  # fmt: skip
    assert contracts.compatible("visit_outcome") == contracts.versions("visit_outcome")
    assert contracts.by_topic("visits.outcomes.v1").id == "visit_outcome.v2"
    assert contracts.by_topic("incidents.reports.v1").name == "incident_report"
    assert [c.name for c in contracts] == contracts.names()  # the latest of each, by name
    with pytest.raises(KeyError, match="has no version 3"):
        contracts.version("visit_outcome", 3)
    with pytest.raises(KeyError, match="no contract 'nope'"):
        contracts.get("nope")


def _write(tmp_path: Path, mutate) -> Path:
    """The visits contract (an ODCS document) after `mutate`, written where the loader reads it."""
    raw = yaml.safe_load((SCHEMAS / "visit_outcome.v1.yaml").read_text())
    mutate(raw)
    path = tmp_path / "visit_outcome.v1.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


_field = schema_property


def _custom(node, name):
    return custom_property(node, name)["value"]


def _set_custom(node, name, value):
    custom_property(node, name)["value"] = value


def _drop_custom(node, name):
    node["customProperties"].remove(custom_property(node, name))


def _properties(raw):
    return raw["schema"][0]["properties"]


MALFORMED = [
    ("missing classification", lambda r: _field(r, "phone").pop("classification"), ["'phone'", "classification", "required"]),
    ("unknown classification", lambda r: _field(r, "phone").update(classification="secret"), ["'phone'", "classification"]),
    ("unknown logical type", lambda r: _field(r, "town").update(logicalType="text"), ["'town'", "logicalType"]),
    ("enum on integer", lambda r: _field(r, "satisfaction").update(enum=[{"value": "1"}]), ["'satisfaction'", "enum"]),
    ("bad regex", lambda r: _field(r, "phone")["logicalTypeOptions"].update(pattern="(0["), ["'phone'", "regular expression"]),
    ("array without items", lambda r: _field(r, "concerns").pop("items"), ["'concerns'", "items"]),
    ("unknown key", lambda r: _field(r, "town").update(maxlen=3), ["'town'", "maxlen"]),
    ("direct identifier kept", lambda r: _set_custom(_field(r, "phone"), "disclosure", "keep"), ["'phone'", "dropped or pseudonymized"]),
    ("quasi without rule", lambda r: _drop_custom(_field(r, "visited_at"), "disclosure"), ["'visited_at'", "disclosure"]),
    ("duplicate field", lambda r: _properties(r).append(dict(_field(r, "town"))), ["duplicate", "town"]),
    ("event_time not a timestamp", lambda r: _set_custom(r, "eventTime", "town"), ["event_time", "town"]),
    ("key names no field", lambda r: _set_custom(r, "key", ["ward"]), ["'ward'"]),
    ("no description", lambda r: _field(r, "outcome").update(description=""), ["'outcome'", "description"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "mutate", "fragments"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_contract_names_file_and_field(tmp_path, case, mutate, fragments):
    path = _write(tmp_path, mutate)
    with pytest.raises(ContractError) as err:
        load_contract(path)
    message = str(err.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, f"{case}: {fragment!r} missing from {message!r}"


def test_not_yaml_and_wrong_file_name(tmp_path):
    bad = tmp_path / "visit_outcome.v1.yaml"
    bad.write_text("schema: [unclosed\n")
    with pytest.raises(ContractError, match="not valid YAML"):
        load_contract(bad)
    wrong = tmp_path / "visits.v1.yaml"
    wrong.write_text((SCHEMAS / "visit_outcome.v1.yaml").read_text())
    with pytest.raises(ContractError, match=r"file name must be visit_outcome\.v1\.yaml"):
        load_contract(wrong)


def test_empty_directory(tmp_path):
    with pytest.raises(ContractError, match="no contract files"):
        ContractRegistry.load(tmp_path)
