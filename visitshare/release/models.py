"""What the release steps hand to each other across processes and tasks (typed, JSON-able)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from visitshare.release import disclosure
from visitshare.release.aggregates import AggregateReport, Refresh
from visitshare.release.anonymize import FieldReport
from visitshare.release.recode import Utility
from visitshare.release.records import NewBatch


class Shard(BaseModel):
    index: int
    municipalities: list[str]
    partitions: list[tuple[str, str]]  # (municipality, month) it recomputes
    rows: int


class Plan(BaseModel):
    token: str
    as_of: datetime  # the clock when planned: every shard agrees on which months are closed
    validated_upto: int
    input_fingerprint: str
    key_fingerprint: str
    contracts: dict[str, str]  # contract id → sha256 of the file
    shards: list[Shard]
    # Incremental: what the release recomputes; every other partition is carried over from
    # `previous` unchanged. `full`: every partition is recomputed and every file replaced.
    full: bool = True
    previous: int | None = None  # the release it builds on
    previous_upto: int = 0  # the validated content sequence `previous` included
    closed_through: str = ""
    touched: list[tuple[str, str]] = []  # (municipality, month), sorted


class ShardResult(BaseModel):
    index: int
    staged: dict[str, str]  # staged table → path (relative to the lake)
    field_reports: dict[str, FieldReport]  # dataset → what anonymization did
    utility: dict[str, Utility]  # dataset → what recoding kept
    aggregates: dict[str, AggregateReport]  # aggregate table → protection
    batches: list[NewBatch]  # record batches this release adds
    refreshes: list[Refresh]  # aggregate partitions this release publishes anew


class Published(BaseModel):
    release_id: int
    tables: dict[str, dict[str, Any]]
    report: disclosure.DisclosureReport
    report_html: str
    notice_sent: bool
    expired: list[int]
