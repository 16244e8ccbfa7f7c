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
    """Our land --drain vs a raw kafka-python read loop (target: ours ≥ 0.8 × raw, RSS ≤ 500 MB)."""
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
    """The validate step vs a copy floor (target: ≤ 4 × the floor's time, peak RSS ≤ 4 GB)."""
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
) -> None:
    """Anonymize + join + release vs a copy floor (target: ≤ 1.5 × the floor, peak RSS ≤ 4 GB),
    with the utility of what was published (var/bench/publish.json: extra.utility)."""
    from visitshare.bench import publish as bench

    if aggregates not in (None, "dp", "threshold"):
        raise typer.BadParameter("dp or threshold", param_hint="--aggregates")
    result = bench.run(
        ctx.obj, days=days, rounds=rounds, say=err_console.print, aggregates=aggregates
    )
    print_bench_result(ctx.obj, result)


@app.command("freshness")
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
