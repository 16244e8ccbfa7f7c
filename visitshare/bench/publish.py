"""`visitshare bench publish`: anonymize + join + release a year of Tokyo vs a copy floor.

Setup (not timed): a year of simulated events for all of Tokyo (about 2M visits and 100k
incidents) written into a raw zone with landing's code and validated with our validation.
The validated zone is kept under var/bench/publish-work/ for reruns with the same days.
Measured, each in a fresh child process, alternating:
- ours: `release.publish.publish` (plan, shards in `publish_workers` processes, privacy gate,
  Iceberg + SQL tables, releases row) with `--force`, so every round publishes;
- copy floor: read every validated file and write it back with pyarrow, one process.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow.compute as pc

from visitshare.bench import BenchResult, now_iso, run_child
from visitshare.settings import Settings

TOKYO = ZoneInfo("Asia/Tokyo")

# Issue 12's targets on a year of Tokyo (reported beside the timing; a bench does not judge).
UTILITY_TARGETS = {
    "visit_outcome.rows_below_municipality_share": ">= 0.90",
    "visit_outcome.rows_suppressed_share": "<= 0.02",
    "incident_report.rows_published_share": ">= 0.80",
    "outcomes_town_month.cells_published_share": ">= 0.85",
    "k_achieved": ">= k (5)",
}


def _child(kind: str, home: str, contracts: str = "", now: str = "") -> dict:
    from visitshare.processes import peak_rss_mb

    update: dict = {"home": Path(home), "topic_prefix": ""}
    if contracts:
        update["contracts_dir"] = Path(contracts)
    if now:
        update["now"] = datetime.fromisoformat(now)
    settings = Settings().model_copy(update=update)
    if kind in ("ours", "incremental", "full"):
        from visitshare.release.publish import publish

        started, cpu0 = time.perf_counter(), _cpu_seconds()
        published = publish(settings, force=kind != "incremental", full=kind == "full")
        assert published is not None  # forced: a release is always built
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu0
        rows = sum(d.rows_in + d.rows_held for d in published.report.datasets)
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        detail = {
            "release_id": published.release_id,
            "rows_by_table": {n: t["rows"] for n, t in published.tables.items()},
            "disclosure": published.report.summary_lines(),
            "utility": published.report.utility(),
            "process_peak_rss_mb": {"main": peak_rss_mb(), "largest shard worker": children},
            "total_rss_mb": peak_rss_mb() + children * settings.publish_workers,
        }
    else:
        import pyarrow.parquet as pq
        import sqlalchemy as sa

        from visitshare.db import engine_for
        from visitshare.db.tables import curated_files
        from visitshare.lake import lake_for

        with engine_for(settings).connect() as conn:
            paths = (
                conn.execute(
                    sa.select(curated_files.c.path).where(curated_files.c.zone == "validated")
                )
                .scalars()
                .all()
            )
        out = settings.var / "copy"
        out.mkdir(parents=True, exist_ok=True)
        started, cpu0 = time.perf_counter(), _cpu_seconds()
        rows = 0
        lake = lake_for(settings)
        for i, p in enumerate(paths):
            table = lake.read_table(p)
            pq.write_table(table, out / f"{i}.parquet")
            rows += table.num_rows
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu0
        shutil.rmtree(out, ignore_errors=True)
        detail = {"files": len(paths)}
    return {
        "rows": rows,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": peak_rss_mb(),
        "detail": detail,
    }


def _cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (shard workers)."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _run_child(
    kind: str, home: Path, contracts: Path | None = None, now: datetime | None = None
) -> dict:
    args = [kind, str(home), str(contracts or ""), now.isoformat() if now else ""]
    return run_child("visitshare.bench.publish", *args)


# The project and catalog databases as validation left them: restored before each measured
# publish, so that every round is a full publish of the year (no earlier release, no state).
PRISTINE = ("visitshare.db", "catalog.db")
# What releases keep in the lake besides the shared zone (validation's state/seen stays).
RELEASE_STATE = ("lake/state/records", "lake/state/aggregates")


def _reset_releases(home: Path) -> None:
    for name in PRISTINE:
        saved = home / "pristine" / name
        if saved.exists():
            _copy_db(saved, home / name)
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{home / name}{suffix}").unlink(missing_ok=True)
    for folder in ("lake/shared", *RELEASE_STATE, "lake/staging", "reports/releases"):
        shutil.rmtree(home / folder, ignore_errors=True)


def contracts_with_mode(home: Path, source: Path, mode: str) -> Path:
    """A copy of the contracts whose aggregate tables use `mode` (dp | threshold)."""
    import yaml

    from visitshare.contracts import odcs

    out = home / f"contracts-{mode}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(source, out)
    for path in out.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        if odcs.is_odcs(doc):  # the contract-wide disclosure block is a custom property
            entry = odcs.custom_property(doc, "disclosure")
            block = entry["value"] if entry else None
        else:
            block = doc.get("disclosure")
        aggregates = (block or {}).get("aggregates")
        if aggregates is not None:
            aggregates["mode"] = mode
            path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return out


def validated_zone(settings: Settings, days: int, say: Callable[[str], None]) -> Path:
    """The benchmark's validated zone (built once per `days`, reused afterwards)."""
    from visitshare.bench.validate import build_raw_zone
    from visitshare.quality.validate import validate

    home = settings.var / "bench" / "publish-work"
    marker = home / f"validated-{days}d.v2.json"  # v2: with the pristine databases
    if marker.exists():
        say(f"reusing the validated zone in {home}")
        return home
    shutil.rmtree(home, ignore_errors=True)
    bench = settings.model_copy(update={"home": home, "topic_prefix": ""})
    t0 = time.perf_counter()
    counts = build_raw_zone(bench, days, say)
    say(f"raw zone ready in {time.perf_counter() - t0:.0f} s: {counts}; validating ...")
    runs = {
        d: validate(bench, d).summary().model_dump(mode="json")
        for d in ("visit_outcome", "incident_report")
    }
    (home / "pristine").mkdir()
    for name in PRISTINE:
        if (home / name).exists():
            _copy_db(home / name, home / "pristine" / name)
    marker.write_text(json.dumps({"raw": counts, "validation": runs}, default=str))
    say(f"validated zone ready in {time.perf_counter() - t0:.0f} s")
    return home


