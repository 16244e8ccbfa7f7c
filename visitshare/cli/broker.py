"""`visitshare broker start|stop|status`: the embedded broker."""

from __future__ import annotations

import typer

from visitshare.console import console
from visitshare.producing.broker import EmbeddedBroker
from visitshare.settings import Settings

app = typer.Typer(help="The embedded Kafka-compatible broker (Tansu) on loopback.")


@app.command("start")
def broker_start(ctx: typer.Context) -> None:
    """Start the embedded broker (if not running) and create the declared topics."""
    settings: Settings = ctx.obj
    if not settings.embedded_broker:
        console.print(f"external Kafka configured ({settings.bootstrap}): nothing to start")
        return
    broker = EmbeddedBroker(settings)
    status, started = broker.start()
    if not started:
        console.print(f"broker already running: pid {status.pid} on {status.bootstrap}")
        return
    from visitshare.producing.topics import apply_topics

    results = apply_topics(settings)
    console.print(
        f"broker started: pid {status.pid} on {status.bootstrap}, log {status.log_path}; "
        f"{sum(r.action == 'created' for r in results)} topics created"
    )


@app.command("stop")
def broker_stop(ctx: typer.Context) -> None:
    """Stop the embedded broker we started (never any other process)."""
    settings: Settings = ctx.obj
    if not settings.embedded_broker:
        console.print(f"external Kafka configured ({settings.bootstrap}): nothing to stop")
        return
    if EmbeddedBroker(settings).stop():
        console.print("broker stopped (its in-memory topics are gone)")
    else:
        console.print("broker was not running")


@app.command("status")
def broker_status(ctx: typer.Context) -> None:
    """Whether the broker runs, where, and its PID and log."""
    status = EmbeddedBroker(ctx.obj).status()
    if not status.embedded:
        console.print(f"external Kafka: {status.bootstrap}")
        return
    if status.running:
        console.print(
            f"running: pid {status.pid} on {status.bootstrap} since {status.started_at}, "
            f"log {status.log_path}"
        )
    else:
        console.print(f"{status.detail} ({status.bootstrap})")
        raise typer.Exit(3)
