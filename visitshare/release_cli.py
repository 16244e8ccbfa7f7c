"""Command line of the shared zone: publish, pull, releases, db apply, partner follow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from visitshare.console import console, err_console
from visitshare.settings import Settings

releases_app = typer.Typer(help="Published releases of the shared zone.")
db_app = typer.Typer(help="The project database and partner access (roles, row-level security).")
partner_app = typer.Typer(help="The partner side: follow release notices and pull each release.")


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
) -> None:
    """Anonymize, join and release the validated zone (Iceberg + SQL tables, notice)."""
    from visitshare.release import get_release, publish

    settings: Settings = ctx.obj
    published = publish(settings, force=force, new_key=new_key, say=err_console.print)
    if published is None:
        latest = get_release(settings)
        console.print(
            f"nothing new validated since release {latest.id}: no release made "
            "(--force publishes anyway)"
        )
        return
    print_published(settings, published)


def pull(
    ctx: typer.Context,
    partner: Annotated[str, typer.Option(help="Partner id (infra/partners.yaml).")],
    release: Annotated[str, typer.Option(help="'latest' or a release id.")] = "latest",
    format: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    out: Annotated[Path | None, typer.Option(help="Folder (default var/exports).")] = None,
) -> None:
    """Export exactly one partner's view of a release."""
    from visitshare.partners import pull as do_pull

    settings: Settings = ctx.obj
    rid, written = do_pull(settings, partner, release, format, out or settings.var / "exports")
    table = Table(title=f"Release {rid} for {partner}", title_justify="left")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("file")
    for name, (path, rows) in written.items():
        table.add_row(name, f"{rows:,}", str(path))
    console.print(table)


@releases_app.command("list")
def releases_list(ctx: typer.Context) -> None:
    """Every release: id, when, status, rows per table, notice sent."""
    import sqlalchemy as sa

    from visitshare.db import engine_for
    from visitshare.release import releases

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


@releases_app.command("show")
def releases_show(ctx: typer.Context, release: str = "latest") -> None:
    """One release's tables (snapshot ids, rows) and disclosure summary."""
    from visitshare.disclosure import DisclosureReport
    from visitshare.release import get_release

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


@db_app.command("apply")
def db_apply(ctx: typer.Context) -> None:
    """Create/update tables; on PostgreSQL also partner roles, grants and row-level security."""
    from visitshare.access import apply

    report = apply(ctx.obj)
    console.print(f"{report.dialect}: tables {', '.join(report.tables)}")
    if report.roles:
        console.print(f"roles: {', '.join(report.roles)}")
        console.print(f"row-level security: {report.policies_file}")
    else:
        console.print(
            "no roles: row-level security needs PostgreSQL (VISITSHARE_DATABASE_URL); "
            "`visitshare pull` applies the partner scopes"
        )


@partner_app.command("follow")
def partner_follow(
    ctx: typer.Context,
    partner: Annotated[str, typer.Option(help="Partner id (infra/partners.yaml).")],
    out: Annotated[Path | None, typer.Option(help="Folder (default var/exports).")] = None,
    format: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    once: Annotated[
        bool, typer.Option("--once", help="Stop at the end of the notices instead of following.")
    ] = False,
) -> None:
    """Follow releases.v1 and pull every new release for the partner."""
    from consumers.partner_reader import PartnerReader

    settings: Settings = ctx.obj
    reader = PartnerReader(settings, partner, out or settings.var / "exports", format)
    try:
        report = reader.run(once=once)
    except KeyboardInterrupt:
        report = reader.report
    console.print(
        f"pulled {report.pulled or 'none'}; already had {report.already or 'none'}"
        + (f"; skipped {report.skipped}" if report.skipped else "")
    )
