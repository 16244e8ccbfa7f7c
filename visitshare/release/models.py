"""What the release steps hand to each other across processes and tasks (typed, JSON-able)."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

from visitshare.release import disclosure
from visitshare.release.anonymize import FieldReport, KReport
from visitshare.release.outcomes import SuppressionReport

log = logging.getLogger(__name__)


class Shard(BaseModel):
    index: int
    municipalities: list[str]
    rows: int


class Plan(BaseModel):
    token: str
    validated_upto: int
    input_fingerprint: str
    key_fingerprint: str
    contracts: dict[str, str]  # contract id → sha256 of the file
    shards: list[Shard]


class ShardResult(BaseModel):
    index: int
    staged: dict[str, str]  # staged table → path (relative to the lake)
    field_reports: dict[str, FieldReport]  # dataset → what anonymization did
    k_reports: dict[str, KReport]  # dataset → k-anonymity
    suppression: dict[str, SuppressionReport]  # aggregate table → cell suppression


class Published(BaseModel):
    release_id: int
    tables: dict[str, dict[str, Any]]
    report: disclosure.DisclosureReport
    report_html: str
    notice_sent: bool
    expired: list[int]
