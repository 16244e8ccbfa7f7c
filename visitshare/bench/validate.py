"""`visitshare bench validate`: the validate step on a year of Tokyo against a copy floor.

Setup: a year of simulated events for all of Tokyo (about 2M visit outcomes and 100k incident
reports, 1 % malformed) is written into a fresh raw zone with landing's own code (no broker
in between), split over partitions by Kafka's key rule, as raw files of 100k rows.
Measured, each in a fresh child process (its peak RSS is its own):
- ours: `validate` for both datasets (contract + GX suite, validated zone, quarantine,
  run record, Data Docs), with `quality_workers` processes;
- copy floor: read the same raw files and write them back as Parquet with pyarrow.
Both in wall seconds and in CPU seconds (user + system of the child and its workers). Ours
uses more processes than the floor, so the target (≤ 3 × the floor) is held to CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from visitshare.bench import BenchResult, Meter, now_iso, run_child
from visitshare.settings import Settings

RAW_FILE_ROWS = 100_000
TARGET_CPU_RATIO = 3.0


def write_raw_files(
    settings: Settings, topic: str, partition: int, values: list, headers=None
) -> None:
    """Raw-zone files for `values` exactly as landing writes them, without a broker.

    Used to set up benchmarks (and tests) of the stages after landing: their input is the
    raw zone. `values` are dicts (serialized as our producers do) or bytes.
    """
    import orjson
    import pyarrow as pa
    from kafka.consumer.fetcher import ConsumerRecord

    from consumers.landing import Lander
    from visitshare.db import engine_for
    from visitshare.lake import lake_for
    from visitshare.landing import manifest, zones
    from visitshare.landing.rawfile import complete_table, kafka_batch

    engine = engine_for(settings)
    topic_id = "00000000-0000-4000-8000-" + topic.encode().hex()[:12].ljust(12, "0")
    first = manifest.next_offset(engine, topic, topic_id, partition) or 0
    records = []
    for i, v in enumerate(values):
        value = v if isinstance(v, bytes) else orjson.dumps(v)
        hs = (headers[i] if headers else None) or []
        records.append(
            ConsumerRecord(
                topic,
                partition,
                -1,
                first + i,
                1_764_000_000_000,
                0,
                b"k",
                value,
                hs,
                None,
                1,
                len(value),
                10,
            )
        )
    kafka = pa.Table.from_batches([kafka_batch(topic, partition, records)])
    table = complete_table(kafka, Lander(settings).decoder(topic))
    last = first + len(values) - 1
    rel = zones.raw_file(topic, partition, first, last, topic_id).as_posix()
    nbytes, digest = lake_for(settings).write_parquet(table, rel)
    manifest.record_file(
        engine,
        manifest.RawFile(
            topic,
            topic_id,
            partition,
            first,
            last,
            len(values),
            nbytes,
            digest,
            rel,
            "bench",
            settings.clock.now(),
        ),
    )


def build_raw_zone(
    settings: Settings,
    days: int,
    say: Callable[[str], None],
    start: date | None = None,
    seed: int = 2026,
) -> dict[str, int]:
    """A year (or `days` from `start`; default: the days before today) of Tokyo in the raw
    zone; returns rows per topic."""
    from kafka.partitioner.default import murmur2

    from producers.publisher import Outgoing, Publisher
    from producers.simulator import CORE_DATASETS, SimConfig, Simulator
    from visitshare.contracts import ContractRegistry
    from visitshare.producing.topics import is_dlq

    contracts = ContractRegistry.load(settings.contracts_dir)
    sim = Simulator(
        SimConfig(
            days=days,
            municipalities=("all",),
            seed=seed,
            bad_rate=0.01,
            start=start,
            datasets=CORE_DATASETS,  # the benchmark's year of Tokyo: visits and incidents
        ),
        contracts,
        clock=settings.clock,
    )
    say(f"simulating {sim.total:,} events ({days} days of Tokyo) into the raw zone ...")
    partitions = {"visit_outcome": 6, "incident_report": 3}
    buffers: dict[tuple[str, int], list] = {}
    counts: dict[str, int] = {}
    with Publisher(settings, contracts) as pub:  # prepare() only: validation + serialization
        for event in sim.events():
            rec = pub.prepare(Outgoing(event.dataset, event.payload))
            dlq = is_dlq(rec.topic)
            p = (
                0
                if dlq or rec.key is None
                else (murmur2(rec.key) & 0x7FFFFFFF) % partitions[event.dataset]
            )
            buf = buffers.setdefault((rec.topic, p), [])
            buf.append((rec.value, rec.headers))
            counts[rec.topic] = counts.get(rec.topic, 0) + 1
            if len(buf) >= RAW_FILE_ROWS:
                write_raw_files(settings, rec.topic, p, [v for v, _ in buf], [h for _, h in buf])
                buf.clear()
    for (topic, p), buf in buffers.items():
        if buf:
            write_raw_files(settings, topic, p, [v for v, _ in buf], [h for _, h in buf])
    return counts


def _child(kind: str, home: str) -> dict:
    """In a fresh process: one validation of both datasets (ours) or the copy floor."""
    from visitshare.processes import peak_rss_mb

    settings = Settings().model_copy(update={"home": Path(home)})
    if kind == "ours":
        from visitshare.quality.validate import Validator

        with Meter() as meter:  # the workers are joined before run() returns
            validators = [Validator(settings, d) for d in ("visit_outcome", "incident_report")]
            runs = [v.run() for v in validators]
        rows = sum(r.rows_in for r in runs)
        detail: dict[str, Any] = {r.dataset: r.summary().model_dump(mode="json") for r in runs}
        workers: dict[int, float] = {}
        for v in validators:
            for pid, mb in v.worker_peak_rss_mb.items():
                workers[pid] = max(workers.get(pid, 0), mb)
        workers.pop(os.getpid(), None)  # batches validated in this process: counted as main
        peaks = {"main": peak_rss_mb(), **{f"worker {k}": v for k, v in workers.items()}}
        detail["process_peak_rss_mb"] = peaks
        detail["total_rss_mb"] = sum(peaks.values())
    else:
        import pyarrow.parquet as pq

        from visitshare.db import engine_for
        from visitshare.lake import lake_for
        from visitshare.landing import manifest

        files = manifest.files(engine_for(settings))
        out = settings.var / "copy"
        out.mkdir(parents=True, exist_ok=True)
        rows = 0
        lake = lake_for(settings)
        with Meter() as meter:
            for i, f in enumerate(files):
                table = lake.read_table(f.path)
                pq.write_table(table, out / f"{i}.parquet")
                rows += table.num_rows
        detail = {"files": len(files)}
    return {"rows": rows, "peak_rss_mb": peak_rss_mb(), "detail": detail, **meter.as_dict()}


def _run_child(kind: str, home: Path) -> dict:
    return run_child("visitshare.bench.validate", kind, str(home))


def run(settings: Settings, days: int = 365, say: Callable[[str], None] = print) -> BenchResult:
    started = now_iso()
    home = settings.var / "bench" / "validate-work"
    shutil.rmtree(home, ignore_errors=True)
    bench = settings.model_copy(update={"home": home, "topic_prefix": ""})
    t0 = time.perf_counter()
    counts = build_raw_zone(bench, days, say)
    say(f"raw zone ready in {time.perf_counter() - t0:.0f} s: {counts}")
    floor = _run_child("copy", home)
    say(
        f"copy floor: {floor['rows']:,} rows in {floor['seconds']:.1f} s "
        f"({floor['cpu_seconds']:.1f} CPU s), peak {floor['peak_rss_mb']:.0f} MB"
    )
    ours = _run_child("ours", home)
    peaks = ours["detail"]["process_peak_rss_mb"]
    ours["peak_rss_mb"] = max(peaks.values())
    say(
        f"validate: {ours['rows']:,} rows in {ours['seconds']:.1f} s "
        f"({ours['cpu_seconds']:.1f} CPU s); peak RSS {ours['peak_rss_mb']:.0f} MB "
        f"per process, {ours['detail']['total_rss_mb']:.0f} MB summed over {len(peaks)} processes"
    )
    if ours["rows"] != floor["rows"]:
        raise RuntimeError(f"validate saw {ours['rows']} rows, the raw zone holds {floor['rows']}")
    result = BenchResult(
        name="validate",
        unit="seconds (time; ratio = ours / baseline, lower is better)",
        ours=ours["seconds"],
        baseline=floor["seconds"],
        ours_cpu=ours["cpu_seconds"],
        baseline_cpu=floor["cpu_seconds"],
        held_to="cpu",
        baseline_desc="copy floor: read the same raw Parquet files and write them back with "
        "pyarrow (pq.read_table + pq.write_table defaults), one process; ours uses "
        f"{settings.quality_workers} worker processes",
        target=TARGET_CPU_RATIO,
        higher_is_better=False,
        params={"days": days, "rows": ours["rows"], "rows_by_topic": counts},
        peak_rss_mb=ours["peak_rss_mb"],
        started_at=started,
        extra={
            "rows_per_second": round(ours["rows"] / ours["seconds"]),
            "rows_per_cpu_second": round(ours["rows"] / ours["cpu_seconds"]),
            "cpu_by_process": {
                "ours": ours["cpu_by_process"],
                "copy floor": floor["cpu_by_process"],
            },
            "copy_floor_peak_rss_mb": round(floor["peak_rss_mb"], 1),
            "rss_target_mb": 4096,
            "total_rss_mb": round(ours["detail"]["total_rss_mb"], 1),
            "process_peak_rss_mb": ours["detail"]["process_peak_rss_mb"],
            "validation": ours["detail"],
        },
    )
    shutil.rmtree(home, ignore_errors=True)
    return result


if __name__ == "__main__":  # a child of `run`
    print(json.dumps(_child(sys.argv[1], sys.argv[2])))
