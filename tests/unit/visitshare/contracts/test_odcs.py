"""Contracts as ODCS v3 documents: every file in schemas/ is valid ODCS, the mapping keeps every
attribute (old format → ODCS → the same contract), and what ODCS allows but the pipeline would
not enforce is refused, naming the file and the place."""

import copy
import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml
from open_data_contract_standard.model import OpenDataContractStandard
from typer.testing import CliRunner

from visitshare.cli import app
from visitshare.contracts import ContractError, FieldSpec, load_contract
from visitshare.contracts.loader import convert_file
from visitshare.contracts.model import Contract
from visitshare.contracts.odcs import (
    API_VERSION,
    WRITTEN_CONTRACT_ATTRIBUTES,
    WRITTEN_FIELD_ATTRIBUTES,
    custom_property,
    dump,
    is_odcs,
    schema_property,
    to_odcs,
)
from visitshare.settings import REPO_ROOT

SCHEMAS = REPO_ROOT / "schemas"
LEGACY = Path(__file__).parent / "legacy"  # the two contracts as they were before ODCS
CONTRACT_FILES = sorted(SCHEMAS.glob("*.v*.yaml"))


def _same(a: Contract, b: Contract) -> bool:
    return a.model_dump(mode="json") == b.model_dump(mode="json")


# -- every contract is an ODCS document -----------------------------------------------------------
@pytest.mark.parametrize("path", CONTRACT_FILES, ids=lambda p: p.name)
def test_every_contract_file_validates_against_the_odcs_json_schema(path):
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert is_odcs(doc), f"{path.name} is still in the old format: visitshare contracts convert"
    schema = json.loads(
        resources.files("open_data_contract_standard").joinpath("schema.json").read_text()
    )
    jsonschema.validators.validator_for(schema)(schema).validate(doc)
    assert doc["apiVersion"] == API_VERSION and doc["kind"] == "DataContract"
    # The package's own model reads it too (what datacontract-cli builds on).
    parsed = OpenDataContractStandard.from_file(str(path))
    assert parsed.schema_[0].physicalType == "topic"


def test_the_two_contracts_were_converted_without_changing_them():
    for legacy in sorted(LEGACY.glob("*.v*.yaml")):
        assert _same(load_contract(legacy), load_contract(SCHEMAS / legacy.name)), legacy.name


# -- the mapping ----------------------------------------------------------------------------------
def test_every_model_attribute_has_a_place_in_odcs():
    """A new FieldSpec or Contract attribute must get its place in odcs.py (and the docs)."""
    assert set(FieldSpec.model_fields) == WRITTEN_FIELD_ATTRIBUTES
    assert set(Contract.model_fields) == WRITTEN_CONTRACT_ATTRIBUTES


def _legacy_with_every_attribute(tmp_path: Path) -> Path:
    """The old visits contract, with the attributes no real contract uses added."""
    raw = yaml.safe_load((LEGACY / "visit_outcome.v1.yaml").read_text(encoding="utf-8"))
    notes = next(f for f in raw["fields"] if f["name"] == "notes")
    notes["narrows"] = ["place", "time"]  # dropped, so it needs no hierarchy
    path = tmp_path / "legacy" / "visit_outcome.v1.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["visit_outcome", "incident_report", "every_attribute"])
def test_round_trip_keeps_every_attribute(tmp_path, name):
    if name == "every_attribute":
        source = _legacy_with_every_attribute(tmp_path)
    else:
        source = LEGACY / f"{name}.v1.yaml"
    old = load_contract(source)
    path = tmp_path / source.name
    path.write_text(dump(to_odcs(old)), encoding="utf-8")
    new = load_contract(path)
    assert _same(old, new)
    # Attribute by attribute, so a failure names what was lost.
    for before, after in zip(old.fields, new.fields, strict=True):
        for attribute in FieldSpec.model_fields:
            assert getattr(after, attribute) == getattr(before, attribute), (before.name, attribute)
    assert new.disclosure == old.disclosure and new.topic == old.topic
    assert new.event_time == old.event_time and new.key == old.key


