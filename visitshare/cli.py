"""The `visitshare` command line. Each command is a thin call into the packages."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from producers import cli as producer_cli
from producers.publisher import PublishError
from visitshare.broker import BrokerError, EmbeddedBroker, ensure_broker
from visitshare.console import UserError, console, err_console, print_publish_report, setup_logging
from visitshare.contracts import ContractError, ContractRegistry, json_schema
from visitshare.settings import Settings

app = typer.Typer(
    help="visit-share: privacy-safe sharing of the Tokyo home-visit programme's outcomes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
broker_app = typer.Typer(help="The embedded Kafka-compatible broker (Tansu) on loopback.")
topics_app = typer.Typer(help="Kafka topics declared in infra/topics.yaml.")
contracts_app = typer.Typer(help="Data contracts in schemas/.")
bench_app = typer.Typer(help="Benchmarks (results in var/bench/<name>.json).")
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")
app.add_typer(contracts_app, name="contracts")
app.add_typer(producer_cli.outbox_app, name="outbox")
app.add_typer(bench_app, name="bench")
app.command()(producer_cli.simulate)
app.command()(producer_cli.produce)


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    setup_logging(verbose)
    ctx.obj = Settings()


# -- broker --------------------------------------------------------------------------------
@broker_app.command("start")
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
    from visitshare.topics import apply_topics

    results = apply_topics(settings)
    console.print(
        f"broker started: pid {status.pid} on {status.bootstrap}, log {status.log_path}; "
        f"{sum(r.action == 'created' for r in results)} topics created"
    )


@broker_app.command("stop")
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


@broker_app.command("status")
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


# -- topics --------------------------------------------------------------------------------
@topics_app.command("apply")
def topics_apply(ctx: typer.Context) -> None:
    """Create missing topics and grow partition counts (idempotent, never deletes)."""
    from visitshare.topics import apply_topics

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


@topics_app.command("list")
def topics_list(ctx: typer.Context) -> None:
    """Declared topics with their partitions and retention."""
    from visitshare.topics import declared_topics

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


# -- contracts ------------------------------------------------------------------------------
@contracts_app.command("list")
def contracts_list(ctx: typer.Context) -> None:
    """Contracts, their topics and field counts by PII class."""
    registry = ContractRegistry.load(ctx.obj.contracts_dir)
    table = Table(title="Data contracts", title_justify="left")
    for col in ("contract", "topic", "fields", "PII classes"):
        table.add_column(col)
    for c in registry:
        classes = {}
        for f in c.fields:
            classes[f.pii.value] = classes.get(f.pii.value, 0) + 1
        table.add_row(
            c.id, c.topic, str(len(c.fields)), ", ".join(f"{k} {v}" for k, v in classes.items())
        )
    console.print(table)


@contracts_app.command("show")
def contracts_show(ctx: typer.Context, name: str) -> None:
    """Every field of a contract: type, required, PII class, disclosure, description."""
    c = ContractRegistry.load(ctx.obj.contracts_dir).get(name)
    table = Table(title=f"{c.id} → {c.topic}", title_justify="left", show_lines=False)
    for col in ("field", "type", "req", "pii", "shared as", "description"):
        table.add_column(col, overflow="fold")
    for f in c.fields:
        d = f.disclosure
        shared = "keep" if d is None else d.action + (f" {d.coarsen or d.cap or ''}".rstrip())
        table.add_row(
            f.name, f.type.value, "yes" if f.required else "", f.pii.value, shared, f.description
        )
    console.print(table)


@contracts_app.command("json-schema")
def contracts_json_schema(ctx: typer.Context, name: str) -> None:
    """Print the JSON Schema derived from a contract."""
    c = ContractRegistry.load(ctx.obj.contracts_dir).get(name)
    sys.stdout.write(json.dumps(json_schema(c), ensure_ascii=False, indent=2) + "\n")


# -- benchmarks -----------------------------------------------------------------------------
@bench_app.command("produce")
def bench_produce(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="Visit events per round.", min=1000)] = 200_000,
    rounds: Annotated[int, typer.Option(help="Alternating rounds of each.", min=1)] = 2,
) -> None:
    """Our producer path vs a raw kafka-python producer (target: ours ≥ 0.7 × raw)."""
    from visitshare.bench import produce, write_result

    result = produce.run(ctx.obj, events=events, rounds=rounds, say=err_console.print)
    path = write_result(ctx.obj, result)
    console.print(f"written {path}")
    console.print(result.result_line())


# -- the main job ---------------------------------------------------------------------------
@app.command()
def run(
    ctx: typer.Context,
    days: Annotated[int, typer.Option(help="Days to simulate.", min=1)] = 7,
    municipalities: Annotated[
        str, typer.Option(help="Codes or names.")
    ] = producer_cli.DEFAULT_MUNICIPALITIES,
    bad_rate: Annotated[
        float, typer.Option(help="Share of malformed events.", min=0.0, max=1.0)
    ] = 0.01,
    seed: Annotated[int, typer.Option(help="Simulation seed.")] = 42,
) -> None:
    """The main job: bring up the stack, simulate and publish a slice of Tokyo, summarize."""
    from producers.simulator import SimConfig
    from visitshare.topics import apply_topics

    settings: Settings = ctx.obj
    status = ensure_broker(settings)
    apply_topics(settings)
    where = "embedded Tansu" if status.embedded else "external Kafka"
    console.print(f"[bold]broker[/]: {where} at {settings.bootstrap}")
    config = SimConfig(
        days=days, municipalities=tuple(municipalities.split(",")), seed=seed, bad_rate=bad_rate
    )
    report = producer_cli.publish_simulation(settings, config)
    print_publish_report(report)
    if status.embedded:
        console.print("the broker keeps running for the next stages; `make down` stops it")


def main() -> None:
    try:
        app()
    except (UserError, BrokerError, ContractError, PublishError) as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    except ValidationError as exc:  # a VISITSHARE_* variable with a bad value
        err_console.print(f"[red]error: invalid settings:[/] {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
