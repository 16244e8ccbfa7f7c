"""`visitshare maintain`: compaction and table maintenance (what the maintain_tables DAG runs)."""

from __future__ import annotations

import typer
from rich.table import Table

from visitshare.console import console, err_console
from visitshare.settings import Settings


def maintain(ctx: typer.Context) -> None:
    """Compact the validated zone, rewrite small Iceberg files, expire old snapshots and
    remove unreferenced files, without changing any row of any release.

    Only validated files a release already includes are compacted; every new file is read back
    and checked (rows and content checksum) before it replaces the old ones. Exits with code 1
    when a partition could not be compacted or rewritten (it is left as it was)."""
    from visitshare.release.maintain import maintain as run_maintenance

    settings: Settings = ctx.obj
    report = run_maintenance(settings, say=err_console.print)
    table = Table(title=f"Maintenance ({report.run_id})", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    for what, count in report.summary():
        table.add_row(what, count)
    console.print(table)
    for f in report.validated.failures:
        console.print(
            f"[red]not compacted[/] {f.dataset} {f.municipality_code} {f.month}: {f.reason}"
        )
    for line in report.iceberg_failures:
        console.print(f"[red]not rewritten[/] {line}")
    for line in report.iceberg_skipped:
        console.print(f"[yellow]skipped[/] {line}")
    if report.failed:
        raise typer.Exit(1)