def test_round_trip_of_old_format_files_still_in_schemas(tmp_path):
    """Until every contract is converted: each old-format file in schemas/ converts losslessly."""
    for source in CONTRACT_FILES:
        if is_odcs(yaml.safe_load(source.read_text(encoding="utf-8"))):
            continue
        path = tmp_path / source.name
        path.write_bytes(source.read_bytes())
        assert convert_file(path)
        assert _same(load_contract(source), load_contract(path)), source.name


def test_where_each_attribute_lands():
    visits = to_odcs(load_contract(LEGACY / "visit_outcome.v1.yaml"))
    assert visits["version"] == "1.0.0" and visits["id"] == visits["name"] == "visit_outcome"
    obj = visits["schema"][0]
    assert (obj["name"], obj["physicalName"], obj["physicalType"]) == (
        "visit_outcome", "visits.outcomes.v1", "topic"
    )  # fmt: skip
    assert custom_property(visits, "eventTime")["value"] == "visited_at"
    assert custom_property(visits, "key")["value"] == ["municipality_code", "town"]
    block = custom_property(visits, "disclosure")["value"]
    assert block["k_anonymity"] == 5 and block["quasi_identifiers"]["koban_id"] == {
        "follows": "town"
    }

    event_id = schema_property(visits, "event_id")
    assert event_id["logicalType"] == "string" and event_id["logicalTypeOptions"] == {
        "format": "uuid"
    }
    household = schema_property(visits, "household_id")
    assert household["classification"] == "direct_identifier"
    assert household["logicalTypeOptions"] == {
        "maxLength": 40, "pattern": "^HH-[0-9]{5}-[0-9]{4}-[0-9]{5}$"
    }  # fmt: skip
    assert custom_property(household, "disclosure")["value"] == {"pseudonymize": "household"}
    visited = schema_property(visits, "visited_at")
    assert (visited["logicalType"], visited["physicalType"]) == ("timestamp", "string")
    assert visited["logicalTypeOptions"] == {
        "minimum": "2000-01-01T00:00:00+09:00",
        "timezone": True,
    }
    assert custom_property(visited, "notFuture")["value"] is True
    assert custom_property(visited, "disclosure")["value"] == {"coarsen": "day"}
    town = schema_property(visits, "town")
    assert custom_property(town, "domain")["value"] == "tokyo_town"
    assert schema_property(visits, "outcome")["enum"][0] == {"value": "completed"}
    concerns = schema_property(visits, "concerns")
    assert concerns["logicalTypeOptions"] == {"maxItems": 10}
    assert concerns["items"]["logicalType"] == "string"
    assert {"value": "stalking"} in concerns["items"]["enum"]
    assert custom_property(concerns, "sensitiveValues")["value"] == [
        "stalking",
        "domestic_violence",
    ]
    assert schema_property(visits, "residents_count")["logicalTypeOptions"] == {
        "minimum": 1,
        "maximum": 30,
    }
    assert schema_property(visits, "notes")["required"] is False

    incidents = to_odcs(load_contract(LEGACY / "incident_report.v1.yaml"))
    band = custom_property(schema_property(incidents, "victim_age_band"), "disclosure")["value"]
    assert band["band"]["80+"] == "60+"
    latitude = schema_property(incidents, "latitude")
    assert (latitude["logicalType"], latitude["logicalTypeOptions"]) == (
        "number", {"minimum": 20, "maximum": 36}
    )  # fmt: skip


def test_the_old_format_is_still_read(tmp_path):
    """Contracts not yet converted load as before (the converter and the transition need it)."""
    visits = load_contract(LEGACY / "visit_outcome.v1.yaml")
    assert (
        visits.id == "visit_outcome.v1" and visits.field("phone").pii.value == "direct_identifier"
    )
    raw = yaml.safe_load((LEGACY / "visit_outcome.v1.yaml").read_text(encoding="utf-8"))
    next(f for f in raw["fields"] if f["name"] == "phone")["disclosure"] = "keep"
    path = tmp_path / "visit_outcome.v1.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(
        ContractError, match=r"field 'phone': a direct_identifier field must be dropped"
    ):
        load_contract(path)


