"""Suites: contract rules generated, hand-written rules loaded, malformed files refused."""

import json

import pytest

from visitshare.quality.suites import Severity, SuiteError, contract_rules, load_suite
from visitshare.settings import REPO_ROOT

EXPECTATIONS = REPO_ROOT / "expectations"


def test_contract_rules_cover_every_constraint(contracts):
    rules = {r.rule_id: r for r in contract_rules(contracts.get("visit_outcome"))}
    assert rules["contract.required.visit_id"].type == "expect_column_values_to_not_be_null"
    assert rules["contract.allowed.outcome"].kwargs["value_set"] == [
        "completed",
        "not_home",
        "declined",
        "rescheduled",
    ]
    assert rules["contract.allowed.town"].kwargs["column"] == "municipality_town"
    assert "13104:西新宿" in rules["contract.allowed.town"].kwargs["value_set"]
    assert rules["contract.format.phone"].kwargs["regex"].startswith("^0")
    assert rules["contract.not_future.visited_at"].kwargs["max_value"] == {
        "$PARAMETER": "latest_allowed_time"
    }
    assert rules["contract.range.satisfaction"].kwargs == {
        "column": "satisfaction",
        "min_value": 1,
        "max_value": 5,
    }
    assert all(r.severity is Severity.ERROR for r in rules.values())


def test_both_suites_load_with_versions(contracts):
    for name in ("visit_outcome", "incident_report"):
        suite = load_suite(EXPECTATIONS, contracts.get(name))
        assert suite.version.startswith(f"{name}.v1+suite-1.0.0+")
        assert {r.source for r in suite.rules} == {"contract", f"{name}.json"}
        assert len(suite.gx_suite().expectations) == len(suite.rules)


def _write(tmp_path, expectations):
    (tmp_path / "visit_outcome.json").write_text(
        json.dumps({"name": "visit_outcome", "expectations": expectations})
    )
    return tmp_path


GOOD = {
    "type": "expect_column_values_to_not_be_null",
    "kwargs": {"column": "town"},
    "meta": {"rule_id": "r1", "severity": "error", "reason": "x"},
}


@pytest.mark.parametrize(
    ("expectation", "message"),
    [
        ({**GOOD, "meta": {"severity": "error", "reason": "x"}}, "meta.rule_id is missing"),
        ({**GOOD, "meta": {**GOOD["meta"], "severity": "fatal"}}, "rule 'r1': severity must be"),
        ({**GOOD, "meta": {**GOOD["meta"], "reason": ""}}, "rule 'r1': meta.reason is missing"),
        ({**GOOD, "type": "expect_the_unexpected"}, "not a Great Expectations expectation"),
        ({**GOOD, "kwargs": {"column": "favourite_colour"}}, "favourite_colour"),
        ({**GOOD, "meta": {**GOOD["meta"], "rule_id": "contract.required.town"}}, "used twice"),
    ],
)
def test_malformed_suite_names_the_file_and_rule(tmp_path, contracts, expectation, message):
    folder = _write(tmp_path, [expectation])
    with pytest.raises(SuiteError) as err:
        load_suite(folder, contracts.get("visit_outcome"))
    assert "visit_outcome.json" in str(err.value) and message in str(err.value)


def test_not_json(tmp_path, contracts):
    (tmp_path / "visit_outcome.json").write_text("{not json")
    with pytest.raises(SuiteError, match=r"visit_outcome\.json: not valid JSON"):
        load_suite(tmp_path, contracts.get("visit_outcome"))
