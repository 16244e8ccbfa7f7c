"""Release notices on `releases.v1`: what a partner needs to decide to pull (no data)."""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlalchemy as sa

from visitshare.db import engine_for
from visitshare.db.tables import releases
from visitshare.settings import Settings

log = logging.getLogger(__name__)


NOTICE_TOPIC = "releases.v1"


# -- notices -----------------------------------------------------------------------------------
def notice(row: sa.Row) -> dict[str, Any]:
    """The `releases.v1` message: what a partner needs to decide to pull (no data)."""
    return {
        "release_id": row.id,
        "published_at": row.published_at.isoformat(),
        "tables": {
            name: {"snapshot_id": t["snapshot_id"], "rows": t["rows"]}
            for name, t in row.tables.items()
        },
        "disclosure_result": row.disclosure["result"],
    }


def send_pending_notices(settings: Settings) -> list[int]:
    """Send the notice of every published release not yet announced; the ids sent."""
    from visitshare.producing import kafka

    engine = engine_for(settings)
    with engine.connect() as conn:
        pending = conn.execute(
            sa.select(releases)
            .where(releases.c.notice_sent.is_(False), releases.c.status == "published")
            .order_by(releases.c.id)
        ).all()
    if not pending:
        return []
    if settings.embedded_broker:
        from visitshare.producing.broker import EmbeddedBroker

        if not EmbeddedBroker(settings).status().running:
            log.warning("release notice not sent: the embedded broker is not running")
            return []
    sent = []
    try:
        producer = kafka.producer(settings)
    except Exception as exc:
        log.warning("release notice not sent (broker unreachable: %s); retried next publish", exc)
        return []
    try:
        for row in pending:
            value = json.dumps(notice(row), ensure_ascii=False).encode()
            producer.send(settings.topic(NOTICE_TOPIC), key=str(row.id).encode(), value=value).get(
                timeout=settings.delivery_timeout_ms / 1000
            )
            with engine.begin() as conn:
                conn.execute(
                    releases.update().where(releases.c.id == row.id).values(notice_sent=True)
                )
            sent.append(row.id)
    except Exception as exc:
        log.warning("release notice not sent (%s); retried next publish", exc)
    finally:
        producer.close(timeout=5)
    return sent
