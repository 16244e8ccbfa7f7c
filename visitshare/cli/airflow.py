"""`visitshare airflow …`: the Airflow CLI on the embedded stack."""

from __future__ import annotations

import typer

from visitshare.producing.broker import ensure_broker
from visitshare.settings import Settings


def airflow(ctx: typer.Context) -> None:
    """Run the Airflow CLI on the embedded stack, e.g. `visitshare airflow dags test ingest_events`."""
    from visitshare.orchestration.airflow_env import run_airflow

    settings: Settings = ctx.obj
    if any(a in ("dags", "tasks") for a in ctx.args[:1]):
        ensure_broker(settings)  # DAG tasks talk to Kafka
    raise typer.Exit(run_airflow(settings, list(ctx.args)))