def run(
    settings: Settings,
    days: int = 365,
    rounds: int = 2,
    say: Callable[[str], None] = print,
    aggregates: str | None = None,
) -> BenchResult:
    """`aggregates`: measure with the aggregate tables in this mode instead of the contracts'."""
    started = now_iso()
    home = validated_zone(settings, days, say)
    contracts = (
        contracts_with_mode(home, settings.contracts_dir, aggregates) if aggregates else None
    )
    floors, ours_runs = [], []
    for r in range(rounds):
        floor = _run_child("copy", home)
        say(
            f"round {r + 1}: copy floor {floor['rows']:,} rows in {floor['seconds']:.1f} s "
            f"({floor['cpu_seconds']:.1f} CPU s)"
        )
        _reset_releases(home)  # not timed
        ours = _run_child("ours", home, contracts)
        say(
            f"round {r + 1}: publish {ours['rows']:,} rows in {ours['seconds']:.1f} s "
            f"({ours['cpu_seconds']:.1f} CPU s; release {ours['detail']['release_id']})"
        )
        if ours["rows"] != floor["rows"]:
            raise RuntimeError(f"publish read {ours['rows']} rows, the zone holds {floor['rows']}")
        floors.append(floor)
        ours_runs.append(ours)
    floor = min(floors, key=lambda x: x["seconds"])
    ours = min(ours_runs, key=lambda x: x["seconds"])
    for line in ours["detail"]["disclosure"]:
        say(f"  {line}")
    peaks = ours["detail"]["process_peak_rss_mb"]
    peak = max(peaks.values())
    return BenchResult(
        name=f"publish-{aggregates}" if aggregates else "publish",  # its own result file
        unit="seconds (time; ratio = ours / baseline, lower is better)",
        ours=ours["seconds"],
        baseline=floor["seconds"],
        baseline_desc="copy floor: read every validated Parquet file and write it back with "
        "pyarrow (pq.read_table + pq.write_table defaults), one process",
        target=1.2,
        higher_is_better=False,
        ours_cpu=ours["cpu_seconds"],
        baseline_cpu=floor["cpu_seconds"],
        held_to="cpu",  # ours builds shards in worker processes; the floor is one process
        params={
            "days": days,
            "rows": ours["rows"],
            "rounds": rounds,
            "best_of": rounds,
            "aggregates_mode": aggregates or "as in the contracts",
        },
        peak_rss_mb=peak,
        started_at=started,
        extra={
            "rounds_seconds": {
                "ours": [round(x["seconds"], 2) for x in ours_runs],
                "copy floor": [round(x["seconds"], 2) for x in floors],
            },
            "rounds_cpu_seconds": {
                "ours": [round(x["cpu_seconds"], 2) for x in ours_runs],
                "copy floor": [round(x["cpu_seconds"], 2) for x in floors],
            },
            "rss_target_mb": 4096,
            "process_peak_rss_mb": peaks,
            "total_rss_mb_upper_bound": round(ours["detail"]["total_rss_mb"], 1),
            "rows_by_table": ours["detail"]["rows_by_table"],
            "disclosure": ours["detail"]["disclosure"],
            "utility": ours["detail"]["utility"],
            "utility_targets": UTILITY_TARGETS,
        },
    )


