"""The `visitshare` command line. Each command is a thin call into the packages."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from consumers.landing import LandingError
from producers import cli as producer_cli
from producers.publisher import PublishError
from visitshare import release_cli
from visitshare.anonymize import DisclosureError
from visitshare.broker import BrokerError, EmbeddedBroker, ensure_broker
from visitshare.console import (
    UserError,
    console,
    err_console,
    print_land_report,
    print_publish_report,
    print_validation_run,
    setup_logging,
)
from visitshare.contracts import ContractError, ContractRegistry, json_schema
from visitshare.keys import PseudonymKeyError
from visitshare.orchestrate import PipelineError
from visitshare.partners import PartnerError
from visitshare.quality.errors import QualityError, SuiteError
from visitshare.release import ReleaseError
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
quarantine_app = typer.Typer(help="Rows that failed validation: what, why, and re-validating them.")
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")
app.add_typer(contracts_app, name="contracts")
app.add_typer(producer_cli.outbox_app, name="outbox")
app.add_typer(bench_app, name="bench")
app.add_typer(quarantine_app, name="quarantine")
app.command()(producer_cli.simulate)
app.command()(producer_cli.produce)
app.command()(release_cli.publish)
app.command()(release_cli.pull)
app.add_typer(release_cli.releases_app, name="releases")
app.add_typer(release_cli.db_app, name="db")
app.add_typer(release_cli.partner_app, name="partner")


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


# -- landing --------------------------------------------------------------------------------
@app.command()
def land(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", help="Run as a service until SIGTERM.")
    ] = False,
    drain: Annotated[
        bool, typer.Option("--drain", help="Land up to the high watermark, exit.")
    ] = False,
    topic: Annotated[
        list[str] | None, typer.Option(help="Topic(s) to land; default: all declared.")
    ] = None,
) -> None:
    """Land Kafka topics into raw Parquet files (exactly once, with a manifest)."""
    import signal
    import threading

    from consumers.landing import land as run_land

    if follow == drain:
        raise UserError("choose one of --drain (land what is there, exit) or --follow (a service)")
    settings: Settings = ctx.obj
    ensure_broker(settings)
    stop = threading.Event()
    if follow:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        console.print(f"landing {settings.bootstrap} → {settings.lake}/raw until SIGTERM")
    report = run_land(settings, topic or None, follow=follow, stop=stop)
    print_land_report(report)


@app.command()
def status(ctx: typer.Context) -> None:
    """Per topic-partition: broker high watermark, landed offset, lag, last file."""
    from consumers.landing import landing_status

    settings: Settings = ctx.obj
    rows = landing_status(settings)
    table = Table(
        title=f"Landing status ({settings.bootstrap} → {settings.lake})", title_justify="left"
    )
    for col in ("topic", "part", "high watermark", "landed", "lag", "last file", "landed at (UTC)"):
        table.add_column(
            col, justify="right" if col in ("part", "high watermark", "landed", "lag") else "left"
        )
    for r in rows:
        lag = "?" if r.lag is None else f"{r.lag:,}"
        color = "green" if r.lag == 0 else "yellow"
        table.add_row(
            r.topic,
            str(r.partition),
            "?" if r.high_watermark is None else f"{r.high_watermark:,}",
            f"{r.landed:,}",
            f"[{color}]{lag}[/]",
            (r.last_file or "").rsplit("/", 1)[-1],
            r.last_landed_at or "",
        )
    console.print(table)


# -- validation -----------------------------------------------------------------------------
DATASET_OPTION = typer.Option(help="visit_outcome or incident_report; default: both.")


@app.command()
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
    for name in [dataset] if dataset else ["visit_outcome", "incident_report"]:
        if reprocess:
            reset(settings, name)
        print_validation_run(run_validation(settings, name))


@quarantine_app.command("list")
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


@quarantine_app.command("show")
def quarantine_show(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="visit_outcome or incident_report.")],
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


@quarantine_app.command("release")
def quarantine_release(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="visit_outcome or incident_report.")],
    reason: Annotated[str | None, typer.Option(help="Only rows with this reason.")] = None,
) -> None:
    """Re-validate quarantined rows with the current contract and suite; move those that pass."""
    from visitshare.quality.quarantine import release

    print_validation_run(release(ctx.obj, dataset, reason))


# -- airflow --------------------------------------------------------------------------------
@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def airflow(ctx: typer.Context) -> None:
    """Run the Airflow CLI on the embedded stack, e.g. `visitshare airflow dags test ingest_events`."""
    from visitshare.airflow_env import run_airflow

    settings: Settings = ctx.obj
    if any(a in ("dags", "tasks") for a in ctx.args[:1]):
        ensure_broker(settings)  # DAG tasks talk to Kafka
    raise typer.Exit(run_airflow(settings, list(ctx.args)))


# -- benchmarks -----------------------------------------------------------------------------
def print_bench_result(settings: Settings, result, detail: str = "") -> None:
    """Write var/bench/<name>.json and print where, then the RESULT line (DESIGN §8)."""
    from visitshare.bench import write_result

    path = write_result(settings, result)
    console.print(f"written {path}" + (f"; {detail}" if detail else ""))
    console.print(result.result_line())


@bench_app.command("produce")
def bench_produce(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="Visit events per round.", min=1000)] = 200_000,
    rounds: Annotated[int, typer.Option(help="Alternating rounds of each.", min=1)] = 2,
) -> None:
    """Our producer path vs a raw kafka-python producer (target: ours ≥ 0.7 × raw)."""
    from visitshare.bench import produce

    result = produce.run(ctx.obj, events=events, rounds=rounds, say=err_console.print)
    print_bench_result(ctx.obj, result)


@bench_app.command("land")
def bench_land(
    ctx: typer.Context,
    messages: Annotated[int, typer.Option(help="Messages on the topic.", min=1000)] = 1_000_000,
    large: Annotated[
        int, typer.Option(help="Second size for the memory check (0: skip).")
    ] = 3_000_000,
    rounds: Annotated[int, typer.Option(help="Alternating rounds at the main size.", min=1)] = 2,
) -> None:
    """Our land --drain vs a raw kafka-python read loop (target: ours ≥ 0.8 × raw, RSS ≤ 500 MB)."""
    from visitshare.bench import land as bench

    result = bench.run(
        ctx.obj, messages=messages, large=large, rounds=rounds, say=err_console.print
    )
    print_bench_result(ctx.obj, result)


@bench_app.command("validate")
def bench_validate(
    ctx: typer.Context,
    days: Annotated[
        int, typer.Option(help="Days of Tokyo in the raw zone (365: ~2.1M events).", min=1)
    ] = 365,
) -> None:
    """The validate step vs a copy floor (target: ≤ 4 × the floor's time, peak RSS ≤ 4 GB)."""
    from visitshare.bench import validate as bench

    result = bench.run(ctx.obj, days=days, say=err_console.print)
    print_bench_result(ctx.obj, result)


@bench_app.command("publish")
def bench_publish(
    ctx: typer.Context,
    days: Annotated[
        int, typer.Option(help="Days of Tokyo in the validated zone (365: ~2M visits).", min=1)
    ] = 365,
    rounds: Annotated[int, typer.Option(help="Alternating rounds (best of).", min=1)] = 2,
) -> None:
    """Anonymize + join + release vs a copy floor (target: ≤ 3 × the floor, peak RSS ≤ 4 GB)."""
    from visitshare.bench import publish as bench

    result = bench.run(ctx.obj, days=days, rounds=rounds, say=err_console.print)
    print_bench_result(ctx.obj, result)


@bench_app.command("freshness")
def bench_freshness(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="Events to follow to a release.", min=1)] = 20,
    interval: Annotated[float, typer.Option(help="Seconds between publishes.", min=0.1)] = 3.0,
) -> None:
    """Publish → release latency with the stack up (target: p50 ≤ 60 s = 0.2 × 300 s)."""
    from visitshare.bench import freshness as bench

    result = bench.run(ctx.obj, events=events, interval_s=interval, say=err_console.print)
    print_bench_result(
        ctx.obj, result, f"p50 {result.extra['p50_s']} s, p95 {result.extra['p95_s']} s"
    )


