"""`visitshare bench freshness`: seconds from publishing an event to its release, stack up.

The stack (`visitshare up`: broker, landing service, Airflow with the landing watcher) is
started unless it runs. Events are published one at a time, a few seconds apart, as a police
system would; each counts as fresh once a release includes it (its validated file is within
the release's input). Latency = release committed − event published. Baseline: 300 s, the
default commit interval of the Iceberg Kafka Connect sink (the time a Kafka → Iceberg sink
holds data before it becomes visible); ratio = p50 / 300 s (target ≤ 0.1: p50 ≤ 30 s; p95 ≤
60 s in `extra`). CPU: seconds of user + system of the stack's processes (broker, landing
service, Airflow's services and their task processes) over the measurement; the baseline is a
configuration value and has no CPU.

With `history_days`, every measured release is published on top of a validated history of
that many days of Tokyo: the validated zone of `bench publish` (built once per number of
days) is copied into var/bench/freshness-work/, which gets a stack of its own (broker and
Airflow on free ports), and the year is released once before measuring (not timed), so that
the measured releases are the ones that follow it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from visitshare.bench import BenchResult, Meter, broker_pid, now_iso, peak_rss_mb
from visitshare.lake import lake_for
from visitshare.settings import Settings

BASELINE_S = 300.0
TARGET_RATIO = 0.1  # p50 ≤ 30 s
P95_TARGET_S = 60.0
WORK = "freshness-work"


def _events(settings: Settings, n: int) -> list[dict]:
    from producers.simulator import CORE_DATASETS, SimConfig, Simulator
    from visitshare.contracts import ContractRegistry

    contracts = ContractRegistry.load(settings.contracts_dir)
    config = SimConfig(days=1, seed=int(time.time()), bad_rate=0.0, datasets=CORE_DATASETS)
    sim = Simulator(config, contracts)
    out = []
    for e in sim.events():
        if e.dataset == "visit_outcome":
            assert isinstance(e.payload, dict)  # bad_rate 0: every event is a decoded dict
            out.append(dict(e.payload))
        if len(out) == n:
            return out
    raise RuntimeError("the simulator gave fewer visit events than asked")


def _tree_rss_mb(pid: int) -> float:
    import psutil

    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20
    except psutil.Error:
        return 0.0


def _released_event_ids(settings: Settings, after_upto: int, upto: int) -> set[str]:
    from visitshare.db import engine_for
    from visitshare.db.tables import curated_files

    with engine_for(settings).connect() as conn:
        paths = (
            conn.execute(
                sa.select(curated_files.c.path).where(
                    curated_files.c.zone == "validated",
                    curated_files.c.dataset == "visit_outcome",
                    curated_files.c.id > after_upto,
                    curated_files.c.id <= upto,
                )
            )
            .scalars()
            .all()
        )
    ids: set[str] = set()
    lake = lake_for(settings)
    for p in paths:
        ids.update(lake.read_table(p, columns=["event_id"]).column(0).to_pylist())
    return ids


# -- a history to release on top of ----------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _link_or_copy(src: str, dst: str) -> None:
    """Lake files are never written in place (written aside, then linked): a hard link is a
    copy that costs nothing. A copy where linking is impossible (another file system)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _work_settings(settings: Settings, home: Path) -> Settings:
    ports = json.loads((home / "ports.json").read_text())
    return settings.model_copy(update={"home": home, "topic_prefix": "", **ports})


def _work_env(work: Settings) -> dict[str, str]:
    """What the work stack's processes need to build the work settings from the environment."""
    return {
        "VISITSHARE_HOME": str(work.var),
        "VISITSHARE_TOPIC_PREFIX": "",
        "VISITSHARE_BROKER_PORT": str(work.broker_port),
        "VISITSHARE_AIRFLOW_API_PORT": str(work.airflow_api_port),
    }


def _stop_leftovers(settings: Settings, home: Path) -> None:
    """Stop what an interrupted earlier run left running in the work folder (its PID files)."""
    from visitshare.orchestration import stack

    if (home / "ports.json").exists():
        stack.down(_work_settings(settings, home), stop_broker=True, say=lambda _: None)


