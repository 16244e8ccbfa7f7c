"""`visitshare bench freshness`: seconds from publishing an event to its release, stack up.

The stack (`visitshare up`: broker, landing service, Airflow with the landing watcher) is
started unless it runs. Events are published one at a time, a few seconds apart, as a police
system would; each counts as fresh once a release includes it (its validated file is within
the release's input). Latency = release committed − event published. Baseline: 300 s, the
default commit interval of the Iceberg Kafka Connect sink (the time a Kafka → Iceberg sink
holds data before it becomes visible); ratio = p50 / 300 s.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable

import pyarrow.parquet as pq
import sqlalchemy as sa

from visitshare.bench import BenchResult, now_iso, peak_rss_mb
from visitshare.settings import Settings

BASELINE_S = 300.0


def _events(settings: Settings, n: int) -> list[dict]:
    from producers.simulator import SimConfig, Simulator
    from visitshare.contracts import ContractRegistry

    contracts = ContractRegistry.load(settings.contracts_dir)
    sim = Simulator(SimConfig(days=1, seed=int(time.time()), bad_rate=0.0), contracts)
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
    for p in paths:
        ids.update(pq.read_table(settings.lake / p, columns=["event_id"]).column(0).to_pylist())
    return ids


def run(
    settings: Settings,
    events: int = 20,
    interval_s: float = 3.0,
    timeout_s: float = 900.0,
    say: Callable[[str], None] = print,
) -> BenchResult:
    from producers.publisher import Outgoing, Publisher
    from visitshare.contracts import ContractRegistry
    from visitshare.db import engine_for
    from visitshare.orchestration import stack
    from visitshare.orchestration.airflow_api import AirflowAPI
    from visitshare.orchestration.run import wait_until_parsed
    from visitshare.release.releases import latest_release

    started_at = now_iso()
    states = stack.up(settings, say=say)
    ours = [n for n, s in states.items() if s == "started"]
    try:
        stack.wait_for_api(settings)
        wait_until_parsed(AirflowAPI(settings), settings, timeout_s)
        engine = engine_for(settings)
        with engine.connect() as conn:
            latest = latest_release(conn)
        seen_upto = latest.validated_upto if latest else 0
        last_release = latest.id if latest else 0
        pending: dict[str, float] = {}  # event id → published at (epoch s)
        latencies: dict[str, float] = {}
        payloads = _events(settings, events)
        contracts = ContractRegistry.load(settings.contracts_dir)
        next_send = time.time()
        rss: dict[str, float] = {}  # service → largest RSS seen (process and its children)
        deadline = time.monotonic() + timeout_s
        with Publisher(settings, contracts) as pub:
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
        baseline_desc="300 s: the default commit interval of the Iceberg Kafka Connect sink",
        target=0.2,
        higher_is_better=False,
        params={"events": events, "interval_s": interval_s},
        peak_rss_mb=max(rss.values(), default=peak_rss_mb()),
        started_at=started_at,
        extra={
            "p50_s": round(p50, 1),
            "p95_s": round(p95, 1),
            "min_s": round(values[0], 1),
            "max_s": round(values[-1], 1),
            "latencies_s": [round(v, 1) for v in values],
            "stack_started_by_bench": ours,
            "service_rss_mb": {k: round(v, 1) for k, v in rss.items()},
            "peak_rss_note": "largest RSS of one stack service (with its child processes), "
            "sampled every 0.5 s",
        },
    )
