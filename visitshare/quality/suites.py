"""Expectation suites: the contract's rules (generated) plus the hand-written ones in expectations/.

A rule is one Great Expectations expectation with three more facts in its meta:
- rule_id: stable name (run records and quarantined rows refer to it);
- severity: "error" quarantines the failing rows, "warning" only reports them;
- reason: the code a failing row carries ("missing_field:visit_id", "rule:...").

Contract rules are derived from `schemas/` at run time (they are never edited by hand); the
suite file holds the rules a contract cannot express. Both run as one GX suite.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from visitshare.contracts import Contract, FieldType, geography
from visitshare.contracts.formats import UUID_PATTERN
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


def _regex_of_values(values: list[str], max_items: int | None = None) -> str:
    """Anchored regex for a ';'-joined list whose items come from `values`."""
    item = "(?:" + "|".join(re.escape(v) for v in values) + ")"
    repeat = "*" if max_items is None else f"{{0,{max_items - 1}}}"
    return f"^$|^{item}(?:{re.escape(LIST_SEPARATOR)}{item}){repeat}$"


def contract_rules(contract: Contract) -> list[Rule]:
    """The rules a contract implies, one per field and constraint."""

    def rule(kind, name, gx_type, reason, **kwargs) -> Rule:
        return Rule(f"contract.{kind}.{name}", gx_type, kwargs, Severity.ERROR, reason, "contract")

    rules = [
        rule(
            # Values that did not decode at all never reach the suite: only type mismatches do.
            "decodes", "event", "expect_column_values_to_be_in_set", "decode:type_mismatch",
            column=PARSE_STATUS, value_set=["ok"],
        )
    ]  # fmt: skip
    for f in contract.fields:
        n = f.name
        if f.required:
            rules.append(
                rule(
                    "required",
                    n,
                    "expect_column_values_to_not_be_null",
                    f"missing_field:{n}",
                    column=n,
                )
            )
        if f.type in (FieldType.STRING, FieldType.UUID):
            if f.domain is Domain.TOKYO_MUNICIPALITY:
                codes = sorted(geography.municipalities())
                rules.append(
                    rule(
                        "allowed",
                        n,
                        "expect_column_values_to_be_in_set",
                        f"unknown_value:{n}",
                        column=n,
                        value_set=codes,
                    )
                )
            elif f.domain is Domain.TOKYO_TOWN:
                pairs = sorted(
                    f"{c}:{t}" for c, m in geography.municipalities().items() for t in m.towns
                )
                rules.append(
                    rule(
                        "allowed",
                        n,
                        "expect_column_values_to_be_in_set",
                        f"unknown_value:{n}",
                        column=TOWN_KEY,
                        value_set=pairs,
                    )
                )
            elif f.enum:
                rules.append(
                    rule(
                        "allowed",
                        n,
                        "expect_column_values_to_be_in_set",
                        f"unknown_value:{n}",
                        column=n,
                        value_set=f.enum,
                    )
                )
            if f.type is FieldType.UUID:
                rules.append(
                    rule(
                        "format",
                        n,
                        "expect_column_values_to_match_regex",
                        f"bad_format:{n}",
                        column=n,
                        regex=f"^{UUID_PATTERN}$",
                    )
                )
            if f.pattern:
                rules.append(
                    rule(
                        "format",
                        n,
                        "expect_column_values_to_match_regex",
                        f"bad_format:{n}",
                        column=n,
                        regex=f.pattern,
                    )
                )
            if f.max_length:
                rules.append(
                    rule(
                        "length",
                        n,
                        "expect_column_value_lengths_to_be_between",
                        f"too_long:{n}",
                        column=n,
                        max_value=f.max_length,
                    )
                )
        elif f.type in (FieldType.INTEGER, FieldType.NUMBER):
            if n == "schema_version":
                rules.append(
                    rule(
                        "version",
                        n,
                        "expect_column_values_to_be_between",
                        "wrong_schema_version",
                        column=n,
                        min_value=contract.version,
                        max_value=contract.version,
                    )
                )
            elif f.minimum is not None or f.maximum is not None:
                rules.append(
                    rule(
                        "range",
                        n,
                        "expect_column_values_to_be_between",
                        f"out_of_range:{n}",
                        column=n,
                        min_value=f.minimum,
                        max_value=f.maximum,
                    )
                )
        elif f.type is FieldType.TIMESTAMP and f.not_future:
            rules.append(
                rule(
                    "not_future",
                    n,
                    "expect_column_values_to_be_between",
                    f"future_timestamp:{n}",
                    column=n,
                    max_value={"$PARAMETER": LATEST_PARAMETER},
                )
            )
        elif f.type is FieldType.ARRAY:
            rules.append(
                rule(
                    "allowed",
                    n,
                    "expect_column_values_to_match_regex",
                    f"unknown_value:{n}",
                    column=n,
                    regex=_regex_of_values(f.item_values),
                )
            )
            if f.max_items:
                rules.append(
                    rule(
                        "length",
                        n,
                        "expect_column_values_to_match_regex",
                        f"too_long:{n}",
                        column=n,
                        regex=f"^[^;]*(?:;[^;]*){{0,{f.max_items - 1}}}$",
                    )
                )
    return rules  # fmt: skip


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
    """The full suite of a dataset: contract rules + the hand-written rules of its file."""
    path = expectations_dir / f"{contract.name}.json"
    columns = frame_columns(contract)
    hand, file_version = _hand_written(path, contract, columns)
    rules = contract_rules(contract) + hand
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
