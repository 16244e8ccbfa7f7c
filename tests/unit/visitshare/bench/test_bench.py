"""Benchmark results (wall and CPU, the held ratio) and how CPU seconds are measured."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from visitshare.bench import (
    SELF,
    BenchResult,
    Meter,
    own_cpu_seconds,
    tree_cpu_seconds,
    write_result,
    write_suite,
)

BURN = "sum(i * i for i in range(2_000_000))"  # some CPU seconds in a child, not a sleep


def result(**kw) -> BenchResult:
    args = {
        "name": "validate",
        "unit": "seconds (time; ratio = ours / baseline, lower is better)",
        "ours": 30.0,
        "baseline": 10.0,
        "baseline_desc": "copy floor",
        "target": 3.0,
        "higher_is_better": False,
        "params": {},
        "peak_rss_mb": 100.0,
        "started_at": "2026-01-01T00:00:00+00:00",
    }
    return BenchResult(**(args | kw))


def test_the_target_is_judged_on_the_held_ratio():
    r = result(ours_cpu=50.0, baseline_cpu=20.0, held_to="cpu")
    assert r.ratio == 3.0 and r.cpu_ratio == 2.5
    assert r.meets_target  # CPU: 2.5 ≤ 3
    assert not result(ours=40.0, ours_cpu=50.0, baseline_cpu=20.0).meets_target  # wall: 4 > 3
    rate = result(
        unit="messages/s (rate)",
        ours=80.0,
        baseline=100.0,
        ours_cpu=40.0,
        baseline_cpu=100.0,
        higher_is_better=True,
        target=0.9,
        held_to="cpu",
    )
    assert rate.cpu_ratio == 0.4 and not rate.meets_target
    assert rate.cpu_unit.startswith("messages per CPU second")


def test_no_cpu_figure_cannot_pass_a_cpu_target():
    r = result(ours_cpu=5.0, held_to="cpu")
    assert r.cpu_ratio is None and not r.meets_target
    assert "cpu: ours=5 baseline=n/a ratio=n/a" in r.result_line()


def test_results_made_without_cpu_figures_still_work():
    """What bench/publish.py builds today: no CPU fields, judged on wall time."""
    r = result(ours=12.0)
    assert r.held_to == "wall" and r.ours_cpu is None and r.meets_target
    assert r.as_dict({})["cpu_ratio"] is None


def test_held_to_is_wall_or_cpu():
    with pytest.raises(ValueError, match="held_to"):
        result(held_to="rss")


def test_result_line_gives_both_ratios():
    line = result(ours_cpu=50.0, baseline_cpu=20.0, held_to="cpu").result_line()
    assert line == (
        "RESULT validate wall: ours=30 baseline=10 ratio=3.000 · "
        "cpu: ours=50 baseline=20 ratio=2.500 · target(cpu)=3.0 PASS"
    )


def test_written_result_and_suite_have_the_cpu_figures(settings):
    r = result(ours_cpu=50.0, baseline_cpu=20.0, held_to="cpu")
    data = json.loads(write_result(settings, r).read_text())
    assert data["ours_cpu"] == 50.0 and data["baseline_cpu"] == 20.0
    assert data["cpu_ratio"] == 2.5 and data["ratio"] == 3.0 and data["held_to"] == "cpu"
    assert data["meets_target"] is True and data["cpu_unit"].startswith("CPU seconds")
    j, m = write_suite(settings, [r, result(name="publish", ours=40.0)])
    table = m.read_text()
    assert "| ours CPU | baseline CPU | CPU ratio |" in table
    assert "| 50 | 20 | 2.500 | ≤ 3.0 (cpu) | PASS |" in table
    assert "| n/a | n/a | n/a | ≤ 3.0 (wall) | MISS |" in table
    assert [x["name"] for x in json.loads(j.read_text())["results"]] == ["validate", "publish"]


def test_meter_takes_its_clocks_from_outside():
    ticks = iter([10.0, 12.5])
    own = iter([1.0, 4.0])
    trees = {7: iter([100.0, 100.5])}
    with Meter(
        {"broker": 7, "gone": None},
        wall=lambda: next(ticks),
        own_cpu=lambda: next(own),
        tree_cpu=lambda pid: next(trees[pid]),
    ) as m:
        pass
    assert m.wall_s == 2.5
    assert m.cpu_by_process == {SELF: 3.0, "broker": 0.5}
    assert m.cpu_s == 3.5
    assert m.as_dict() == {"seconds": 2.5, "cpu_seconds": 3.5, "cpu_by_process": m.cpu_by_process}
    trees = {7: iter([1.0, 2.0])}
    with Meter({"broker": 7}, include_self=False, tree_cpu=lambda pid: next(trees[pid])) as m:
        pass
    assert m.cpu_by_process == {"broker": 1.0}


def test_own_cpu_counts_children_waited_for():
    with Meter() as m:
        subprocess.run([sys.executable, "-c", BURN], check=True)
    assert m.cpu_by_process[SELF] > 0.01
    assert own_cpu_seconds() >= m.cpu_by_process[SELF]


def test_tree_cpu_counts_a_process_and_the_children_it_waited_for():
    """A process that is not ours to wait for (a broker, a service) and its descendants."""
    code = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {BURN!r}], check=True)\n"
        "print('done', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "done\n"
        assert tree_cpu_seconds(proc.pid) > 0.01  # mostly the finished child's
    finally:
        proc.communicate("")
    assert tree_cpu_seconds(proc.pid) == 0.0  # gone


def test_contracts_with_mode_sets_the_aggregate_mode_of_every_contract(tmp_path):
    from visitshare.bench.publish import contracts_with_mode
    from visitshare.contracts import ContractRegistry
    from visitshare.settings import REPO_ROOT

    out = contracts_with_mode(tmp_path, REPO_ROOT / "schemas", "threshold")
    registry = ContractRegistry.load(out)
    assert {c.disclosure.aggregates.mode for c in registry} == {"threshold"}
    assert (out / "outcomes.yaml").exists()