# -- incremental vs full -------------------------------------------------------------------------


def _snapshot(home: Path, to: Path) -> None:
    """The databases and the lake's release state, saved (restored by `_restore`)."""
    shutil.rmtree(to, ignore_errors=True)
    to.mkdir(parents=True)
    for name in PRISTINE:
        if (home / name).exists():
            _copy_db(home / name, to / name)
    for folder in ("lake/shared", *RELEASE_STATE, "reports/releases"):
        if (home / folder).exists():
            shutil.copytree(home / folder, to / folder)


def _copy_db(src: Path, dst: Path) -> None:
    """A consistent copy of a SQLite database (what its write-ahead log holds included),
    replacing `dst` and its log."""
    import sqlite3

    for suffix in ("", "-wal", "-shm"):
        Path(f"{dst}{suffix}").unlink(missing_ok=True)
    with sqlite3.connect(src) as source, sqlite3.connect(dst) as target:
        source.backup(target)
    source.close()
    target.close()


def _restore(saved: Path, home: Path) -> None:
    for name in PRISTINE:
        if (saved / name).exists():
            _copy_db(saved / name, home / name)
    for folder in ("lake/shared", *RELEASE_STATE, "reports/releases", "lake/staging"):
        shutil.rmtree(home / folder, ignore_errors=True)
        if (saved / folder).exists():
            shutil.copytree(saved / folder, home / folder)


def _last_event_day(settings: Settings) -> date:
    """The last day (Tokyo) with a validated visit."""
    from visitshare.contracts.roles import outcome_roles
    from visitshare.release import history

    visits = outcome_roles(settings.contracts_dir)["visits"]
    times = history.read(settings, visits, ["visited_at"], 2**62).column("visited_at")
    return pc.max(times).as_py().astimezone(TOKYO).date()


