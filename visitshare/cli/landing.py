"""`visitshare land` and `visitshare status`: landing Kafka topics into the raw zone."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from visitshare.console import console
from visitshare.errors import UserError
from visitshare.producing.broker import ensure_broker
from visitshare.settings import Settings


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
    from visitshare.lake import lake_for

    if follow == drain:
        raise UserError("choose one of --drain (land what is there, exit) or --follow (a service)")
    settings: Settings = ctx.obj
    ensure_broker(settings)
    stop = threading.Event()
    if follow:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        raw = lake_for(settings).uri("raw")
        console.print(f"landing {settings.bootstrap} → {raw} until SIGTERM")
    report = run_land(settings, topic or None, follow=follow, stop=stop)
    print_land_report(report)


def status(ctx: typer.Context) -> None:
    """Per topic-partition: broker high watermark, landed offset, lag, last file."""
    from consumers.landing import landing_status
    from visitshare.lake import lake_for

    settings: Settings = ctx.obj
    rows = landing_status(settings)
    table = Table(
        title=f"Landing status ({settings.bootstrap} → {lake_for(settings).uri()})",
        title_justify="left",
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
        + (
            f"; {report.fenced} file(s) refused by the manifest (another lander was first)"
            if report.fenced
            else ""
        )
    )