def _check_complete(work: Settings, source: Path) -> None:
    """Every file the copied databases name is in the copy (else the source lost some)."""
    from visitshare.db import engine_for
    from visitshare.db.tables import curated_files
    from visitshare.landing import manifest

    engine = engine_for(work)
    with engine.connect() as conn:
        paths = list(
            conn.execute(
                sa.select(curated_files.c.path).where(
                    curated_files.c.zone.in_(("validated", "quarantine", "seen"))
                )
            ).scalars()
        )
    paths += [f.path for f in manifest.files(engine)]
    lake = lake_for(work)
    missing = [p for p in paths if not lake.exists(p)]
    if missing:
        raise RuntimeError(
            f"{source} lacks {len(missing)} file(s) its databases record (e.g. {missing[0]}); "
            f"remove it (rm -r {source}) and run again to rebuild it"
        )


def history_home(settings: Settings, days: int, say: Callable[[str], None]) -> Settings:
    """A fresh work home holding `days` of validated Tokyo, and the settings of its stack.

    The validated zone comes from `bench publish` (`validated_zone`, built once per `days`):
    its lake zones up to validation are hard-linked, its databases copied as validation left
    them (its `pristine/` folder), so that the source is never changed. Releases, their state
    and Airflow start empty. The stack gets free ports, kept in `ports.json`.
    """
    from visitshare.bench.publish import validated_zone
    from visitshare.landing.zones import Zone

    if not settings.embedded_broker or any(
        (settings.database_url, settings.catalog_url, settings.lake_dir)
    ):
        raise RuntimeError(
            "--history-days runs a stack of its own under var/bench/: unset "
            "VISITSHARE_KAFKA_BOOTSTRAP, VISITSHARE_DATABASE_URL, VISITSHARE_CATALOG_URL "
            "and VISITSHARE_LAKE_DIR"
        )
    from visitshare.db import dispose_all

    source = validated_zone(settings, days, say)
    home = settings.var / "bench" / WORK
    _stop_leftovers(settings, home)
    dispose_all()  # no pooled connection may outlive the database files replaced here
    shutil.rmtree(home, ignore_errors=True)
    say(f"copying the validated history ({days} days) from {source} into {home} ...")
    # What validation leaves: raw, validated and quarantine zones and the ids it has seen.
    for rel in (Zone.RAW, Zone.VALIDATED, Zone.QUARANTINE, f"{Zone.STATE}/seen"):
        if (source / "lake" / rel).is_dir():
            shutil.copytree(source / "lake" / rel, home / "lake" / rel, copy_function=_link_or_copy)
    if (source / "gx").is_dir():
        shutil.copytree(source / "gx", home / "gx")
    if (source / "reports").is_dir():
        shutil.copytree(
            source / "reports", home / "reports", ignore=shutil.ignore_patterns("releases")
        )
    pristine = source / "pristine"
    if not pristine.is_dir():
        raise RuntimeError(f"{pristine} is missing: remove {source} and run again to rebuild it")
    for db in pristine.iterdir():
        shutil.copyfile(db, home / db.name)
    ports = {"broker_port": _free_port(), "airflow_api_port": _free_port()}
    (home / "ports.json").write_text(json.dumps(ports))
    work = _work_settings(settings, home)
    _check_complete(work, source)
    return work


def _release_history(work: Settings, say: Callable[[str], None]) -> dict[str, Any]:
    """The first release on top of the history: all of it (`visitshare publish`, not timed
    as part of the measurement; its figures go to `extra`)."""
    say("releasing the history once before measuring (a full publish) ...")
    env = {**os.environ, **_work_env(work)}
    cmd = [sys.executable, "-m", "visitshare.cli", "publish"]
    with Meter() as meter:  # the publish is our child: its CPU is in RUSAGE_CHILDREN
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"publishing the history failed: {(out.stderr or out.stdout)[-3000:]}")
    say(f"history released in {meter.wall_s:.0f} s ({meter.cpu_s:.0f} CPU s)")
    return {"first_release_s": round(meter.wall_s, 1), "first_release_cpu_s": round(meter.cpu_s, 1)}


