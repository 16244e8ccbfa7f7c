"""`visitshare topics apply|list`: the declared topics."""

from __future__ import annotations

import typer
from rich.table import Table

from visitshare.console import console
from visitshare.producing.broker import ensure_broker
from visitshare.settings import Settings

app = typer.Typer(help="Kafka topics declared in infra/topics.yaml.")


@app.command("apply")
def topics_apply(ctx: typer.Context) -> None:
    """Create missing topics and grow partition counts (idempotent, never deletes)."""
    from visitshare.producing.topics import apply_topics

    settings: Settings = ctx.obj
    ensure_broker(settings)
    results = apply_topics(settings)
    table = Table(title=f"Topics on {settings.bootstrap}", title_justify="left")
    for col in ("topic", "partitions", "action", "detail"):
        table.add_column(col)
    for r in results:
        color = {"failed": "red", "drift": "yellow", "created": "green"}.get(r.action, "")
        action = f"[{color}]{r.action}[/]" if color else r.action
        table.add_row(r.topic, str(r.partitions), action, r.detail)
    console.print(table)
    if any(r.action == "failed" for r in results):
        raise typer.Exit(1)


@app.command("list")
def topics_list(ctx: typer.Context) -> None:
    """Declared topics with their partitions and retention."""
    from visitshare.producing.topics import declared_topics

    settings: Settings = ctx.obj
    table = Table(title="Declared topics (infra/topics.yaml)", title_justify="left")
    for col in ("topic", "partitions", "retention (days)", "description"):
        table.add_column(col)
    for t in declared_topics(settings):
        table.add_row(
            settings.topic(t.name),
            str(t.partitions),
            f"{t.retention_ms / 86_400_000:g}",
            t.description,
        )
    console.print(table)
