"""`visitshare bench …`: the benchmarks (results in var/bench/)."""

from __future__ import annotations

from typing import Annotated

import typer

from visitshare.console import console, err_console
from visitshare.settings import Settings

app = typer.Typer(help="Benchmarks (results in var/bench/<name>.json).")


def print_bench_result(settings: Settings, result, detail: str = "") -> None:
    """Write var/bench/<name>.json and print where, then the RESULT line."""
    from visitshare.bench import write_result

    path = write_result(settings, result)
    console.print(f"written {path}" + (f"; {detail}" if detail else ""))
    console.print(result.result_line())


@app.command("produce")
def bench_produce(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="Visit events per round.", min=1000)] = 200_000,
    rounds: Annotated[int, typer.Option(help="Alternating rounds of each.", min=1)] = 2,
) -> None:
    """Our producer path vs a raw kafka-python producer (target: ours ≥ 0.7 × raw)."""
    from visitshare.bench import produce

    result = produce.run(ctx.obj, events=events, rounds=rounds, say=err_console.print)
    print_bench_result(ctx.obj, result)


@app.command("land")
def bench_land(
    ctx: typer.Context,
    messages: Annotated[int, typer.Option(help="Messages on the topic.", min=1000)] = 1_000_000,
    large: Annotated[
        int, typer.Option(help="Second size for the memory check (0: skip).")
    ] = 3_000_000,
    rounds: Annotated[int, typer.Option(help="Alternating rounds at the main size.", min=1)] = 2,
) -> None:
    """Our land --drain vs a raw kafka-python read loop (target: ours ≥ 0.9 × raw in messages
    per CPU second; peak RSS summed over the landing processes ≤ 500 MB)."""
    from visitshare.bench import land as bench

    result = bench.run(
        ctx.obj, messages=messages, large=large, rounds=rounds, say=err_console.print
    )
    print_bench_result(ctx.obj, result)


@app.command("validate")
def bench_validate(
    ctx: typer.Context,
    days: Annotated[
        int, typer.Option(help="Days of Tokyo in the raw zone (365: ~2.1M events).", min=1)
    ] = 365,
) -> None:
    """The validate step vs a copy floor (target: ≤ 3 × the floor's CPU seconds, peak RSS ≤ 4 GB)."""
    from visitshare.bench import validate as bench

    result = bench.run(ctx.obj, days=days, say=err_console.print)
    print_bench_result(ctx.obj, result)


@app.command("publish")
def bench_publish(
    ctx: typer.Context,
    days: Annotated[
        int, typer.Option(help="Days of Tokyo in the validated zone (365: ~2M visits).", min=1)
    ] = 365,
    rounds: Annotated[int, typer.Option(help="Alternating rounds (best of).", min=1)] = 2,
    aggregates: Annotated[
        str | None,
        typer.Option(
            help="Aggregate tables in this mode (dp | threshold) instead of the contracts'."
        ),
    ] = None,
    increment_days: Annotated[
        int | None,
        typer.Option(
            help="Instead: release the year, validate this many new days on top, and compare "
            "their incremental release with a full release of the same lake "
            "(var/bench/publish-increment.json; target ≤ 0.05).",
            min=1,
        ),
    ] = None,
) -> None:
    """Anonymize + join + release a year vs a copy floor (target: ≤ 1.2 × the floor in CPU
    seconds, peak RSS ≤ 4 GB), with the utility of what was published
    (var/bench/publish.json: extra.utility)."""
    from visitshare.bench import publish as bench

    if aggregates not in (None, "dp", "threshold"):
        raise typer.BadParameter("dp or threshold", param_hint="--aggregates")
    if increment_days is not None:
        result = bench.run_increment(
            ctx.obj, days=days, increment_days=increment_days, say=err_console.print, rounds=rounds
        )
        print_bench_result(ctx.obj, result)
        return
    result = bench.run(
        ctx.obj, days=days, rounds=rounds, say=err_console.print, aggregates=aggregates
    )
    print_bench_result(ctx.obj, result)


@app.command("freshness")
def bench_freshness(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(help="Events to follow to a release.", min=1)] = 20,
    interval: Annotated[float, typer.Option(help="Seconds between publishes.", min=0.1)] = 3.0,
    history_days: Annotated[
        int,
        typer.Option(
            help="Release on top of this many days of validated Tokyo (365: a year), in a "
            "stack of its own under var/bench/freshness-work (0: the running stack, as is).",
            min=0,
        ),
    ] = 0,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every event to be released.", min=10)
    ] = 900.0,
) -> None:
    """Publish → release latency with the stack up (target: p50 ≤ 30 s = 0.1 × 300 s, p95 ≤ 60 s)."""
    from visitshare.bench import freshness as bench

    result = bench.run(
        ctx.obj,
        events=events,
        interval_s=interval,
        timeout_s=timeout,
        say=err_console.print,
        history_days=history_days,
    )
    print_bench_result(
        ctx.obj, result, f"p50 {result.extra['p50_s']} s, p95 {result.extra['p95_s']} s"
    )


@app.command("all")
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
