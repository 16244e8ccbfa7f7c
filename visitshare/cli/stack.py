"""`visitshare run`, `up`, `down`: the main job and the event-driven stack."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from visitshare.cli.produce import (
    DEFAULT_MUNICIPALITIES,
    V2Share,
    print_publish_report,
    publish_simulation,
)
from visitshare.console import console, err_console
from visitshare.contracts import ContractRegistry
from visitshare.errors import UserError
from visitshare.orchestration.airflow_env import API_HOST
from visitshare.producing.broker import ensure_broker
from visitshare.producing.topics import dataset_topics, event_topics
from visitshare.settings import Settings


def run(
    ctx: typer.Context,
    days: Annotated[int, typer.Option(help="Days to simulate.", min=1)] = 7,
    municipalities: Annotated[str, typer.Option(help="Codes or names.")] = DEFAULT_MUNICIPALITIES,
    bad_rate: Annotated[
        float, typer.Option(help="Share of malformed events.", min=0.0, max=1.0)
    ] = 0.01,
    seed: Annotated[int, typer.Option(help="Simulation seed.")] = 42,
    timeout: Annotated[
        int, typer.Option(help="Seconds to wait for Airflow to release it all.", min=30)
    ] = 900,
    recent: Annotated[
        bool,
        typer.Option(
            "--recent/--closed-month",
            help="Simulate the days before today (their rows are held until their month "
            "closes) instead of the last days of the latest closed month.",
        ),
    ] = False,
    v2_share: V2Share = 0.25,
) -> None:
    """The main job: publish a slice of Tokyo; Airflow lands, validates and releases it.

    Record-level rows are released once their month has closed, so by default the simulated
    days are the last ones of the latest closed month: the release shows them at once."""

    from consumers.landing import landing_status
    from producers.simulator import SimConfig
    from visitshare.orchestration.run import run_pipeline
    from visitshare.producing.topics import apply_topics
    from visitshare.release.records import closed_window

    settings: Settings = ctx.obj
    status = ensure_broker(settings)
    apply_topics(settings)
    where = "embedded Tansu" if status.embedded else "external Kafka"
    console.print(f"[bold]broker[/]: {where} at {settings.bootstrap}")
    contracts = ContractRegistry.load(settings.contracts_dir)
    grace = max(contracts.get(d).disclosure.close_after_days for d in contracts.names())
    config = SimConfig(
        days=days,
        municipalities=tuple(municipalities.split(",")),
        seed=seed,
        bad_rate=bad_rate,
        start=None if recent else closed_window(days, settings.clock.now(), grace),
        visit_v2_share=v2_share,
    )
    # What was on the topics but not landed yet (an earlier run's leftovers) lands too.
    backlog = landing_backlog(landing_status(settings), event_topics(settings))
    since = settings.clock.now().replace(microsecond=0)
    published = publish_simulation(settings, config)
    print_publish_report(published)
    sent = dict(published.delivered)
    for (topic, _), n in published.dead_lettered.items():
        sent[topic] = sent.get(topic, 0) + n
    expected = {t: sent.get(t, 0) + backlog.get(t, 0) for t in {*sent, *backlog}}
    outcome = run_pipeline(settings, expected, since, timeout, say=err_console.print)
    print_run_summary(settings, sent, backlog, outcome)
    if published.outbox_pending:
        console.print(
            "[yellow]events in the outbox are not on the topics yet: they land after "
            "`visitshare outbox flush`[/]"
        )
    if settings.profile == "cluster":
        console.print("the broker and SeaweedFS keep running; `make down-cluster` stops them")
    elif status.embedded:
        console.print("the broker keeps running; `make down` stops it")


def _safe_url(url: str) -> str:
    """A database URL as printed: without its password."""
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


def landing_backlog(statuses, landed_topics: list[str]) -> dict[str, int]:
    """Records on the topics that landing takes and has not landed yet, per topic. Other
    topics (the release notices of `releases.v1`) are never landed: counting them would make
    the run wait for what cannot come."""
    wanted = set(landed_topics)
    backlog: dict[str, int] = {}
    for p in statuses:
        if p.topic in wanted:
            backlog[p.topic] = backlog.get(p.topic, 0) + (p.lag or 0)
    return backlog


def print_run_summary(settings: Settings, sent: dict, backlog: dict, outcome) -> None:
    """From topic to release, per dataset; where the outputs are; how a ward pulls its view."""
    contracts = ContractRegistry.load(settings.contracts_dir)
    rel = outcome.release
    released = {d["dataset"]: d["rows_published"] for d in rel.disclosure["datasets"]}
    stages = [
        "published to the topic",
        "rejected by the producer (DLQ)",
        "earlier backlog",
        "landed",
        "valid",
        "quarantined",
        "released (record-level rows)",
    ]
    columns: dict[str, list[int]] = {}
    marks = []
    ok = True
    for c in contracts:
        topic, dlq = dataset_topics(settings, c)
        before = backlog.get(topic, 0) + backlog.get(dlq, 0)
        landed = outcome.landed.get(topic, 0) + outcome.landed.get(dlq, 0)
        v = outcome.validation.get(c.name, {"rows_in": 0, "valid": 0, "quarantined": 0})
        out = sent.get(topic, 0) + sent.get(dlq, 0)
        good = landed == out + before and v["rows_in"] == v["valid"] + v["quarantined"] == landed
        ok &= good
        marks.append("[green]✓[/]" if good else "[red]✗[/]")
        columns[c.name] = [sent.get(topic, 0), sent.get(dlq, 0), before, landed, v["valid"],
                           v["quarantined"], released.get(c.name, 0)]  # fmt: skip
    table = Table(title="From topic to release", title_justify="left")
    table.add_column("stage")
    for name in columns:
        table.add_column(name, justify="right")
    for i, stage in enumerate(stages):
        table.add_row(stage, *(f"{col[i]:,}" for col in columns.values()))
    table.add_row("reconciles", *marks)
    console.print(table)
    console.print(
        "released = rows in the shared record-level table: rows of closed months, recoded to "
        "k-anonymity (rows of open months are held until their month closes; every valid row "
        "counts in the aggregated outcomes)"
    )
    runs = ", ".join(f"{d} {t} {s}" for d, t, s in outcome.dag_runs)
    console.print(f"[bold]Airflow runs[/]: {runs}")
    rows = ", ".join(f"{n} {t['rows']:,}" for n, t in rel.tables.items())
    console.print(f"[bold]Release {rel.id}[/] ({rel.disclosure['result']}): {rows}")
    from visitshare.release import shared
    from visitshare.release.disclosure import DisclosureReport
    from visitshare.release.releases import release_dir

    for line in DisclosureReport.model_validate(rel.disclosure).summary_lines():
        console.print(f"  {line}")
    docs = next((v["data_docs"] for v in outcome.validation.values() if v.get("data_docs")), None)
    console.print(f"Data Docs: {docs or settings.reports_dir / 'data_docs' / 'index.html'}")
    console.print(f"disclosure report: {release_dir(settings, rel.id) / 'disclosure.html'}")
    console.print(
        f"shared tables: Iceberg catalog {_safe_url(settings.catalog_uri)} (data under "
        f"{shared.warehouse(settings)}); SQL tables in {_safe_url(settings.db_url)}"
    )
    console.print(
        f"a ward pulls its view: .venv/bin/visitshare pull --partner shinjuku --release "
        f"{rel.id} --format csv"
    )
    if not ok:
        raise UserError("counts do not reconcile from topic to release (see the table)")


def up(ctx: typer.Context) -> None:
    """Start the embedded stack in the background: broker, landing service, Airflow."""
    from visitshare.orchestration import stack

    settings: Settings = ctx.obj
    stack.up(settings, say=console.print)
    stack.wait_for_api(settings)
    console.print(
        "up: events published now (`visitshare simulate --publish`) reach a release without "
        f"anyone triggering a DAG; Airflow UI http://{API_HOST}:{settings.airflow_api_port}; "
        "`visitshare down` stops all"
    )


def down(ctx: typer.Context) -> None:
    """Stop what `up` started (only our own processes), and the embedded broker."""
    from visitshare.orchestration import stack

    stack.down(ctx.obj, say=console.print)
