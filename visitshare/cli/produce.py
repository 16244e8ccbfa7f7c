"""Producer commands of the `visitshare` CLI: simulate, produce, outbox."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Annotated, BinaryIO

import typer
from rich.table import Table

from producers.publisher import Outgoing, Publisher, PublishReport
from producers.simulator import DATASETS, SimConfig, Simulator
from producers.sources import read_export
from visitshare.console import console, progress_bar
from visitshare.contracts import ContractRegistry
from visitshare.errors import UserError
from visitshare.producing.broker import ensure_broker
from visitshare.settings import Settings

outbox_app = typer.Typer(help="The local outbox of events the broker could not take.")

DEFAULT_MUNICIPALITIES = "13104,13112,13120"  # Shinjuku, Setagaya, Nerima


# The share of visits sent as visit_outcome v2 (`simulate` and `run`).
V2Share = Annotated[
    float,
    typer.Option(
        help="Share of visits sent as visit_outcome v2 (with the household's language), "
        "side by side with v1.",
        min=0.0,
        max=1.0,
    ),
]


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj


def _simulator(settings: Settings, config: SimConfig, contracts: ContractRegistry) -> Simulator:
    try:
        return Simulator(config, contracts, clock=settings.clock)
    except ValueError as exc:  # e.g. v2 visits asked for, and no visit_outcome.v2 contract
        raise UserError(str(exc)) from None


def publish_simulation(settings: Settings, config: SimConfig) -> PublishReport:
    """Simulate and publish with a progress bar (used by `simulate --publish` and `run`)."""
    contracts = ContractRegistry.load(settings.contracts_dir)
    sim = _simulator(settings, config, contracts)
    ensure_broker(settings)
    with Publisher(settings, contracts) as pub, progress_bar("publishing", sim.total) as advance:
        return pub.publish((Outgoing(e.dataset, e.payload) for e in sim.events()), advance)


def simulate(
    ctx: typer.Context,
    days: Annotated[int, typer.Option(help="Days to simulate.", min=1)] = 7,
    municipalities: Annotated[
        str, typer.Option(help="Codes or names, comma-separated; 'wards' or 'all' for groups.")
    ] = DEFAULT_MUNICIPALITIES,
    seed: Annotated[int, typer.Option(help="Same seed, same events.")] = 42,
    start: Annotated[
        str | None, typer.Option(help="First day (YYYY-MM-DD); default: `days` days before today.")
    ] = None,
    bad_rate: Annotated[
        float, typer.Option(help="Share of malformed events (0-1).", min=0.0, max=1.0)
    ] = 0.0,
    scale: Annotated[
        float, typer.Option(help="Volume multiplier (1 = Tokyo's yearly rates).")
    ] = 1.0,
    datasets: Annotated[str, typer.Option(help="Comma-separated contract names.")] = ",".join(
        DATASETS
    ),
    v2_share: V2Share = 0.25,
    publish: Annotated[bool, typer.Option("--publish", help="Publish to Kafka.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Write <dataset>.jsonl files into this directory.")
    ] = None,
) -> None:
    """Generate a realistic stream of Tokyo home visits and incidents, with the programme's
    feedback loop: visit requests, workshop sessions and attendance, resident surveys."""
    settings = _settings(ctx)
    try:
        config = SimConfig(
            days=days,
            municipalities=tuple(municipalities.split(",")),
            seed=seed,
            start=date.fromisoformat(start) if start else None,
            bad_rate=bad_rate,
            scale=scale,
            datasets=tuple(d.strip() for d in datasets.split(",")),
            visit_v2_share=v2_share,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if publish:
        print_publish_report(publish_simulation(settings, config))
        return
    contracts = ContractRegistry.load(settings.contracts_dir)
    sim = _simulator(settings, config, contracts)
    counts: Counter = Counter()
    files: dict[str, BinaryIO] = {}
    try:
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            files = {d: (out / f"{d}.jsonl").open("wb") for d in config.datasets}
        with progress_bar("simulating", sim.total) as advance:
            for e in sim.events():
                counts[(e.dataset, e.bad_kind or "valid")] += 1
                if files:
                    payload = e.payload
                    if isinstance(payload, dict):
                        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
                        payload = text.encode()
                    files[e.dataset].write(payload + b"\n")
                advance(1)
    finally:
        for f in files.values():
            f.close()
    table = Table(
        title=f"Simulated {config.days} days from {sim.start}, seed {seed}", title_justify="left"
    )
    table.add_column("dataset")
    table.add_column("kind")
    table.add_column("events", justify="right")
    for (dataset, kind), n in sorted(counts.items()):
        table.add_row(dataset, kind, f"{n:,}")
    console.print(table)
    if out is not None:
        console.print(f"written to {out}/<dataset>.jsonl; publish with `visitshare produce --from`")


def produce(
    ctx: typer.Context,
    source: Annotated[
        Path, typer.Option("--from", help="JSON Lines or CSV export.", exists=True, dir_okay=False)
    ],
    dataset: Annotated[
        str | None, typer.Option(help="Contract name; default from the file name.")
    ] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="jsonl or csv; default from the suffix.")
    ] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of a CSV file.")] = "utf-8-sig",
    source_system: Annotated[str | None, typer.Option(help="Source system header value.")] = None,
) -> None:
    """Publish a police system's export: valid events to the topic, the rest to the DLQ."""
    settings = _settings(ctx)
    contracts = ContractRegistry.load(settings.contracts_dir)
    try:
        items = read_export(source, contracts, dataset, fmt, encoding)
    except (ValueError, KeyError) as exc:
        raise UserError(exc.args[0]) from None
    ensure_broker(settings)
    with (
        Publisher(settings, contracts, source_system=source_system) as pub,
        progress_bar(f"publishing {source.name}", None) as advance,
    ):
        report = pub.publish(items, advance)
    print_publish_report(report)


