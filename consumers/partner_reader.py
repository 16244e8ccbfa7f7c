"""The partner-side reader: follows `releases.v1` and pulls each new release's partner view.

One consumer group per partner (`visit-share-partner-<id>`), so every partner gets every
notice. A release is pulled once: its folder's RELEASE.txt marks it done, written last, so
a reader killed mid-pull pulls it again. Offsets are committed after the pull (at least
once; the marker makes the repeat harmless). The end of the topic is the high watermark seen
in fetch responses, not `end_offsets()` (wrong on the embedded broker).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from visitshare.access.export import pull
from visitshare.access.partners import load_partners
from visitshare.producing import kafka
from visitshare.release.errors import ReleaseError
from visitshare.release.notices import NOTICE_TOPIC
from visitshare.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ReaderReport:
    pulled: list[int] = field(default_factory=list)
    already: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)  # release → why (e.g. expired)


class PartnerReader:
    def __init__(self, settings: Settings, partner_id: str, out_dir: Path, fmt: str = "parquet"):
        self.settings = settings
        self.partner = load_partners(settings).get(partner_id)  # unknown partner: error now
        self.out_dir = out_dir
        self.fmt = fmt
        self.report = ReaderReport()

    def done(self, release_id: int) -> bool:
        return (self.out_dir / self.partner.id / f"release-{release_id}" / "RELEASE.txt").exists()

    def handle(self, value: bytes) -> None:
        try:
            notice = json.loads(value)
            rid = int(notice["release_id"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed release notice (%d bytes)", len(value))
            return
        if self.done(rid):
            self.report.already.append(rid)
            return
        try:
            pull(self.settings, self.partner.id, rid, self.fmt, self.out_dir)
        except ReleaseError as exc:  # expired meanwhile: nothing to pull, say so
            self.report.skipped[rid] = str(exc)
            log.warning("release %d not pulled: %s", rid, exc)
            return
        self.report.pulled.append(rid)
        log.info("partner %s pulled release %d", self.partner.id, rid)

    def run(self, once: bool, stop: threading.Event | None = None, idle_seconds: float = 10.0):
        """Pull announced releases; `once`: stop at the end of the topic."""
        stop = stop or threading.Event()
        consumer = kafka.consumer(self.settings, group_id=f"visit-share-partner-{self.partner.id}")
        topic = self.settings.topic(NOTICE_TOPIC)
        consumer.subscribe([topic])
        last_activity = time.monotonic()
        try:
            while not stop.is_set():
                batches = consumer.poll(timeout_ms=1000)
                for records in batches.values():
                    for r in records:
                        self.handle(r.value)
                if batches:
                    consumer.commit()
                    last_activity = time.monotonic()
                if once and self._at_end(consumer):
                    break
                if once and time.monotonic() - last_activity > idle_seconds:
                    break
        finally:
            consumer.close()
        return self.report

    @staticmethod
    def _at_end(consumer) -> bool:
        parts = consumer.assignment()
        if not parts:
            return False
        for tp in parts:
            high = consumer.highwater(tp)
            if high is None or consumer.position(tp) < high:
                return False
        return True
