"""Suites: hand-written rules loaded, malformed files refused."""

import json

import pytest

from visitshare.quality.suites import SuiteError, load_suite
from visitshare.settings import REPO_ROOT

EXPECTATIONS = REPO_ROOT / "expectations"


def test_both_suites_load_with_versions(contracts):
    for name, version in (("visit_outcome", 2), ("incident_report", 1)):  # the latest version
        suite = load_suite(EXPECTATIONS, contracts.get(name))
        assert suite.version.startswith(f"{name}.v{version}+suite-1.0.0+")
        assert {r.source for r in suite.rules} == {f"{name}.json"}
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
        (
            {**GOOD, "meta": {**GOOD["meta"], "rule_id": "contract.required.town"}},
            "belong to the contract check",
        ),
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


def test_a_rule_id_used_twice_is_refused(tmp_path, contracts):
    folder = _write(tmp_path, [GOOD, GOOD])
    with pytest.raises(SuiteError, match="used twice"):
        load_suite(folder, contracts.get("visit_outcome"))
