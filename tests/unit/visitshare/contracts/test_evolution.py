"""Schema evolution: versions of one dataset side by side, and the loader's compatibility rule
(within a major, a later version only adds optional fields and widens what was allowed)."""

import shutil
from pathlib import Path

import pytest
import yaml

from visitshare.contracts import ContractError, ContractRegistry
from visitshare.contracts.odcs import custom_property, schema_property
from visitshare.settings import REPO_ROOT

SCHEMAS = REPO_ROOT / "schemas"
V1, V2 = "visit_outcome.v1.yaml", "visit_outcome.v2.yaml"


def _doc(name: str) -> dict:
    return yaml.safe_load((SCHEMAS / name).read_text(encoding="utf-8"))


def _folder(tmp_path: Path, mutate=None, *, extra: tuple[str, ...] = ()) -> Path:
    """visit_outcome v1 and v2 (after `mutate` on v2's document), and `extra` files."""
    folder = tmp_path / "schemas"
    folder.mkdir()
    for name in (V1, *extra):
        shutil.copy(SCHEMAS / name, folder / name)
    doc = _doc(V2)
    if mutate is not None:
        mutate(doc)
    (folder / V2).write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return folder


def _prop(doc: dict, name: str) -> dict:
    return schema_property(doc, name)


def _options(doc: dict, name: str) -> dict:
    return _prop(doc, name).setdefault("logicalTypeOptions", {})


def _custom(node: dict, name: str) -> dict:
    entry = custom_property(node, name)
    assert entry is not None
    return entry


def _block(doc: dict) -> dict:
    return _custom(doc, "disclosure")["value"]


def _remove(doc: dict, name: str) -> None:
    doc["schema"][0]["properties"].remove(_prop(doc, name))


def _rename(doc: dict, old: str, new: str) -> None:
    _prop(doc, old)["name"] = new


def test_the_real_versions_load_side_by_side(contracts):
    v1, v2 = contracts.versions("visit_outcome")
    assert (v1.semver, v2.semver) == ("1.0.0", "1.1.0") and v1.major == v2.major == 1
    assert v1.topic == v2.topic == "visits.outcomes.v1"
    added = [f for f in v2.fields if f.name not in v1.field_names]
    assert [(f.name, f.required) for f in added] == [
        ("preferred_language", False),
        ("interpreter_used", False),
    ]
    assert v2.field("schema_version").minimum == v2.field("schema_version").maximum == 2
    # Every v1 field is in v2 unchanged (the descriptions aside).
    for f in v1.fields:
        if f.name != "schema_version":
            assert f == v2.field(f.name), f.name


def test_a_compatible_addition_and_widening_are_accepted(tmp_path):
    def widen(doc):
        _prop(doc, "outcome")["enum"].append({"value": "moved_away"})  # gains a value
        _options(doc, "notes")["maxLength"] = 4000  # grows
        _options(doc, "satisfaction").pop("maximum")  # goes
        _prop(doc, "phone")["required"] = False  # was optional already: unchanged
        _prop(doc, "address_line")["required"] = False  # required → optional: wider
        _prop(doc, "resident_name")["description"] = "Documentation may change."

    registry = ContractRegistry.load(_folder(tmp_path, widen))
    assert registry.get("visit_outcome").id == "visit_outcome.v2"


def _change_town_weight(doc):
    _block(doc)["quasi_identifiers"]["town"]["weight"] = 1.0


def _new_required(doc):
    _prop(doc, "interpreter_used")["required"] = True


def _earliest_later(doc):
    _options(doc, "visited_at")["minimum"] = "2010-01-01T00:00:00+09:00"


def _sensitive_value_removed(doc):
    _custom(_prop(doc, "concerns"), "sensitiveValues")["value"] = ["stalking"]


