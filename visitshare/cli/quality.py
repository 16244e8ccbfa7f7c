"""`visitshare validate` and `visitshare quarantine …`: the quality stage."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from visitshare.console import console
from visitshare.contracts import ContractRegistry
from visitshare.settings import Settings

DATASET_OPTION = typer.Option(help="A dataset (contract name); default: every dataset.")


app = typer.Typer(help="Rows that failed validation: what, why, and re-validating them.")


def validate(
    ctx: typer.Context,
    dataset: Annotated[str | None, DATASET_OPTION] = None,
    reprocess: Annotated[
        bool,
        typer.Option(
            "--reprocess", help="Forget earlier validation of the dataset and redo all of it."
        ),
    ] = False,
) -> None:
    """Validate what landed since the last run: validated zone, quarantine, run record, Data Docs."""
    from visitshare.quality.validate import reset
    from visitshare.quality.validate import validate as run_validation

    settings: Settings = ctx.obj
    names = ContractRegistry.load(settings.contracts_dir).names()
    for name in [dataset] if dataset else names:
        if reprocess:
            reset(settings, name)
        print_validation_run(run_validation(settings, name))


@app.command("list")
def quarantine_list(
    ctx: typer.Context, dataset: Annotated[str | None, DATASET_OPTION] = None
) -> None:
    """Quarantined rows per dataset and reason."""
    from visitshare.quality.quarantine import counts

    rows = counts(ctx.obj, dataset)
    if not rows:
        console.print("the quarantine is empty")
        return
    table = Table(title="Quarantine", title_justify="left")
    for col in ("dataset", "reason", "rows"):
        table.add_column(col, justify="right" if col == "rows" else "left")
    for c in rows:
        table.add_row(c.dataset, c.reason, f"{c.rows:,}")
    console.print(table)


@app.command("show")
def quarantine_show(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="A dataset (contract name).")],
    reason: Annotated[str | None, typer.Option(help="Only rows with this reason.")] = None,
    limit: Annotated[int, typer.Option(help="Rows to show.", min=1)] = 20,
    reveal: Annotated[
        bool, typer.Option("--reveal", help="Show direct identifiers and free text.")
    ] = False,
) -> None:
    """Quarantined rows: source offset, reasons, fields (personal data masked unless --reveal)."""
    from visitshare.quality.quarantine import rows

    for r in rows(ctx.obj, dataset, reason, limit, reveal):
        fields = ", ".join(f"{k}={v}" for k, v in r["fields"].items() if v is not None)
        console.print(
            f"[bold]{r['source']}[/] {', '.join(r['reasons'])} ({r['parse_status']})\n  {fields}"
        )


@app.command("release")
def quarantine_release(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="A dataset (contract name).")],
    reason: Annotated[str | None, typer.Option(help="Only rows with this reason.")] = None,
) -> None:
    """Re-validate quarantined rows with the current contract and suite; move those that pass."""
    from visitshare.quality.quarantine import release

    print_validation_run(release(ctx.obj, dataset, reason))


def print_validation_run(run) -> None:
    """Counts of a validation run (`visitshare.quality.records.ValidationRun`) and where to look."""
    verb = "re-validated" if run.kind == "release" else "validated"
    if run.rows_in == 0:
        console.print(f"{run.dataset}: nothing new to validate")
        return
    console.print(
        f"[bold]{run.dataset}[/] {verb}: {run.rows_in:,} rows → {run.valid:,} valid, "
        f"{run.quarantined:,} quarantined ({run.duplicates:,} duplicates) — run {run.run_id}"
    )
    if run.quarantined_by_reason:
        table = Table(title="Quarantined by reason", title_justify="left")
        table.add_column("reason")
        table.add_column("rows", justify="right")
        for reason, n in sorted(run.quarantined_by_reason.items(), key=lambda kv: -kv[1]):
            table.add_row(reason, f"{n:,}")
        console.print(table)
    if run.warnings_by_reason:
        console.print(
            "warnings (reported, not quarantined): "
            + ", ".join(f"{r} {n:,}" for r, n in run.warnings_by_reason.items())
        )
    if run.data_docs:
        console.print(f"Data Docs: {run.data_docs}")