@bench_app.command("all")
def bench_all(ctx: typer.Context) -> None:
    """Every benchmark at its default size, one after another; var/bench/all.json and all.md."""
    from visitshare.bench import freshness, land, produce, write_suite
    from visitshare.bench import publish as bench_pub
    from visitshare.bench import validate as bench_val

    settings: Settings = ctx.obj
    say = err_console.print
    results = []
    for run_one in (
        lambda: produce.run(settings, say=say),
        lambda: land.run(settings, say=say),
        lambda: bench_val.run(settings, say=say),
        lambda: bench_pub.run(settings, say=say),
        lambda: freshness.run(settings, say=say),
    ):
        result = run_one()
        print_bench_result(settings, result)
        results.append(result)
    j, m = write_suite(settings, results)
    console.print(f"written {j} and {m}")


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
    timeout: Annotated[
        int, typer.Option(help="Seconds to wait for Airflow to release it all.", min=30)
    ] = 900,
) -> None:
    """The main job: publish a slice of Tokyo; Airflow lands, validates and releases it."""
    from datetime import UTC, datetime

    from consumers.landing import landing_status
    from producers.simulator import SimConfig
    from visitshare.orchestrate import run_pipeline
    from visitshare.topics import apply_topics

    settings: Settings = ctx.obj
    status = ensure_broker(settings)
    apply_topics(settings)
    where = "embedded Tansu" if status.embedded else "external Kafka"
    console.print(f"[bold]broker[/]: {where} at {settings.bootstrap}")
    config = SimConfig(
        days=days, municipalities=tuple(municipalities.split(",")), seed=seed, bad_rate=bad_rate
    )
    # What was on the topics but not landed yet (an earlier run's leftovers) lands too.
    backlog: dict[str, int] = {}
    for p in landing_status(settings):
        backlog[p.topic] = backlog.get(p.topic, 0) + (p.lag or 0)
    since = datetime.now(UTC).replace(microsecond=0)
    published = producer_cli.publish_simulation(settings, config)
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
    if status.embedded:
        console.print("the broker keeps running; `make down` stops it")


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
        topic, dlq = settings.topic(c.topic), settings.topic(c.topic) + ".dlq"
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
        "released = rows in the shared record-level table after k-anonymity (all valid rows "
        "count in the aggregated outcomes)"
    )
    runs = ", ".join(f"{d} {t} {s}" for d, t, s in outcome.dag_runs)
    console.print(f"[bold]Airflow runs[/]: {runs}")
    rows = ", ".join(f"{n} {t['rows']:,}" for n, t in rel.tables.items())
    console.print(f"[bold]Release {rel.id}[/] ({rel.disclosure['result']}): {rows}")
    from visitshare.disclosure import DisclosureReport
    from visitshare.release import release_dir

    for line in DisclosureReport.model_validate(rel.disclosure).summary_lines():
        console.print(f"  {line}")
    docs = next((v["data_docs"] for v in outcome.validation.values() if v.get("data_docs")), None)
    console.print(f"Data Docs: {docs or settings.reports_dir / 'data_docs' / 'index.html'}")
    console.print(f"disclosure report: {release_dir(settings, rel.id) / 'disclosure.html'}")
    console.print(
        f"shared tables: Iceberg catalog {settings.catalog_uri} (data under "
        f"{settings.warehouse}); SQL tables in {settings.db_url}"
    )
    console.print(
        f"a ward pulls its view: .venv/bin/visitshare pull --partner shinjuku --release "
        f"{rel.id} --format csv"
    )
    if not ok:
        raise UserError("counts do not reconcile from topic to release (see the table)")


@app.command()
def up(ctx: typer.Context) -> None:
    """Start the embedded stack in the background: broker, landing service, Airflow."""
    from visitshare import stack

    settings: Settings = ctx.obj
    stack.up(settings, say=console.print)
    stack.wait_for_api(settings)
    console.print(
        "up: events published now (`visitshare simulate --publish`) reach a release without "
        "anyone triggering a DAG; Airflow UI http://127.0.0.1:8080; `visitshare down` stops all"
    )


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop what `up` started (only our own processes), and the embedded broker."""
    from visitshare import stack

    stack.down(ctx.obj, say=console.print)


def main() -> None:
    try:
        app()
    except (
        UserError,
        BrokerError,
        ContractError,
        PublishError,
        LandingError,
        SuiteError,
        QualityError,
        ReleaseError,
        DisclosureError,
        PseudonymKeyError,
        PartnerError,
        PipelineError,
    ) as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    except ValidationError as exc:  # a VISITSHARE_* variable with a bad value
        err_console.print(f"[red]error: invalid settings:[/] {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