INCOMPATIBLE = [
    ("field removed", lambda d: _remove(d, "satisfaction"), "property 'satisfaction' was removed or renamed"),
    ("field renamed", lambda d: _rename(d, "follow_up_requested", "follow_up"), "property 'follow_up_requested' was removed or renamed"),
    ("type changed", lambda d: _prop(d, "satisfaction").update(logicalType="number", physicalType="number"), "property 'satisfaction': logicalType changed"),
    ("classification changed", lambda d: _prop(d, "workshop_invited").update(classification="sensitive"), "property 'workshop_invited': classification changed"),
    ("disclosure rule changed", lambda d: _custom(_prop(d, "satisfaction"), "disclosure").update(value="drop"), "property 'satisfaction': customProperties.disclosure"),
    ("enum loses a value", lambda d: _prop(d, "outcome")["enum"].pop(), "property 'outcome': enum lost values"),
    ("list loses a value", lambda d: _prop(d, "materials")["items"]["enum"].pop(), "property 'materials': items.enum lost values"),
    ("enum where there was none", lambda d: _prop(d, "town").update(enum=[{"value": "西新宿"}]), "property 'town': enum added"),
    ("pattern changed", lambda d: _options(d, "visit_id").update(pattern="^V-[0-9]{5}-[0-9A-Z]{6,30}$"), "property 'visit_id': logicalTypeOptions.pattern changed"),
    ("max length shrinks", lambda d: _options(d, "notes").update(maxLength=1000), "property 'notes': logicalTypeOptions.maxLength narrowed"),
    ("max items shrinks", lambda d: _options(d, "materials").update(maxItems=5), "property 'materials': logicalTypeOptions.maxItems narrowed"),
    ("maximum narrows", lambda d: _options(d, "satisfaction").update(maximum=4), "property 'satisfaction': logicalTypeOptions.maximum narrowed"),
    ("minimum narrows", lambda d: _options(d, "residents_count").update(minimum=2), "property 'residents_count': logicalTypeOptions.minimum narrowed"),
    ("earliest moves later", _earliest_later, "property 'visited_at': logicalTypeOptions.minimum narrowed"),
    ("required becomes true", lambda d: _prop(d, "phone").update(required=True), "property 'phone': required became true"),
    ("sensitive value dropped", _sensitive_value_removed, "property 'concerns': customProperties.sensitiveValues changed"),
    ("new field required", _new_required, "property 'interpreter_used' is new and required"),
    ("topic changed", lambda d: d["schema"][0].update(physicalName="visits.outcomes.v2"), "the topic (schema[0].physicalName) changed"),
    ("event time changed", lambda d: _custom(d, "eventTime").update(value="produced_at"), "customProperties.eventTime changed"),
    ("key changed", lambda d: _custom(d, "key").update(value=["municipality_code"]), "customProperties.key changed"),
    ("k changed", lambda d: _block(d).update(k_anonymity=4), "customProperties.disclosure: k_anonymity changed"),
    ("hierarchy changed", _change_town_weight, "customProperties.disclosure: quasi_identifiers: the hierarchy of 'town' changed"),
    ("sensitive column removed", lambda d: _block(d).update(sensitive=["vulnerabilities"]), "customProperties.disclosure: sensitive: a column was removed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "mutate", "fragment"), INCOMPATIBLE, ids=[c[0] for c in INCOMPATIBLE]
)
def test_an_incompatible_change_within_a_major_is_refused(tmp_path, case, mutate, fragment):
    folder = _folder(tmp_path, mutate)
    with pytest.raises(ContractError) as err:
        ContractRegistry.load(folder)
    message = str(err.value)
    # Both files, their versions, the place, and what to do instead.
    assert f"{V2} (version 1.1.0) against {V1} (version 1.0.0)" in message, message
    assert fragment in message, f"{case}: {fragment!r} missing from {message!r}"
    assert "a new major on its own topic" in message


def test_a_later_version_must_have_a_later_semantic_version(tmp_path):
    folder = _folder(tmp_path, lambda d: d.update(version="1.0.0"))
    with pytest.raises(ContractError, match=r"version 1\.0\.0 must be later than 1\.0\.0"):
        ContractRegistry.load(folder)


def test_a_new_major_may_break_anything_on_a_topic_of_its_own(tmp_path):
    def major(doc):
        doc["version"] = "2.0.0"
        doc["schema"][0]["physicalName"] = "visits.outcomes.v2"
        _remove(doc, "satisfaction")

    registry = ContractRegistry.load(_folder(tmp_path, major))
    assert registry.get("visit_outcome").major == 2
    assert [c.id for c in registry.compatible("visit_outcome")] == ["visit_outcome.v2"]
    assert registry.by_topic("visits.outcomes.v1").id == "visit_outcome.v1"


def test_two_majors_on_one_topic_are_refused(tmp_path):
    def major(doc):
        doc["version"] = "2.0.0"
        _remove(doc, "satisfaction")

    with pytest.raises(ContractError) as err:
        ContractRegistry.load(_folder(tmp_path, major))
    message = str(err.value)
    assert V2 in message and V1 in message and "visits.outcomes.v1" in message
    assert "needs a topic of its own" in message


def test_two_datasets_on_one_topic_are_refused(tmp_path):
    folder = _folder(tmp_path, extra=("incident_report.v1.yaml",))
    doc = _doc("incident_report.v1.yaml")
    doc["schema"][0]["physicalName"] = "visits.outcomes.v1"
    (folder / "incident_report.v1.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True))
    with pytest.raises(ContractError, match="already carries incident_report"):
        ContractRegistry.load(folder)


def test_the_schema_version_range_is_the_files_version(tmp_path):
    folder = _folder(tmp_path, lambda d: _options(d, "schema_version").update(minimum=1))
    with pytest.raises(ContractError, match="minimum and maximum must both be the contract's"):
        ContractRegistry.load(folder)
    (tmp_path / "one").mkdir()
    folder = _folder(
        tmp_path / "one", lambda d: _options(d, "schema_version").update(minimum=1, maximum=1)
    )
    with pytest.raises(ContractError, match=r"file name must be visit_outcome\.v1\.yaml"):
        ContractRegistry.load(folder)


def test_a_major_above_the_schema_version_is_refused(tmp_path):
    folder = _folder(tmp_path, lambda d: d.update(version="3.0.0"))
    with pytest.raises(ContractError, match=r"the major \(3\) cannot exceed"):
        ContractRegistry.load(folder)


def test_compatibility_states_the_one_rule(tmp_path):
    folder = _folder(tmp_path, lambda d: _custom(d, "compatibility").update(value="none"))
    with pytest.raises(ContractError, match="compatibility"):
        ContractRegistry.load(folder)
