"""`visitshare publish` and `visitshare releases list|show`: the shared zone."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from visitshare.console import console, err_console
from visitshare.settings import Settings

app = typer.Typer(help="Published releases of the shared zone.")


def print_published(settings: Settings, published) -> None:
    """Release id, table row counts and the disclosure summary."""
    table = Table(title=f"Release {published.release_id}", title_justify="left")
    for col in ("table", "rows", "Iceberg", "SQL"):
        table.add_column(col, justify="right" if col == "rows" else "left")
    for name, t in published.tables.items():
        table.add_row(name, f"{t['rows']:,}", t["iceberg"], t["sql"] or "-")
    console.print(table)
    console.print("[bold]disclosure control[/]")
    for line in published.report.summary_lines():
        console.print(f"  {line}")
    console.print(f"disclosure report: {published.report_html}")
    if not published.notice_sent:
        console.print(
            "[yellow]the notice to releases.v1 was not sent (broker unreachable); "
            "it is sent with the next publish[/]"
        )
    if published.expired:
        console.print(f"expired (past retention): releases {published.expired}")
    console.print(
        f"a ward pulls its view: visitshare pull --partner shinjuku --release "
        f"{published.release_id} --format csv"
    )


def publish(
    ctx: typer.Context,
    force: Annotated[
        bool, typer.Option("--force", help="Publish even if nothing changed since the latest.")
    ] = False,
    new_key: Annotated[
        bool,
        typer.Option("--new-key", help="Accept a pseudonym key different from the last release's."),
    ] = False,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Recompute every partition and replace every file (default: only the "
            "partitions that changed since the latest release; the result is the same).",
        ),
    ] = False,
) -> None:
    """Anonymize, join and release the validated zone (Iceberg + SQL tables, notice).

    Incremental: only the municipality × month partitions with newly validated rows (or a
    month that closed) are recomputed; every other partition is carried over unchanged."""
    from visitshare.release.publish import publish
    from visitshare.release.releases import get_release

    settings: Settings = ctx.obj
    published = publish(
        settings, force=force or full, new_key=new_key, say=err_console.print, full=full
    )
    if published is None:
        latest = get_release(settings)
        console.print(
            f"nothing new validated since release {latest.id}: no release made "
            "(--force publishes anyway)"
        )
        return
    print_published(settings, published)


@app.command("list")
def releases_list(ctx: typer.Context) -> None:
    """Every release: id, when, status, rows per table, notice sent."""
    import sqlalchemy as sa

    from visitshare.db import engine_for
    from visitshare.db.tables import releases

    with engine_for(ctx.obj).connect() as conn:
        rows = conn.execute(sa.select(releases).order_by(releases.c.id)).all()
    table = Table(title="Releases", title_justify="left")
    for col in ("id", "published (UTC)", "status", "rows", "disclosure", "notice"):
        table.add_column(col)
    for r in rows:
        total = sum(t["rows"] for t in r.tables.values())
        table.add_row(
            str(r.id),
            f"{r.published_at:%Y-%m-%d %H:%M:%S}",
            r.status,
            f"{total:,}",
            r.disclosure["result"],
            "sent" if r.notice_sent else "pending",
        )
    console.print(table)


@app.command("show")
def releases_show(ctx: typer.Context, release: str = "latest") -> None:
    """One release's tables (snapshot ids, rows) and disclosure summary."""
    from visitshare.release.disclosure import DisclosureReport
    from visitshare.release.releases import get_release

    r = get_release(ctx.obj, release)
    table = Table(
        title=f"Release {r.id} ({r.published_at:%Y-%m-%d %H:%M} UTC)", title_justify="left"
    )
    for col in ("table", "rows", "Iceberg", "snapshot"):
        table.add_column(col)
    for name, t in r.tables.items():
        table.add_row(name, f"{t['rows']:,}", t["iceberg"], str(t["snapshot_id"]))
    console.print(table)
    for line in DisclosureReport.model_validate(r.disclosure).summary_lines():
        console.print(f"  {line}")