def run_increment(
    settings: Settings,
    days: int = 365,
    increment_days: int = 1,
    say: Callable[[str], None] = print,
    rounds: int = 2,
) -> BenchResult:
    """A year released, then `increment_days` new days validated on top: the incremental
    release of them against a full release of the same lake (each from the same state, in a
    fresh child process)."""
    from visitshare.bench.validate import build_raw_zone
    from visitshare.quality.validate import validate

    started = now_iso()
    year = validated_zone(settings, days, say)
    home = settings.var / "bench" / "publish-increment-work"
    marker = home / f"increment-{days}d-{increment_days}d.json"
    if not marker.exists():
        say(f"copying the validated year into {home} ...")
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(year, home, ignore=shutil.ignore_patterns("copy", "contracts-*"))
        _reset_releases(home)
        bench = settings.model_copy(update={"home": home, "topic_prefix": ""})
        first_new = _last_event_day(bench) + timedelta(days=1)
        # Release 1, the morning after the year; then the new days, validated the morning after.
        t0 = datetime.combine(first_new, dtime(9), tzinfo=TOKYO)
        t1 = t0 + timedelta(days=increment_days)
        say(f"release 1: the year, published as of {t0:%Y-%m-%d %H:%M} (not timed) ...")
        first = _run_child("full", home, now=t0)
        say(f"  {first['seconds']:.1f} s ({first['cpu_seconds']:.1f} CPU s)")
        # The daily maintenance compacts the released validated zone (not timed).
        from visitshare.release.maintain import maintain

        done = maintain(bench.model_copy(update={"now": t0}), say=lambda _: None)
        say(f"maintenance: {done.model_dump_json()[:300]}")
        later = bench.model_copy(update={"now": t1})
        counts = build_raw_zone(later, increment_days, say, start=first_new, seed=7)
        for dataset in ("visit_outcome", "incident_report"):
            validate(later, dataset)
        _snapshot(home, home / "before-increment")
        marker.write_text(json.dumps({"t1": t1.isoformat(), "raw": counts}))
    info = json.loads(marker.read_text())
    t1 = datetime.fromisoformat(info["t1"])
    saved = home / "before-increment"
    incs, fulls = [], []
    for r in range(rounds):  # alternating, each from the same saved state
        _restore(saved, home)
        inc = _run_child("incremental", home, now=t1)
        say(
            f"round {r + 1}: incremental release of {increment_days} new day(s): "
            f"{inc['seconds']:.2f} s ({inc['cpu_seconds']:.2f} CPU s)"
        )
        _restore(saved, home)
        full = _run_child("full", home, now=t1)
        say(
            f"round {r + 1}: full release of the same lake: {full['seconds']:.1f} s "
            f"({full['cpu_seconds']:.1f} CPU s)"
        )
        incs.append(inc)
        fulls.append(full)
    _restore(saved, home)
    inc = min(incs, key=lambda x: x["seconds"])
    full = min(fulls, key=lambda x: x["seconds"])
    return BenchResult(
        name="publish-increment",
        unit="seconds (time; ratio = incremental / full, lower is better)",
        ours=inc["seconds"],
        baseline=full["seconds"],
        baseline_desc=f"`visitshare publish --full` of the same lake (the year + {increment_days} "
        "day(s)), from the same state (release 1 = the year), in a fresh process",
        target=0.05,
        higher_is_better=False,
        ours_cpu=inc["cpu_seconds"],
        baseline_cpu=full["cpu_seconds"],
        held_to="wall",  # both sides are the same code, same processes
        params={
            "days": days,
            "increment_days": increment_days,
            "rounds": rounds,
            "best_of": rounds,
            "new_raw": info["raw"],
        },
        peak_rss_mb=inc["peak_rss_mb"],
        started_at=started,
        extra={
            "incremental": {
                "rows_by_table": inc["detail"]["rows_by_table"],
                "disclosure": inc["detail"]["disclosure"][:1],
            },
            "full": {"rows_by_table": full["detail"]["rows_by_table"]},
            "same_rows": inc["detail"]["rows_by_table"] == full["detail"]["rows_by_table"],
            "rounds_seconds": {
                "incremental": [round(x["seconds"], 2) for x in incs],
                "full": [round(x["seconds"], 2) for x in fulls],
            },
            "rounds_cpu_seconds": {
                "incremental": [round(x["cpu_seconds"], 2) for x in incs],
                "full": [round(x["cpu_seconds"], 2) for x in fulls],
            },
        },
    )


if __name__ == "__main__":  # a child of `run`
    print(json.dumps(_child(*sys.argv[1:5])))
