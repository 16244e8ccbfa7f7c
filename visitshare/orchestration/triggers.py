"""Airflow triggers for event-driven scheduling (run in the triggerer, see `visitshare.assets`).

`LandedFilesTrigger` watches the landing manifest: when the landing service has committed raw
files of the event topics that validation has not taken yet, it fires once; the asset event
it produces schedules the curate DAG. What it last signalled is kept in the project database
(`landing_signals`, `visitshare.manifest.pending_raw_files`), so a triggerer restart neither loses nor repeats a signal.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent


class LandedFilesTrigger(BaseEventTrigger):
    """Fires when newly landed raw files wait for validation; then the triggerer restarts it."""

    def __init__(self, name: str = "landed_events", poll_seconds: float = 2.0):
        super().__init__()
        self.name = name
        self.poll_seconds = poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "visitshare.orchestration.triggers.LandedFilesTrigger",
            {"name": self.name, "poll_seconds": self.poll_seconds},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from visitshare.landing.manifest import pending_raw_files
        from visitshare.producing.topics import event_topics
        from visitshare.settings import Settings

        settings = Settings()
        topics = event_topics(settings)
        while True:
            found = await asyncio.to_thread(pending_raw_files, settings, topics, self.name)
            if found:
                self.log.info(
                    "landing committed %d raw files (%d rows) not validated yet",
                    found["raw_files"],
                    found["rows"],
                )
                yield TriggerEvent(found)
                return
            await asyncio.sleep(self.poll_seconds)
