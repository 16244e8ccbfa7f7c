"""Running a suite with Great Expectations 1.x, and keeping what it says fit to publish.

Validation runs in an ephemeral GX context, through a `ValidationDefinition`, with the
COMPLETE result format so that GX names every failing row (by `row_id`). Those results hold
the failing *values*, which can be personal data, so they never touch disk: `redact()` keeps
counts and percentages only, and only the redacted result is stored in the project's GX
context (var/gx) and rendered into the Data Docs site (var/reports/data_docs), one page per
batch and run, kept across runs. The site is rendered by `visitshare.quality.datadocs` with our
own templates (GX's own site needs six CDNs to show anything).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# GX logs every metric computation at INFO and prints progress bars: a flood in task logs.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

import great_expectations as gx  # noqa: E402
from great_expectations.core.run_identifier import RunIdentifier  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from great_expectations.data_context.types.resource_identifiers import (  # noqa: E402
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)

from visitshare.clock import Clock  # noqa: E402
from visitshare.quality.errors import QualityError  # noqa: E402
from visitshare.quality.suites import LATEST_PARAMETER, Suite  # noqa: E402

# GX sets its own logger levels on import; quiet them again. pandas warns about capture
# groups in the contract's patterns, which GX only uses to match.
for _name in ("great_expectations", "great_expectations.data_context.types.base"):
    logging.getLogger(_name).setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message="This pattern is interpreted as a regular expression")

# Result keys that carry failing values (or queries that would select them).
VALUE_KEYS = (
    "unexpected_list",
    "partial_unexpected_list",
    "partial_unexpected_counts",
    "partial_unexpected_index_list",
    "unexpected_index_list",
    "unexpected_index_query",
    "details",
)


@dataclass
class RuleOutcome:
    rule_id: str
    evaluated: int
    unexpected: int
    failing_rows: np.ndarray  # row_ids

    @property
    def success(self) -> bool:
        return self.unexpected == 0


def _quiet(context) -> None:
    context.variables.progress_bars = ProgressBarsConfig(globally=False)


class SuiteRunner:
    """Runs one suite over frames (batches) in an ephemeral GX context.

    In two passes: every rule with the cheap BOOLEAN_ONLY result format, then only the rules
    that failed again with COMPLETE (which makes GX collect the failing rows, a copy of the
    frame per rule). On mostly valid data the second pass is small or empty.
    """

    def __init__(self, suite: Suite, clock: Clock):
        self.suite = suite
        self.clock = clock
        self.context = gx.get_context(mode="ephemeral")
        _quiet(self.context)
        asset = self.context.data_sources.add_pandas("raw").add_dataframe_asset(suite.dataset)
        self.batch = asset.add_batch_definition_whole_dataframe("batch")
        self.all_rules = self._definition(suite.rule_ids())
        self._subsets: dict[tuple[str, ...], object] = {}

    def _definition(self, rule_ids: tuple[str, ...]):
        name = f"{self.suite.dataset}:{len(list(self.context.suites.all()))}"
        gx_suite = self.context.suites.add(self.suite.gx_suite(rule_ids, name=name))
        return self.context.validation_definitions.add(
            gx.ValidationDefinition(name=f"validate {name}", data=self.batch, suite=gx_suite)
        )

    def _run(
        self, definition, frame: pd.DataFrame, latest_allowed: dt.datetime, run_name: str, fmt
    ):
        result = definition.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters={LATEST_PARAMETER: latest_allowed.isoformat()},
            result_format=fmt,
            run_id=RunIdentifier(run_name=run_name, run_time=self.clock.now()),
        )
        for res in result.results:
            if res.exception_info and res.exception_info.get("raised_exception"):
                rule_id = res.expectation_config.meta["rule_id"]
                raise QualityError(
                    f"rule {rule_id!r} of {self.suite.path.name} could not run: "
                    f"{res.exception_info.get('exception_message')}"
                )
        return result

    def run(self, frame: pd.DataFrame, latest_allowed: dt.datetime, run_name: str):
        """(outcome per rule, GX result with values) for one batch."""
        first = self._run(self.all_rules, frame, latest_allowed, run_name, "BOOLEAN_ONLY")
        failed = tuple(r.expectation_config.meta["rule_id"] for r in first.results if not r.success)
        outcomes = {
            r.expectation_config.meta["rule_id"]: RuleOutcome(
                r.expectation_config.meta["rule_id"], len(frame), 0, np.array([], np.int64)
            )
            for r in first.results
        }
        first.meta["row_count"] = len(frame)  # the rows the suite ran on (a count, no value)
        if not failed:
            return outcomes, first
        if failed not in self._subsets:
            self._subsets[failed] = self._definition(failed)
        fmt = {"result_format": "COMPLETE", "unexpected_index_column_names": ["row_id"]}
        second = self._run(self._subsets[failed], frame, latest_allowed, run_name, fmt)
        detailed = {r.expectation_config.meta["rule_id"]: r for r in second.results}
        for rule_id, res in detailed.items():
            r = res.result or {}
            rows = np.array(
                [int(i["row_id"]) for i in r.get("unexpected_index_list") or []], np.int64
            )
            outcomes[rule_id] = RuleOutcome(
                rule_id,
                int(r.get("element_count", len(frame))),
                int(r.get("unexpected_count", 0)),
                rows,
            )
        # One result for the reports: the detailed results of the failed rules in place.
        first.results = [
            detailed.get(r.expectation_config.meta["rule_id"], r) for r in first.results
        ]
        return outcomes, first


def redact(result):
    """A copy of a GX suite result with every failing value removed (counts stay)."""
    clean = copy.deepcopy(result)
    for res in clean.results:
        for key in VALUE_KEYS:
            (res.result or {}).pop(key, None)
    clean.meta.pop("batch_parameters", None)
    return clean


class ReportsSite:
    """The project's GX context (var/gx) and its Data Docs site (var/reports/data_docs)."""

    def __init__(self, gx_dir: Path, docs_dir: Path, clock: Clock):
        from visitshare.quality.datadocs import DataDocs

        self.docs_dir = docs_dir
        self.clock = clock
        self.context = gx.get_context(mode="file", project_root_dir=str(gx_dir))
        _quiet(self.context)
        # GX builds no site of its own any more (its pages load their scripts and styles from
        # CDNs): the pages are ours, rendered from the same stores.
        for name in list(self.context.config.data_docs_sites or {}):
            self.context.delete_data_docs_site(name)
        self.site = DataDocs(self.context, docs_dir, gx_dir / "data_docs.lock", clock)

    def publish(self, suite: Suite, results: list[tuple[str, dict]], run_name: str) -> Path:
        """Store a run's redacted results (JSON, one per batch), render what is new; the index."""
        from great_expectations.core.expectation_validation_result import (
            ExpectationSuiteValidationResult,
        )

        with contextlib.suppress(Exception):  # the suite as it ran replaces an older version
            self.context.suites.delete(suite.name)
        self.context.suites.add(suite.gx_suite())
        run_time = self.clock.now()
        for batch, redacted in results:
            key = ValidationResultIdentifier(
                expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite.name),
                run_id=RunIdentifier(run_name=run_name, run_time=run_time),
                batch_identifier=batch,
            )
            stored = {
                **redacted,
                "meta": {**redacted.get("meta", {}), "suite_version": suite.version},
            }
            self.context.validation_results_store.set(
                key, ExpectationSuiteValidationResult(**stored)
            )
        return self.site.rebuild(changed_suites={suite.name})
