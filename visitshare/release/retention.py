"""Retention: releases older than the retention period expire (never the latest)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa

from visitshare.db import engine_for
from visitshare.db.tables import release_files, releases
from visitshare.release import shared
from visitshare.release.releases import latest_release
from visitshare.settings import Settings

log = logging.getLogger(__name__)


# -- retention and reading ---------------------------------------------------------------------
def expire_releases(settings: Settings, now: datetime | None = None) -> list[int]:
    """Expire releases older than the retention period (never the latest); the ids expired."""
    now = now or settings.clock.now()
    cutoff = now - timedelta(days=settings.release_retention_days)
    engine = engine_for(settings)
    with engine.begin() as conn:
        latest = latest_release(conn)
        if latest is None:
            return []
        old = conn.execute(
            sa.select(releases.c.id, releases.c.published_at).where(
                releases.c.status == "published", releases.c.id < latest.id
            )
        ).all()
        ids = [r.id for r in old if r.published_at < cutoff]
        if not ids:
            return []
        conn.execute(
            releases.update().where(releases.c.id.in_(ids)).values(status="expired", expired_at=now)
        )
        # Rows and files no release that is kept shows: superseded at or before the oldest kept.
        oldest = conn.execute(
            sa.select(sa.func.min(releases.c.id)).where(releases.c.status == "published")
        ).scalar()
        for spec in shared.tables(settings):
            if spec.sql and sa.inspect(conn).has_table(spec.sql):
                t = sa.Table(spec.sql, sa.MetaData(), autoload_with=conn)
                if "superseded_by" in t.c:
                    conn.execute(t.delete().where(t.c.superseded_by <= oldest))
                else:
                    conn.execute(t.delete().where(t.c.release_id.in_(ids)))
        conn.execute(release_files.delete().where(release_files.c.release_to <= oldest))
    cat = shared.catalog(settings)
    for spec in shared.tables(settings):
        for rid in ids:
            shared.untag_release(cat, spec, rid)
        if cat.table_exists(spec.iceberg):
            cat.load_table(spec.iceberg).maintenance.expire_snapshots().older_than(cutoff).commit()
    return ids
