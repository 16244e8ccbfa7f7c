"""`visitshare deploy render`: the Strimzi manifests, rendered from infra/topics.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from visitshare.console import console
from visitshare.settings import Settings

app = typer.Typer(help="Deployment files for a Kubernetes cluster (infra/deploy/).")


@app.command("render")
def render(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option(help="Directory for kafka.yaml and topics.yaml [infra/deploy/strimzi]."),
    ] = None,
) -> None:
    """Write the Strimzi Kafka, node pool, user and KafkaTopic manifests (idempotent)."""
    from visitshare.orchestration.deploy import write

    settings: Settings = ctx.obj
    out = out or settings.infra_dir / "deploy" / "strimzi"
    written = write(settings, out)
    for path in written:
        console.print(f"wrote {path}")
    if not written:
        console.print(f"{out}: up to date")
