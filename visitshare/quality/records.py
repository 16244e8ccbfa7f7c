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
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field

from visitshare.db import metadata

validated_raw_files = sa.Table(
    "validated_raw_files",
    metadata,
    sa.Column("raw_file_id", sa.Integer, sa.ForeignKey("raw_files.id"), primary_key=True),
    sa.Column("dataset", sa.String(64), nullable=False, index=True),
    sa.Column("batch", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
)

curated_files = sa.Table(
    "curated_files",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dataset", sa.String(64), nullable=False),
    sa.Column("zone", sa.String(16), nullable=False),  # validated | quarantine | seen
    sa.Column("path", sa.String(1024), nullable=False, unique=True),  # relative to the lake
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("batch", sa.String(64), nullable=False),
    sa.Column("municipality_code", sa.String(8)),
    sa.Column("month", sa.String(7)),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("curated_files_dataset_zone", "dataset", "zone"),
)

validation_batches = sa.Table(
    "validation_batches",
    metadata,
    sa.Column("dataset", sa.String(64), primary_key=True),
    sa.Column("batch", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("rows_in", sa.Integer, nullable=False),
    sa.Column("valid", sa.Integer, nullable=False),
    sa.Column("quarantined", sa.Integer, nullable=False),
    sa.Column("duplicates", sa.Integer, nullable=False),
    sa.Column("source_ranges", sa.JSON, nullable=False),
)

validation_runs = sa.Table(
    "validation_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("dataset", sa.String(64), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("rows_in", sa.Integer, nullable=False),
    sa.Column("valid", sa.Integer, nullable=False),
    sa.Column("quarantined", sa.Integer, nullable=False),
    sa.Column("record", sa.JSON, nullable=False),  # the whole ValidationRun
)


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

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "dataset": self.dataset,
            "status": self.status.value,
            "rows_in": self.rows_in,
            "valid": self.valid,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "quarantined_by_reason": self.quarantined_by_reason,
            "source_ranges": self.source_ranges,
            "data_docs": self.data_docs,
        }
