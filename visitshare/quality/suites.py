"""Expectation suites: the hand-written rules in expectations/, run through Great Expectations.

A rule is one Great Expectations expectation with three more facts in its meta:
- rule_id: stable name (run records and quarantined rows refer to it);
- severity: "error" quarantines the failing rows, "warning" only reports them;
- reason: the code a failing row carries ("missing_field:visit_id", "rule:...").

The contract's own rules (types, allowed values, formats, ranges, geography, no future times)
are checked first by the producer's validator (`visitshare.quality.contract`), so that
validation and the producer agree on every input; the suite file holds the rules a contract
cannot express (across fields, plausibility), run on the rows that pass the contract.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from visitshare.contracts import Contract, FieldType
from visitshare.contracts.model import Domain
from visitshare.quality.errors import SuiteError

# Columns the validation frame adds to the contract's fields (see quality.frame).
PARSE_STATUS = "parse_status"
TOWN_KEY = "municipality_town"
HOUR_SUFFIX = "_hour"
LATEST_PARAMETER = "latest_allowed_time"  # now + tolerance, given at run time
LIST_SEPARATOR = ";"


class Severity(StrEnum):
    ERROR = "error"  # failing rows are quarantined
    WARNING = "warning"  # failing rows are reported, not quarantined


@dataclass(frozen=True)
class Rule:
    rule_id: str
    type: str  # GX expectation type, e.g. expect_column_values_to_not_be_null
    kwargs: dict[str, Any]
    severity: Severity
    reason: str
    source: str  # "contract" or the suite file name
    notes: str = ""

    def gx_config(self) -> dict[str, Any]:
        meta = {"rule_id": self.rule_id, "severity": self.severity.value, "reason": self.reason}
        if self.notes:
            meta["notes"] = self.notes
        meta["source"] = self.source
        return {"type": self.type, "kwargs": self.kwargs, "meta": meta}

    @property
    def columns(self) -> list[str]:
        return [self.kwargs[k] for k in ("column", "column_A", "column_B") if k in self.kwargs]


@dataclass(frozen=True)
class Suite:
    dataset: str
    contract: Contract
    rules: list[Rule]
    version: str  # contract id + suite file version + content hash
    path: Path
    frame_columns: frozenset[str] = field(default_factory=frozenset)

    @property
    def name(self) -> str:
        return self.contract.id

    def rule_ids(self) -> tuple[str, ...]:
        return tuple(r.rule_id for r in self.rules)

    def gx_suite(self, rule_ids: tuple[str, ...] | None = None, name: str | None = None):
        """The suite as a GX ExpectationSuite (optionally only some rules, under another name)."""
        import great_expectations as gx

        return gx.ExpectationSuite(
            name=name or self.name,
            expectations=[
                r.gx_config() for r in self.rules if rule_ids is None or r.rule_id in rule_ids
            ],
            meta={"version": self.version, "dataset": self.dataset},
        )

    def rule(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.rule_id == rule_id:
                return r
        raise KeyError(rule_id)


def frame_columns(contract: Contract) -> frozenset[str]:
    """Columns of the frame the suite runs on: the contract's fields plus derived ones."""
    cols = {f.name for f in contract.fields} | {PARSE_STATUS, "row_id"}
    cols |= {f.name + HOUR_SUFFIX for f in contract.fields if f.type is FieldType.TIMESTAMP}
    if any(f.domain is Domain.TOKYO_TOWN for f in contract.fields):
        cols.add(TOWN_KEY)
    return frozenset(cols)


def _hand_written(
    path: Path, contract: Contract, columns: frozenset[str]
) -> tuple[list[Rule], str]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read suite: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SuiteError(f"{path}: not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("expectations"), list):
        raise SuiteError(f"{path}: a suite is a JSON object with an 'expectations' list")
    from great_expectations.expectations.registry import get_expectation_impl

    rules = []
    for i, e in enumerate(raw["expectations"], 1):
        meta = e.get("meta") if isinstance(e, dict) else None
        where = f"{path}: expectation #{i}"
        if not isinstance(meta, dict) or not meta.get("rule_id"):
            raise SuiteError(f"{where}: meta.rule_id is missing")
        where = f"{path}: rule {meta['rule_id']!r}"
        if str(meta["rule_id"]).split(".")[0] == "contract":
            raise SuiteError(f"{where}: rule ids 'contract…' belong to the contract check")
        try:
            severity = Severity(meta.get("severity", ""))  # absent: ValueError too
        except ValueError:
            raise SuiteError(f"{where}: severity must be 'error' or 'warning'") from None
        if not meta.get("reason"):
            raise SuiteError(f"{where}: meta.reason is missing")
        gx_type, kwargs = e.get("type"), e.get("kwargs")
        try:
            get_expectation_impl(gx_type)
        except Exception:
            raise SuiteError(
                f"{where}: {gx_type!r} is not a Great Expectations expectation"
            ) from None
        if not isinstance(kwargs, dict):
            raise SuiteError(f"{where}: kwargs must be an object")
        r = Rule(
            meta["rule_id"],
            gx_type,
            kwargs,
            severity,
            meta["reason"],
            path.name,
            meta.get("notes", ""),
        )
        unknown = [c for c in r.columns if c not in columns]
        if unknown:
            raise SuiteError(f"{where}: column(s) {unknown} are not in {contract.id} (or derived)")
        rules.append(r)
    version = str(raw.get("meta", {}).get("version", "0"))
    return rules, version


def load_suite(expectations_dir: Path, contract: Contract) -> Suite:
    """The suite of a dataset: the hand-written rules of its file (the contract's own rules are
    checked before it by the producer's validator, `visitshare.quality.contract`)."""
    path = expectations_dir / f"{contract.name}.json"
    columns = frame_columns(contract)
    hand, file_version = _hand_written(path, contract, columns)
    rules = hand
    ids = [r.rule_id for r in rules]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise SuiteError(f"{path}: rule ids used twice: {dupes}")
    digest = hashlib.sha256(
        json.dumps([r.gx_config() for r in rules], sort_keys=True).encode()
    ).hexdigest()[:8]
    return Suite(
        dataset=contract.name,
        contract=contract,
        rules=rules,
        version=f"{contract.id}+suite-{file_version}+{digest}",
        path=path,
        frame_columns=columns,
    )
