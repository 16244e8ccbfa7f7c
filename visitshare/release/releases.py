"""Reading releases: the latest, one by id, one table as a release has it, its report folder."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa

from visitshare.db import engine_for
from visitshare.db.tables import release_files, releases
from visitshare.release import shared
from visitshare.release.errors import ReleaseError
from visitshare.settings import Settings

log = logging.getLogger(__name__)


def latest_release(conn: sa.Connection) -> sa.Row | None:
    return conn.execute(
        sa.select(releases).where(releases.c.status == "published").order_by(releases.c.id.desc())
    ).first()


def release_dir(settings: Settings, release_id: int) -> Path:
    return settings.reports_dir / "releases" / str(release_id)


def get_release(settings: Settings, which: str | int = "latest") -> sa.Row:
    """A published release by id, or the latest; clear errors for unknown or expired ids."""
    engine = engine_for(settings)
    with engine.connect() as conn:
        latest = latest_release(conn)
        if str(which) == "latest":
            if latest is None:
                raise ReleaseError("no release has been published yet (run `visitshare publish`)")
            return latest
        try:
            rid = int(which)
        except ValueError:
            raise ReleaseError(f"release must be 'latest' or a number, not {which!r}") from None
        row = conn.execute(sa.select(releases).where(releases.c.id == rid)).first()
    if row is None:
        hint = f"latest is {latest.id}" if latest else "none published yet"
        raise ReleaseError(f"release {rid} does not exist ({hint})")
    if row.status != "published":
        raise ReleaseError(
            f"release {rid} expired on {row.expired_at:%Y-%m-%d} (kept "
            f"{settings.release_retention_days} days); latest is {latest.id if latest else '-'}"
        )
    return row


def read_table(settings: Settings, release: sa.Row, name: str, row_filter=None) -> pa.Table:
    """One shared table as it is in `release` (Iceberg snapshot of that release)."""
    spec = shared.table(settings, name)
    info = release.tables.get(name)
    if info is None:
        raise ReleaseError(f"release {release.id} has no table {name!r}")
    try:
        return shared.read_iceberg(shared.catalog(settings), spec, info["snapshot_id"], row_filter)
    except LookupError as exc:
        raise ReleaseError(f"release {release.id}: {exc}") from None


def files_of(conn: sa.Connection, release_id: int) -> list[sa.Row]:
    """Every data file release N shows (`release_files`: release_from <= N < release_to)."""
    return list(
        conn.execute(
            sa.select(release_files).where(
                release_files.c.release_from <= release_id,
                sa.or_(
                    release_files.c.release_to.is_(None), release_files.c.release_to > release_id
                ),
            )
        ).all()
    )
