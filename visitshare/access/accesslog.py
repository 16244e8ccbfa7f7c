"""The sharing server's access log: one row per request, allowed or refused.

It records who (partner, token id, peer address), what (endpoint, share/schema/table, release)
and how much (files listed or served, rows, bytes), with the HTTP status, never a data value or
a token. `visitshare share log` reads it; auditors get it as an offline page with
`visitshare share log --html`.
"""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from visitshare.db import engine_for
from visitshare.db.tables import share_access_log
from visitshare.landing.files import write_text_atomic
from visitshare.settings import Settings

COLUMNS = (
    "at",
    "partner_id",
    "token_id",
    "method",
    "endpoint",
    "share",
    "schema_name",
    "table_name",
    "release_id",
    "files",
    "rows",
    "bytes",
    "status",
    "client",
)


def record(settings: Settings, **entry) -> None:
    """Append one request (columns of `share_access_log`; `at` defaults to the clock's now)."""
    entry.setdefault("at", settings.clock.now())
    with engine_for(settings).begin() as conn:
        conn.execute(share_access_log.insert().values(**entry))


def entries(
    settings: Settings, partner: str | None = None, since: datetime | None = None
) -> list[sa.Row]:
    q = sa.select(share_access_log).order_by(share_access_log.c.id)
    if partner:
        q = q.where(share_access_log.c.partner_id == partner)
    if since is not None:
        q = q.where(share_access_log.c.at >= since)
    with engine_for(settings).connect() as conn:
        return list(conn.execute(q).all())


def write_html(rows: list[sa.Row], path: Path, title: str) -> Path:
    """The log as one self-contained page (no script, no outside reference)."""

    def cell(v) -> str:
        text = "" if v is None else f"{v:%Y-%m-%d %H:%M:%S}Z" if isinstance(v, datetime) else v
        return f"<td>{html.escape(str(text))}</td>"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr"
        + (' class="refused"' if r.status >= 400 else "")
        + ">"
        + "".join(cell(getattr(r, c)) for c in COLUMNS)
        + "</tr>"
        for r in rows
    )
    refused = sum(r.status >= 400 for r in rows)
    write_text_atomic(
        path,
        f"""<!doctype html><html lang="en"><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,"IPAexGothic",sans-serif;margin:2em}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:2px 6px}}
th{{background:#eee}}tr.refused td{{background:#fde8e8}}</style>
<h1>{html.escape(title)}</h1>
<p>{len(rows)} requests, {refused} refused (status 4xx/5xx, shaded). Counts only: no data value
or token is ever logged.</p>
<table><tr>{head}</tr>{body}</table></html>
""",
    )
    return path