def test_convert_command_rewrites_in_place_once(tmp_path):
    path = tmp_path / "incident_report.v1.yaml"
    path.write_bytes((LEGACY / "incident_report.v1.yaml").read_bytes())
    runner = CliRunner()
    result = runner.invoke(app, ["contracts", "convert", str(path)])
    assert result.exit_code == 0, result.output
    assert "converted to ODCS v3.2.0" in result.output
    assert is_odcs(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert _same(load_contract(path), load_contract(LEGACY / path.name))
    again = runner.invoke(app, ["contracts", "convert", str(path)])
    assert again.exit_code == 0 and "already ODCS, unchanged" in again.output


def test_convert_leaves_an_invalid_contract_alone(tmp_path):
    raw = yaml.safe_load((LEGACY / "visit_outcome.v1.yaml").read_text(encoding="utf-8"))
    raw["event_time"] = "town"
    path = tmp_path / "visit_outcome.v1.yaml"
    text = yaml.safe_dump(raw, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ContractError, match="event_time"):
        convert_file(path)
    assert path.read_text(encoding="utf-8") == text


# -- refusals -------------------------------------------------------------------------------------
def _doc() -> dict:
    return copy.deepcopy(_VISITS)


_VISITS = yaml.safe_load((SCHEMAS / "visit_outcome.v1.yaml").read_text(encoding="utf-8"))


def _prop(doc, name):
    return schema_property(doc, name)


REFUSED = [
    # Not valid ODCS (the standard's JSON Schema)
    ("no id", lambda d: d.pop("id"), ["contract", "'id' is a required property", "JSON Schema"]),
    ("wrong kind", lambda d: d.update(kind="Contract"), ["kind", "'DataContract'"]),
    ("required is not a boolean", lambda d: _prop(d, "town").update(required="yes"), ["property 'town'", "required", "boolean"]),
    ("unknown key", lambda d: _prop(d, "town").update(maxlen=3), ["property 'town'", "maxlen"]),
    ("string option on an integer", lambda d: _prop(d, "satisfaction")["logicalTypeOptions"].update(maxLength=3), ["property 'satisfaction'", "logicalTypeOptions", "maxLength"]),
    ("custom property without value", lambda d: custom_property(_prop(d, "town"), "domain").pop("value"), ["property 'town'", "customProperties[0]", "'value' is a required property"]),
    # Valid ODCS, missing what a contract needs
    ("no schema", lambda d: d.pop("schema"), ["schema: a contract describes one object"]),
    ("two objects", lambda d: d["schema"].append(copy.deepcopy(d["schema"][0])), ["schema: a contract describes one object", "not 2"]),
    ("no topic", lambda d: d["schema"][0].pop("physicalName"), ["schema[0].physicalName", "Field required"]),
    ("no logical type", lambda d: _prop(d, "town").pop("logicalType"), ["property 'town'", "logicalType is required", "timestamp"]),
    ("no event time", lambda d: d["customProperties"].remove(custom_property(d, "eventTime")), ["customProperties.eventTime", "Field required"]),
    ("no classification", lambda d: _prop(d, "phone").pop("classification"), ["property 'phone'", "classification", "Field required"]),
    # Valid ODCS, but not what the pipeline reads
    ("wrong classification", lambda d: _prop(d, "phone").update(classification="confidential"), ["property 'phone'", "classification", "direct_identifier"]),
    ("unknown custom property", lambda d: _prop(d, "town")["customProperties"].append({"property": "retention", "value": "1y"}), ["property 'town'", "unknown custom property 'retention'"]),
    ("unknown top-level custom property", lambda d: d["customProperties"].append({"property": "owner", "value": "mpd"}), ["customProperties", "unknown custom property 'owner'", "eventTime"]),
    ("custom property twice", lambda d: _prop(d, "town")["customProperties"].append({"property": "domain", "value": "tokyo_town"}), ["property 'town'", "'domain' is given twice"]),
    ("a quality rule", lambda d: _prop(d, "town").update(quality=[{"type": "library", "metric": "nullValues", "mustBe": 0}]), ["property 'town'", "'quality'", "would not be enforced"]),
    ("unique", lambda d: _prop(d, "event_id").update(unique=True), ["property 'event_id'", "'unique'", "not be enforced"]),
    ("servers", lambda d: d.update(servers=[{"server": "k", "type": "kafka", "host": "localhost:9092"}]), ["contract: 'servers'"]),
    ("an unchecked option", lambda d: _prop(d, "town")["logicalTypeOptions"].update(minLength=2), ["property 'town'", "logicalTypeOptions.minLength is not checked", "maxLength, pattern"]),
    ("a date", lambda d: _prop(d, "visited_at").update(logicalType="date", logicalTypeOptions={}), ["property 'visited_at'", "logicalType 'date' is not one this pipeline carries"]),
    ("another string format", lambda d: _prop(d, "event_id")["logicalTypeOptions"].update(format="email"), ["property 'event_id'", "only 'uuid'"]),
    ("timestamp without offset", lambda d: _prop(d, "visited_at")["logicalTypeOptions"].update(timezone=False), ["property 'visited_at'", "timezone must be True"]),
    ("wrong physical type", lambda d: _prop(d, "visited_at").update(physicalType="timestamp"), ["property 'visited_at'", "physicalType", "'string'"]),
    ("items not strings", lambda d: _prop(d, "concerns")["items"].update(logicalType="integer"), ["property 'concerns'", "items", "strings"]),
    ("enum value with tags", lambda d: _prop(d, "outcome")["enum"][0].update(tags=["x"]), ["property 'outcome': enum", "'tags'"]),
    ("another standard version", lambda d: d.update(apiVersion="v3.1.0"), ["apiVersion", "v3.2.0"]),
    ("version not semver", lambda d: d.update(version="1"), ["version: MAJOR.MINOR.PATCH"]),
    ("id is not the name", lambda d: d.update(id="visits"), ["id: must be the contract's name ('visit_outcome')"]),
    ("object name is not the name", lambda d: d["schema"][0].update(name="visits"), ["schema[0].name"]),
    ("physical type not a topic", lambda d: d["schema"][0].update(physicalType="table"), ["schema[0].physicalType", "topic"]),
    # The loader's own refusals, located in ODCS terms
    ("bad disclosure rule", lambda d: custom_property(_prop(d, "visited_at"), "disclosure").update(value={"coarsen": "year"}), ["property 'visited_at'", "customProperties.disclosure"]),
    ("bad k", lambda d: custom_property(d, "disclosure")["value"].update(k_anonymity=1), ["customProperties.disclosure.k_anonymity"]),
    ("max length not positive", lambda d: _prop(d, "town")["logicalTypeOptions"].update(maxLength=0), ["property 'town'", "logicalTypeOptions.maxLength"]),
    ("earliest not a time", lambda d: _prop(d, "visited_at")["logicalTypeOptions"].update(minimum="yesterday"), ["property 'visited_at'", "logicalTypeOptions.minimum"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "mutate", "fragments"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_documents_name_file_and_place(tmp_path, case, mutate, fragments):
    doc = _doc()
    mutate(doc)
    path = tmp_path / "visit_outcome.v1.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ContractError) as err:
        load_contract(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message, f"{case}: {fragment!r} missing from {message!r}"


def test_documentation_only_keys_are_accepted(tmp_path):
    doc = _doc()
    doc["tags"] = ["police"]
    doc["description"] = {"purpose": "The home-visit programme's outcomes, for the wards."}
    doc["schema"][0]["businessName"] = "Home visits"
    town = _prop(doc, "town")
    town.update(businessName="Town", examples=["西新宿"], tags=["place"])
    custom_property(town, "domain")["description"] = "Japan Post's town list"
    _prop(doc, "outcome")["enum"][0].update(label="Completed", description="The visit took place")
    path = tmp_path / "visit_outcome.v1.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    assert _same(load_contract(path), load_contract(SCHEMAS / "visit_outcome.v1.yaml"))


def test_required_defaults_to_false_as_in_the_standard(tmp_path):
    doc = _doc()
    _prop(doc, "notes").pop("required")
    path = tmp_path / "visit_outcome.v1.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    assert load_contract(path).field("notes").required is False
