"""Landing when things go wrong: SIGKILL at random points, broker gone, read-only lake."""

import contextlib
import hashlib
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
from collections import defaultdict

import psutil
import pyarrow.parquet as pq
import pytest

from consumers.landing import land
from producers.publisher import Outgoing, Publisher
from producers.simulator import SimConfig, Simulator
from tests.helpers import wait_for
from visitshare.db import dispose_all, engine_for
from visitshare.landing import manifest
from visitshare.landing.errors import LandingError
from visitshare.producing.topics import apply_topics
from visitshare.settings import Settings

VISITS = "visits.outcomes.v1"


def fill(settings, contracts, n: int, days: int = 2):
    """At least n visit events on the visits topic (the same events, repeated if needed)."""
    events = [
        e.payload
        for e in Simulator(
            SimConfig(days=days, municipalities=("all",), seed=3, datasets=("visit_outcome",)),
            contracts,
        ).events()
    ]
    items = [Outgoing("visit_outcome", events[i % len(events)]) for i in range(n)]
    with Publisher(settings, contracts) as pub:
        report = pub.publish(items)
    assert report.delivered_total == n
    return n


def landed_rows(settings) -> int:
    return sum(f.row_count for f in manifest.files(engine_for(settings), settings.topic(VISITS)))


def assert_consistent(settings, complete: int | None = None):
    """Manifest and files agree: checksums, offsets, contiguity; no stray files in the lake."""
    by_partition = defaultdict(list)
    files = manifest.files(engine_for(settings), settings.topic(VISITS))
    for f in files:
        data = (settings.lake / f.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f.sha256
        offsets = (
            pq.read_table(settings.lake / f.path, columns=["kafka_offset"]).column(0).to_pylist()
        )
        assert offsets == list(range(f.first_offset, f.last_offset + 1))
        by_partition[f.partition].append((f.first_offset, f.last_offset))
    for ranges in by_partition.values():
        ranges.sort()
        assert ranges[0][0] == 0
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))
    on_disk = {
        p.relative_to(settings.lake).as_posix()
        for p in (settings.lake / "raw").rglob("*")
        if p.is_file()
    }
    assert on_disk == {f.path for f in manifest.files(engine_for(settings))}, (
        "orphan or temporary files left"
    )
    if complete is not None:
        assert sum(f.row_count for f in files) == complete


def drain_in_background(settings):
    """A drain of the visits topic in a thread; its report or LandingError ends up in `box`."""
    box = {}

    def drain():
        try:
            box["report"] = land(settings, [settings.topic(VISITS)], workers=1)
        except LandingError as exc:
            box["error"] = exc

    thread = threading.Thread(target=drain)
    thread.start()
    return thread, box


@pytest.mark.slow
def test_exactly_once_under_sigkill_at_random_points(kafka_settings, contracts, monkeypatch):
    """Kill the landing service (and its workers) mid-landing over and over; nothing is lost or doubled."""
    monkeypatch.setenv("VISITSHARE_LAND_ROLL_ROWS", "400")
    monkeypatch.setenv("VISITSHARE_LAND_WORKERS", "2")
    # Fixed shares, no group: each restart would wait out the killed member's session first
    # (the group's own kill-and-rejoin case is tests/integration/test_landing_group.py).
    monkeypatch.setenv("VISITSHARE_LAND_GROUP_ID", "")
    settings = Settings()
    total = fill(settings, contracts, 60_000)
    rng = random.Random(20261125)
    cmd = [
        sys.executable,
        "-m",
        "visitshare.cli",
        "land",
        "--follow",
        "--topic",
        settings.topic(VISITS),
    ]
    kills = 0
    for _ in range(40):
        if kills >= 12 or landed_rows(settings) >= total:
            break
        before = landed_rows(settings)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # Kill at a random point once landing is under way (after its next commit).
            wait_for(
                lambda b=before, p=proc: landed_rows(settings) > b or p.poll() is not None,
                timeout_s=60,
                every_s=0.02,
            )
            threading.Event().wait(rng.uniform(0, 0.25))
            family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(30)
        # Its worker processes notice and exit on their own; wait for them.
        wait_for(
            lambda fam=family: (
                not any(
                    psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                    for p in fam
                )
            ),
            timeout_s=30,
        )
        if before < landed_rows(settings) < total:
            kills += 1
    assert kills >= 10, f"only {kills} kills happened while landing was under way"
    dispose_all()
    final = subprocess.run(
        [
            sys.executable,
            "-m",
            "visitshare.cli",
            "land",
            "--drain",
            "--topic",
            settings.topic(VISITS),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert final.returncode == 0, final.stderr
    assert_consistent(settings, complete=total)


def test_broker_gone_mid_drain_leaves_a_consistent_manifest(own_broker, contracts, monkeypatch):
    monkeypatch.setenv("VISITSHARE_LAND_ROLL_ROWS", "300")
    monkeypatch.setenv("VISITSHARE_LAND_IDLE_TIMEOUT_SECONDS", "3")
    settings = Settings()
    own_broker.start()
    apply_topics(settings)
    fill(settings, contracts, 30_000)
    thread, box = drain_in_background(settings)
    wait_for(lambda: landed_rows(settings) > 0, every_s=0.01)
    own_broker.stop()
    thread.join(60)
    assert "report" not in box, "the drain should not have completed"
    message = str(box["error"])
    assert "unreachable" in message or "no data" in message, message
    assert "committed" in message
    assert 0 < landed_rows(settings) < 30_000
    assert_consistent(settings)


@contextlib.contextmanager
def read_only(path):
    """Make `path` read-only for real (a read-only bind mount: even root cannot write)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root here")
    mounted = subprocess.run(
        ["/usr/bin/mount", "--bind", str(path), str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount: {mounted.stderr.decode().strip()}")
    try:
        subprocess.run(
            ["/usr/bin/mount", "-o", "remount,ro,bind", str(path)], check=True, capture_output=True
        )
        yield
    finally:
        subprocess.run(["/usr/bin/umount", str(path)], check=False, capture_output=True)


def test_read_only_lake_is_refused_before_anything_lands(kafka_settings, contracts):
    fill(kafka_settings, contracts, 500, days=1)
    with (
        read_only(kafka_settings.lake),
        pytest.raises(LandingError, match=r"cannot write to the lake.*Read-only file system"),
    ):
        land(kafka_settings, workers=1)
    assert manifest.files(engine_for(kafka_settings)) == []


def test_lake_turning_read_only_mid_drain(kafka_settings, contracts, monkeypatch):
    monkeypatch.setenv("VISITSHARE_LAND_ROLL_ROWS", "200")
    settings = Settings()
    fill(settings, contracts, 20_000)
    raw = settings.lake / "raw"
    mount = None
    thread, box = drain_in_background(settings)
    try:
        wait_for(lambda: landed_rows(settings) > 0, every_s=0.005)
        mount = read_only(raw)
        mount.__enter__()
        thread.join(60)
    finally:
        if mount is not None:
            mount.__exit__(None, None, None)
    if "report" in box:
        pytest.skip("the drain finished before the lake became read-only")
    assert "Read-only file system" in str(box["error"])
    assert 0 < landed_rows(settings) < 20_000
    assert_consistent(settings)
    # Once writable again, a new drain completes the job exactly once.
    land(settings, [settings.topic(VISITS)], workers=1)
    assert_consistent(settings, complete=20_000)
