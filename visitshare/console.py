"""Shared pieces of the command line: console, progress bars, report tables, error exit."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 1."""


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
        force=True,
    )


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator:
    """A progress bar; yields `advance(n)`. Rich hides it when output is not a terminal."""
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TimeElapsedColumn(), TimeRemainingColumn()] if total else [TimeElapsedColumn()]
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


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


def print_land_report(report) -> None:
    """Rows and files landed per topic by one landing run (`consumers.landing.LandReport`)."""
    table = Table(title=f"Landed ({report.mode}, run {report.run_id})", title_justify="left")
    for col in ("topic", "files", "rows", "offsets"):
        table.add_column(col, justify="left" if col == "topic" else "right")
    by_topic: dict[str, list] = {}
    for (topic, _), p in sorted(report.partitions.items()):
        by_topic.setdefault(topic, []).append(p)
    for topic, parts in by_topic.items():
        ranges = [f"{p.partition}:{p.first_offset}-{p.last_offset}" for p in parts if p.rows]
        table.add_row(
            topic,
            str(sum(p.files for p in parts)),
            f"{sum(p.rows for p in parts):,}",
            " ".join(ranges),
        )
    console.print(table)
    rate = report.rows / report.elapsed_s if report.elapsed_s else 0
    console.print(
        f"landed {report.rows:,} messages in {report.files} files ({report.bytes / 1e6:,.1f} MB) "
        f"in {report.elapsed_s:.1f} s ({rate:,.0f} messages/s)"
        + (f"; removed {report.orphans_removed} orphan file(s)" if report.orphans_removed else "")
        + (f"; [red]{report.gaps} gap(s) recorded[/]" if report.gaps else "")
    )


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
