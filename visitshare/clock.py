"""Where "now" comes from: one injectable clock for the whole code base.

Code never calls `datetime.now()` itself: it asks a `Clock`, normally `settings.clock`
(the system clock, or the fixed instant `VISITSHARE_NOW` names for tests and replays), so that
a test fixes time once and every component it exercises sees the same "now".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        ...


@dataclass(frozen=True)
class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class FixedClock:
    """Always the same instant (tests, replays of a past day)."""

    at: datetime

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("a fixed clock needs a timezone-aware instant")

    def now(self) -> datetime:
        return self.at.astimezone(UTC)


SYSTEM_CLOCK = SystemClock()
