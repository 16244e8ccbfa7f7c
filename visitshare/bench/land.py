"""`visitshare bench land`: our `land --drain` against a raw kafka-python read loop.

Both read the same messages from the same 6-partition topic with the same consumer (fetch)
settings, each in a fresh child process, so that each one's peak RSS is its own:
- ours: `land()` (= `visitshare land --drain`) into an empty lake and manifest: Parquet files,
  decoding, manifest commits, with its default worker processes; its peak RSS is the sum over
  the coordinator and its workers;
- raw: assign, seek to the beginning, poll until every message has been seen, nothing else.
Rounds alternate raw, ours, raw, ours. The messages are realistic visit events from the
simulator; a smaller set of them is published repeatedly to reach the size (landing cost does
not depend on whether event ids repeat).

Wall: messages per second. CPU: messages per CPU second, CPU being user + system of the child
and its worker processes plus the broker's during the same interval (the broker serves both
sides the same fetches). Ours uses more processes than the raw loop, so the target (ours ≥ 0.9
× raw) is held to CPU; the summed peak RSS of the landing processes is held to ≤ 500 MB at
both sizes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from kafka import TopicPartition

from producers.publisher import Outgoing, Publisher
from visitshare.bench import BenchResult, Meter, broker_pid, now_iso
from visitshare.bench.produce import visit_events
from visitshare.contracts import ContractRegistry
from visitshare.producing import kafka
from visitshare.producing.broker import ensure_broker
from visitshare.producing.topics import TopicSpec, apply_topics
from visitshare.settings import Settings

PARTITIONS = 6
UNIQUE_EVENTS = 100_000
TARGET_CPU_RATIO = 0.9
RSS_TARGET_MB = 500


def _prefix(messages: int) -> str:
    """Topics of the benchmark: `bench<N>.visits.outcomes.v1`, so landing knows its contract."""
    return f"bench{messages}."


def fill(settings: Settings, topic: str, messages: int, say: Callable[[str], None]) -> None:
    """Publish `messages` simulator events to a fresh 6-partition topic (skipped if full)."""
    admin = kafka.admin(settings)
    try:
        if topic in admin.list_topics():
            admin.delete_topics([topic])
    finally:
        admin.close()
    apply_topics(settings, [TopicSpec(topic, PARTITIONS, 7 * 86_400_000)])
    contracts = ContractRegistry.load(settings.contracts_dir)
    say(f"publishing {messages:,} visit events to {topic} ...")
    unique = visit_events(contracts, min(UNIQUE_EVENTS, messages), seed=11)
    with Publisher(settings, contracts) as pub:  # the exact records our producers send
        records = [pub.prepare(Outgoing("visit_outcome", e)) for e in unique]
    producer = kafka.producer(settings)
    for i in range(messages):
        r = records[i % len(records)]
        producer.send(topic, key=r.key, value=r.value, headers=r.headers)
    producer.flush()
    producer.close()


def _child(kind: str, topic: str, messages: int, home: str, broker: int | None) -> dict:
    """Runs in a fresh process: one landing (ours) or one read loop (raw); returns figures."""
    from consumers.landing import land
    from visitshare.processes import peak_rss_mb

    prefix = topic.removesuffix("visits.outcomes.v1")
    settings = Settings().model_copy(update={"home": Path(home), "topic_prefix": prefix})
    with Meter({"broker": broker}) as meter:
        if kind == "ours":
            report = land(settings, [topic])  # its workers are joined before it returns
            rows, rss = report.rows, report.process_peak_rss_mb
        else:
            consumer = kafka.consumer(settings, group_id=None)
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            rows = 0
            while rows < messages:
                for records in consumer.poll(timeout_ms=1000).values():
                    for _record in records:
                        rows += 1
            consumer.close()
            rss = [peak_rss_mb()]
    return {"rows": rows, "process_peak_rss_mb": rss, **meter.as_dict()}


def _run_child(settings: Settings, kind: str, topic: str, messages: int) -> dict:
    home = settings.var / "bench" / f"land-{kind}"
    shutil.rmtree(home, ignore_errors=True)
    broker = str(broker_pid(settings) or "")
    cmd = [sys.executable, "-m", "visitshare.bench.land", kind, topic, str(messages), str(home)]
    out = subprocess.run([*cmd, broker], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed ({out.returncode}): {out.stderr[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rows"] != messages:
        raise RuntimeError(f"{kind} saw {result['rows']} of {messages} messages")
    result["rate"] = messages / result["seconds"]
    result["cpu_rate"] = messages / result["cpu_seconds"]
    result["peak_rss_mb"] = max(result["process_peak_rss_mb"])
    result["total_rss_mb"] = sum(result["process_peak_rss_mb"])
    shutil.rmtree(home, ignore_errors=True)
    return result


def _say_round(say: Callable[[str], None], size: int, i: int, kind: str, r: dict) -> None:
    cpu = r["cpu_by_process"]
    say(
        f"{size:,} messages, round {i + 1}: {kind} {r['rate']:,.0f} msg/s, "
        f"{r['cpu_rate']:,.0f} msg/CPU s ({r['cpu_seconds']:.1f} CPU s: "
        + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
        + f"); peak RSS {r['total_rss_mb']:.0f} MB over {len(r['process_peak_rss_mb'])} process(es)"
    )


def run(
    settings: Settings,
    messages: int = 1_000_000,
    large: int = 3_000_000,
    rounds: int = 2,
    say: Callable[[str], None] = print,
) -> BenchResult:
    started = now_iso()
    ensure_broker(settings)
    sizes: dict[int, dict[str, float]] = {}
    details: dict[int, dict[str, list[dict]]] = {}
    for size in [messages] + ([large] if large else []):
        topic = _prefix(size) + "visits.outcomes.v1"
        fill(settings, topic, size, say)
        raw, ours = [], []
        for i in range(rounds if size == messages else 1):
            raw.append(_run_child(settings, "raw", topic, size))
            _say_round(say, size, i, "raw", raw[-1])
            ours.append(_run_child(settings, "ours", topic, size))
            _say_round(say, size, i, "ours", ours[-1])
        details[size] = {"ours": ours, "raw": raw}
        # Total messages over total seconds: one slow round is not hidden by a fast one.
        sizes[size] = {
            "ours_rate": size * len(ours) / sum(r["seconds"] for r in ours),
            "raw_rate": size * len(raw) / sum(r["seconds"] for r in raw),
            "ours_cpu_rate": size * len(ours) / sum(r["cpu_seconds"] for r in ours),
            "raw_cpu_rate": size * len(raw) / sum(r["cpu_seconds"] for r in raw),
            "ours_client_cpu_rate": size
            * len(ours)
            / sum(r["cpu_by_process"]["self"] for r in ours),
            "raw_client_cpu_rate": size * len(raw) / sum(r["cpu_by_process"]["self"] for r in raw),
            "ours_cpu_us_per_message": 1e6
            * sum(r["cpu_seconds"] for r in ours)
            / (size * len(ours)),
            "raw_cpu_us_per_message": 1e6 * sum(r["cpu_seconds"] for r in raw) / (size * len(raw)),
            "ours_peak_rss_mb": max(r["peak_rss_mb"] for r in ours),
            "ours_total_rss_mb": max(r["total_rss_mb"] for r in ours),
            "raw_peak_rss_mb": max(r["peak_rss_mb"] for r in raw),
        }
        admin = kafka.admin(settings)
        try:
            admin.delete_topics([topic])  # the embedded broker keeps everything in memory
        finally:
            admin.close()
    main = sizes[messages]
    return BenchResult(
        name="land",
        unit="messages/s (rate; ratio = ours / baseline, higher is better)",
        ours=main["ours_rate"],
        baseline=main["raw_rate"],
        ours_cpu=main["ours_cpu_rate"],
        baseline_cpu=main["raw_cpu_rate"],
        cpu_unit="messages per CPU second (rate; higher is better): user + system of the "
        "landing processes (or the read loop) and of the broker over the same interval",
        held_to="cpu",
        baseline_desc="raw kafka-python KafkaConsumer loop over the same messages (assign, seek to "
        "beginning, poll, count), same consumer settings, one process; ours uses "
        f"{settings.land_workers} processes",
        target=TARGET_CPU_RATIO,
        higher_is_better=True,
        params={"messages": messages, "large": large, "rounds": rounds, "partitions": PARTITIONS},
        peak_rss_mb=main["ours_total_rss_mb"],
        started_at=started,
        extra={
            "by_size": {str(k): {m: round(v, 1) for m, v in d.items()} for k, d in sizes.items()},
            "peak_rss_note": "peak_rss_mb: summed over the landing processes (coordinator and "
            "workers), the largest of the rounds at the main size",
            "rss_target_mb": RSS_TARGET_MB,
            "rss_meets_target": all(
                d["ours_total_rss_mb"] <= RSS_TARGET_MB for d in sizes.values()
            ),
            "rounds": {
                str(k): {"ours": _rounds(v["ours"]), "raw": _rounds(v["raw"])}
                for k, v in details.items()
            },
        },
    )


def _rounds(results: list[dict]) -> list[dict]:
    return [
        {
            "seconds": round(r["seconds"], 2),
            "cpu_seconds": round(r["cpu_seconds"], 2),
            "cpu_by_process": {k: round(v, 2) for k, v in r["cpu_by_process"].items()},
            "process_peak_rss_mb": [round(x, 1) for x in r["process_peak_rss_mb"]],
        }
        for r in results
    ]


if __name__ == "__main__":  # a child of `run`
    kind, topic, n, home, broker = sys.argv[1:6]
    print(json.dumps(_child(kind, topic, int(n), home, int(broker) if broker else None)))
