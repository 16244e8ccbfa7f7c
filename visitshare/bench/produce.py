"""`visitshare bench produce`: our full producer path against a raw kafka-python producer.

Ours: dicts in → contract validation → JSON serialization → send (acks=all, idempotent, zstd)
with delivery confirmed per event; partitions chosen by our memoized copy of Kafka's default
rule (the same partition kafka-python's partitioner picks). Baseline: a KafkaProducer with the same settings sending the
same bytes, already serialized, with no per-event callbacks. Same broker, same topic, rounds
alternate (raw, ours, raw, ours ...) so that neither gets the warmer broker.
Wall: events per second. CPU: events per CPU second, CPU being user + system of this process
(both sides run in it, one at a time; the sender thread included) plus the broker's over the
same interval. Both sides use one process, so the target is held to wall time.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from producers.publisher import Outgoing, Publisher
from producers.simulator import SimConfig, Simulator
from visitshare.bench import BenchResult, Meter, broker_pid, now_iso, peak_rss_mb
from visitshare.contracts import ContractRegistry
from visitshare.producing import kafka
from visitshare.producing.broker import ensure_broker
from visitshare.producing.topics import apply_topics, declared_topics
from visitshare.settings import Settings

BENCH_PREFIX = "bench."


def visit_events(contracts: ContractRegistry, n: int, seed: int) -> list[dict]:
    """n realistic visit events from all of Tokyo (good ones only)."""
    days = max(1, n // 5000 + 2)
    sim = Simulator(
        SimConfig(days=days, municipalities=("all",), seed=seed, datasets=("visit_outcome",)),
        contracts,
    )
    events: list[dict] = []
    for e in sim.events():
        assert isinstance(e.payload, dict)  # bad_rate 0: every event is a decoded dict
        events.append(e.payload)
        if len(events) == n:
            return events
    raise RuntimeError(f"simulator produced only {len(events)} of {n} events")


def run(
    settings: Settings,
    events: int = 200_000,
    rounds: int = 2,
    seed: int = 7,
    say: Callable[[str], None] = print,
) -> BenchResult:
    started = now_iso()
    ensure_broker(settings)
    # Own topics and outbox: the benchmark never mixes with real data.
    bench = settings.model_copy(
        update={"topic_prefix": BENCH_PREFIX, "home": settings.var / "bench" / "work"}
    )
    apply_topics(bench, declared_topics(bench))
    contracts = ContractRegistry.load(bench.contracts_dir)

    say(f"generating {events:,} visit events ...")
    data = visit_events(contracts, events, seed)
    items = [Outgoing("visit_outcome", e) for e in data]
    with Publisher(bench, contracts) as pub:
        records = [pub.prepare(i) for i in items]
    assert all(r.kind == "event" for r in records), "benchmark events must all be valid"
    topic = records[0].topic
    # The pre-generated data set is large and lives to the end; without freezing, the garbage
    # collector rescans it over and over, and penalizes whichever side allocates more.
    gc.collect()
    gc.freeze()

    others = {"broker": broker_pid(settings)}  # the broker runs under the main home

    def raw_round() -> Meter:
        with Meter(others) as meter:
            producer = kafka.producer(bench)
            for r in records:
                producer.send(topic, key=r.key, value=r.value, headers=r.headers)
            producer.flush()
        producer.close()
        return meter

    def our_round() -> Meter:
        # Measured: what report.elapsed_s covers (connect, send, flush), not opening the outbox.
        with Publisher(bench, contracts) as pub, Meter(others) as meter:
            report = pub.publish(items)
        if report.delivered_total != len(items):
            raise RuntimeError(f"only {report.delivered_total} of {len(items)} confirmed: {report}")
        return meter

    raw_runs, our_runs = [], []
    for i in range(rounds):
        raw_runs.append(raw_round())
        say(_round_line(i, "raw", events, raw_runs[-1]))
        our_runs.append(our_round())
        say(_round_line(i, "ours", events, our_runs[-1]))

    # Total events over total time: one slow round is not hidden by a fast one.
    ours = events * rounds / sum(m.wall_s for m in our_runs)
    raw = events * rounds / sum(m.wall_s for m in raw_runs)
    ours_cpu = events * rounds / sum(m.cpu_s for m in our_runs)
    raw_cpu = events * rounds / sum(m.cpu_s for m in raw_runs)
    return BenchResult(
        name="produce",
        unit="events/s (rate; ratio = ours / baseline, higher is better)",
        ours=ours,
        baseline=raw,
        ours_cpu=ours_cpu,
        baseline_cpu=raw_cpu,
        cpu_unit="events per CPU second (rate; higher is better): user + system of the "
        "benchmark process and of the broker over the same interval",
        held_to="wall",
        baseline_desc="raw kafka-python KafkaProducer, same settings (acks=all, idempotent, "
        f"{bench.compression}, linger {bench.producer_linger_ms} ms), same pre-serialized bytes, "
        "kafka-python's default partitioner, no per-event callbacks",
        target=0.7,
        higher_is_better=True,
        params={
            "events": events,
            "rounds": rounds,
            "seed": seed,
            "topic": topic,
            "partitions": next(
                t.partitions for t in declared_topics(bench) if bench.topic(t.name) == topic
            ),
            "mean_event_bytes": round(sum(len(r.value) for r in records) / len(records)),
        },
        peak_rss_mb=peak_rss_mb(),
        started_at=started,
        extra={
            "ours_round_rates": [round(events / m.wall_s) for m in our_runs],
            "raw_round_rates": [round(events / m.wall_s) for m in raw_runs],
            "ours_round_cpu_seconds": [_cpu(m) for m in our_runs],
            "raw_round_cpu_seconds": [_cpu(m) for m in raw_runs],
        },
    )


def _cpu(m: Meter) -> dict[str, float]:
    return {k: round(v, 2) for k, v in m.cpu_by_process.items()}


def _round_line(i: int, kind: str, events: int, m: Meter) -> str:
    return (
        f"round {i + 1}: {kind} {events / m.wall_s:,.0f} events/s, "
        f"{events / m.cpu_s:,.0f} events/CPU s ({m.cpu_s:.1f} CPU s: "
        + ", ".join(f"{k} {v:.1f}" for k, v in m.cpu_by_process.items())
        + ")"
    )