@outbox_app.command("status")
def outbox_status(ctx: typer.Context) -> None:
    """Events waiting in the outbox, per topic."""
    from producers.outbox import Outbox

    box = Outbox(_settings(ctx).outbox_path)
    try:
        summary = box.summary()
        if not summary:
            console.print("outbox is empty")
            return
        table = Table(title=f"Outbox {box.path}", title_justify="left")
        table.add_column("topic")
        table.add_column("events", justify="right")
        for topic, n in summary.items():
            table.add_row(topic, f"{n:,}")
        console.print(table)
        console.print(f"oldest enqueued at {box.oldest()}")
    finally:
        box.close()


@outbox_app.command("flush")
def outbox_flush(ctx: typer.Context) -> None:
    """Send the outbox's events, oldest first, now that the broker is back."""
    settings = _settings(ctx)
    ensure_broker(settings)
    with Publisher(settings, ContractRegistry.load(settings.contracts_dir)) as pub:
        report = pub.flush_outbox()
    console.print(f"delivered {report.outbox_flushed:,} events from the outbox")
    if report.outbox_pending:
        raise UserError(f"{report.outbox_pending:,} events still wait: {report.broker_error}")


def publish_report_tables(report) -> list[Table]:
    """Tables for a `PublishReport`: per topic, DLQ reasons, outbox, throughput."""
    topics = Table(title="Events by topic", title_justify="left")
    topics.add_column("topic")
    topics.add_column("events", justify="right")
    for topic, n in sorted(report.delivered.items()):
        topics.add_row(topic, f"{n:,}")
    dlq_by_topic: dict[str, int] = {}
    for (topic, _), n in report.dead_lettered.items():
        dlq_by_topic[topic] = dlq_by_topic.get(topic, 0) + n
    for topic, n in sorted(dlq_by_topic.items()):
        topics.add_row(topic, f"{n:,}")
    if report.outboxed:
        topics.add_row("[yellow]local outbox (broker unreachable)[/]", f"{report.outboxed:,}")
    topics.add_section()
    topics.add_row("[bold]events in[/]", f"[bold]{report.events_in:,}[/]")

    tables = [topics]
    if report.rejected:
        reasons = Table(title="Rejected by the contract (to the DLQ)", title_justify="left")
        reasons.add_column("reason")
        reasons.add_column("events", justify="right")
        for reason, n in report.rejected.most_common():
            reasons.add_row(reason, f"{n:,}")
        tables.append(reasons)
    return tables


def print_publish_report(report, what: str = "published") -> None:
    for table in publish_report_tables(report):
        console.print(table)
    mb = report.bytes_sent / 1e6
    console.print(
        f"{what}: {report.events_in:,} events in {report.elapsed_s:.2f} s "
        f"({report.rate:,.0f} events/s, {mb:,.1f} MB sent)"
    )
    if report.outbox_flushed:
        console.print(f"outbox: {report.outbox_flushed:,} earlier events delivered first")
    if report.outbox_pending:
        console.print(
            f"[yellow]outbox: {report.outbox_pending:,} events wait in the local outbox "
            f"({report.broker_error}); `visitshare outbox flush` sends them in order[/]"
        )
    if not report.reconciles():  # pragma: no cover - a bug, shown loudly if it ever happens
        console.print("[red]counts do not reconcile: events in ≠ delivered + DLQ + outbox[/]")
