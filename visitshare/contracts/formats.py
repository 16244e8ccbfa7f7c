"""Text formats the contracts use, shared by every validator and schema derived from them."""

from __future__ import annotations

import re
from datetime import datetime

UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# RFC 3339 date-time: ISO 8601 with a mandatory UTC offset ("2026-11-20T10:15:00+09:00").
TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$"

UUID_RE = re.compile(UUID_PATTERN)
TIMESTAMP_RE = re.compile(TIMESTAMP_PATTERN)


def parse_timestamp(value: str) -> datetime | None:
    """An aware datetime from RFC 3339 text, or None if malformed or not a real date."""
    if TIMESTAMP_RE.match(value) is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:  # e.g. 2026-02-30
        return None
