"""What validation remembers: its state and its records, in the project database.

- `validated_raw_files`: which raw files a batch consumed (the next run takes the others);
- `curated_files`: the validated and quarantine files (and the files of event ids each batch
  saw, for de-duplication across batches): the only way readers find them;
- `validation_batches` and `validation_runs`: what each batch and run found (the run record).

A batch's files are written first, then all of its rows here commit in one transaction.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class RunStatus(StrEnum):
    PASSED = "passed"  # every row valid
    QUARANTINED = "rows_quarantined"  # some rows failed error rules and went to quarantine
    NOTHING_NEW = "nothing_new"


class RuleResult(BaseModel):
    """One rule over one run: how many rows it saw and failed, and where (no values)."""

    rule_id: str
    expectation: str
    columns: list[str]
    severity: str
    reason: str
    source: str
    evaluated: int = 0
    failed: int = 0
    sample_rows: list[str] = Field(default_factory=list)  # "topic[partition]@offset"

    @property
    def success(self) -> bool:
        return self.failed == 0


class ValidationRun(BaseModel):
    """The run record: what was checked against what, what passed, where the rest went."""

    run_id: str
    dataset: str
    kind: str = "validate"  # validate | release
    status: RunStatus
    contract: str
    suite_version: str
    started_at: datetime
    finished_at: datetime
    rows_in: int = 0
    valid: int = 0
    quarantined: int = 0
    duplicates: int = 0
    quarantined_by_reason: dict[str, int] = Field(default_factory=dict)
    warnings_by_reason: dict[str, int] = Field(default_factory=dict)
    source_ranges: dict[str, dict[str, list[int]]] = Field(default_factory=dict)
    batches: list[str] = Field(default_factory=list)
    rules: list[RuleResult] = Field(default_factory=list)
    data_docs: str | None = None

    @property
    def reconciles(self) -> bool:
        """Every row that came in is valid or quarantined (duplicates are quarantined)."""
        return self.rows_in == self.valid + self.quarantined

    def summary(self) -> ValidationSummary:
        return ValidationSummary.model_validate(
            self.model_dump(include=set(ValidationSummary.model_fields))
        )


class ValidationSummary(BaseModel):
    """A run in brief: what the `validated_<dataset>` asset event and the task log carry."""

    run_id: str
    dataset: str
    status: RunStatus
    rows_in: int
    valid: int
    quarantined: int
    duplicates: int
    quarantined_by_reason: dict[str, int]
    source_ranges: dict[str, dict[str, list[int]]]
    data_docs: str | None
