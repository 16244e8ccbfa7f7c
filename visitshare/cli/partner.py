"""`visitshare pull` and `visitshare partner follow`: a partner's view of a release."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from visitshare.console import console
from visitshare.settings import Settings

app = typer.Typer(help="The partner side: follow release notices and pull each release.")


def pull(
    ctx: typer.Context,
    partner: Annotated[str, typer.Option(help="Partner id (infra/partners.yaml).")],
    release: Annotated[str, typer.Option(help="'latest' or a release id.")] = "latest",
    format: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    out: Annotated[Path | None, typer.Option(help="Folder (default var/exports).")] = None,
) -> None:
    """Export exactly one partner's view of a release."""
    from visitshare.access.export import pull as do_pull

    settings: Settings = ctx.obj
    rid, written = do_pull(settings, partner, release, format, out or settings.var / "exports")
    table = Table(title=f"Release {rid} for {partner}", title_justify="left")
    table.add_column("table")
    table.add_column("rows", justify="right")
    table.add_column("file")
    for name, (path, rows) in written.items():
        table.add_row(name, f"{rows:,}", str(path))
    console.print(table)
    if written:
        folder = next(iter(written.values()))[0].parent
        console.print(f"dashboard: {folder / 'dashboard.html'} (opens offline in a browser)")


@app.command("follow")
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
