"""`visitshare audit release N [--against M]`: recompute the disclosure guarantees of a release."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from visitshare.console import console
from visitshare.errors import UserError
from visitshare.settings import Settings

app = typer.Typer(help="Audit what was published: recomputed from the published tables alone.")


@app.command("release")
def audit_release(
    ctx: typer.Context,
    release: Annotated[int, typer.Argument(help="The release to audit.")],
    against: Annotated[
        int | None, typer.Option(help="Compare with this release (default: the one before).")
    ] = None,
) -> None:
    """k, l-diversity, identifier shapes, suppressed-cell bounds, re-identification risk and
    the differencing attack, on the release's Iceberg snapshots; HTML + JSON report."""
    from visitshare.release.audit import audit_release as run

    settings: Settings = ctx.obj
    report, page = run(settings, release, against)
    table = Table(
        title=f"Audit of release {report.release_id}"
        + (f" against {report.against}" if report.against is not None else ""),
        title_justify="left",
    )
    for col in ("check", "result", "detail"):
        table.add_column(col, overflow="fold")
    for c in report.checks:
        color = "green" if c.result.value == "passed" else "red"
        table.add_row(c.name, f"[{color}]{c.result.value}[/]", c.detail)
    console.print(table)
    console.print(f"report: {page} (and .json)")
    if report.result.value != "passed":
        raise UserError(f"release {release} fails its audit")