# -- the measurement ---------------------------------------------------------------------------
def run(
    settings: Settings,
    events: int = 20,
    interval_s: float = 3.0,
    timeout_s: float = 900.0,
    say: Callable[[str], None] = print,
    history_days: int = 0,
) -> BenchResult:
    from producers.publisher import Outgoing, Publisher
    from visitshare.contracts import ContractRegistry
    from visitshare.db import engine_for
    from visitshare.orchestration import stack
    from visitshare.orchestration.airflow_api import AirflowAPI
    from visitshare.orchestration.run import wait_until_parsed
    from visitshare.producing.broker import ensure_broker
    from visitshare.release.releases import latest_release

    started_at = now_iso()
    history: dict[str, Any] = {}
    env: dict[str, str] | None = None
    if history_days:
        settings = history_home(settings, history_days, say)
        env = _work_env(settings)
    ours: list[str] = []
    try:
        if history_days:
            ensure_broker(settings)  # the release notice goes to releases.v1
            history = {"days": history_days, **_release_history(settings, say)}
        states = stack.up(settings, say=say, env=env)
        ours = [n for n, s in states.items() if s == "started"]
        stack.wait_for_api(settings)
        wait_until_parsed(AirflowAPI(settings), settings, timeout_s)
        engine = engine_for(settings)
        with engine.connect() as conn:
            latest = latest_release(conn)
        seen_upto = latest.validated_upto if latest else 0
        last_release = latest.id if latest else 0
        first_measured = last_release + 1
        pending: dict[str, float] = {}  # event id → published at (epoch s)
        latencies: dict[str, float] = {}
        payloads = _events(settings, events)
        contracts = ContractRegistry.load(settings.contracts_dir)
        next_send = time.time()
        rss: dict[str, float] = {}  # service → largest RSS seen (process and its children)
        deadline = time.monotonic() + timeout_s
        stack_pids = {**stack.running(settings), "broker": broker_pid(settings)}
        # CPU of the stack only: this process publishes and watches, as a police system and
        # a partner would.
        with Publisher(settings, contracts) as pub, Meter(stack_pids, include_self=False) as cpu:
            while len(latencies) < events:
                now = time.time()
                if payloads and now >= next_send:
                    payload = payloads.pop()
                    payload["event_id"] = str(uuid.uuid4())
                    payload["produced_at"] = settings.clock.now().isoformat()
                    report = pub.publish([Outgoing("visit_outcome", payload)])
                    if sum(report.delivered.values()) != 1:
                        raise RuntimeError(f"event not delivered: {report}")
                    pending[payload["event_id"]] = now
                    next_send = now + interval_s
                with engine.connect() as conn:
                    latest = latest_release(conn)
                if latest is not None and latest.id != last_release:
                    committed = latest.published_at
                    for eid in _released_event_ids(settings, seen_upto, latest.validated_upto):
                        if eid in pending:
                            latencies[eid] = committed.timestamp() - pending.pop(eid)
                    say(f"release {latest.id}: {len(latencies)}/{events} events released")
                    seen_upto, last_release = latest.validated_upto, latest.id
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"only {len(latencies)} of {events} events reached a release in "
                        f"{timeout_s:.0f} s"
                    )
                for name, pid in stack.running(settings).items():
                    if pid is not None:
                        rss[name] = max(rss.get(name, 0.0), _tree_rss_mb(pid))
                time.sleep(0.5)
    finally:
        if history_days:  # everything in the work home is ours
            stack.down(settings, stop_broker=True, say=lambda _: None)
        else:
            for name in reversed(ours):
                stack.stop_service(settings, name)
    values = sorted(latencies.values())
    p50 = statistics.median(values)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return BenchResult(
        name="freshness",
        unit="seconds from publish to release, p50 (time; ratio = ours / baseline, lower is better)",
        ours=p50,
        baseline=BASELINE_S,
        ours_cpu=cpu.cpu_s,
        baseline_cpu=None,
        cpu_unit="CPU seconds of the stack (broker, landing service, Airflow and its task "
        f"processes; user + system, children included) over the measurement of {events} "
        "events; the baseline is a configuration value (no CPU)",
        held_to="wall",
        baseline_desc="300 s: the default commit interval of the Iceberg Kafka Connect sink",
        target=TARGET_RATIO,
        higher_is_better=False,
        params={"events": events, "interval_s": interval_s, "history_days": history_days},
        peak_rss_mb=max(rss.values(), default=peak_rss_mb()),
        started_at=started_at,
        extra={
            "p50_s": round(p50, 1),
            "p95_s": round(p95, 1),
            "p95_target_s": P95_TARGET_S,
            "p95_meets_target": p95 <= P95_TARGET_S,
            "min_s": round(values[0], 1),
            "max_s": round(values[-1], 1),
            "latencies_s": [round(v, 1) for v in values],
            "measured_wall_s": round(cpu.wall_s, 1),
            "cpu_by_process": {k: round(v, 1) for k, v in cpu.cpu_by_process.items()},
            "releases_measured": list(range(first_measured, last_release + 1)),
            "history": history,
            "stack_started_by_bench": ours,
            "service_rss_mb": {k: round(v, 1) for k, v in rss.items()},
            "peak_rss_note": "largest RSS of one stack service (with its child processes), "
            "sampled every 0.5 s",
        },
    )
