"""`visitshare publish` SIGKILLed at random moments, then a normal publish: nothing is left
behind and every release is complete (crash class: residue of a killed publish)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import psutil
import sqlalchemy as sa

from tests.helpers import validated_zone, wait_for
from visitshare.db import engine_for
from visitshare.db.tables import aggregate_states, record_batches, releases
from visitshare.landing import zones
from visitshare.release import shared
from visitshare.release.records import closed_window
from visitshare.release.recovery import orphan_files, orphan_state_files, publish_lock
from visitshare.release.releases import release_dir

KILLS = 10


def _publish(*args: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "VISITSHARE_PUBLISH_WORKERS": "2",
        "VISITSHARE_PUBLISH_IN_PROCESS_ROWS": "0",  # shard workers even for a small zone
    }
    return subprocess.Popen(
        [sys.executable, "-m", "visitshare.cli", "publish", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _family(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_killed_publishes_leave_no_residue_and_the_next_completes_them(kafka_settings, contracts):
    settings = kafka_settings
    validated_zone(settings, contracts, days=2, seed=8)
    first = _publish()
    started = time.monotonic()
    assert first.wait(timeout=600) == 0, first.stderr.read().decode()[-3000:]
    duration = time.monotonic() - started
    # Late events of the same month: the publishes below write ledgers and aggregate values.
    grace = contracts.get("visit_outcome").disclosure.close_after_days
    start = closed_window(12, settings.clock.now(), grace)
    validated_zone(settings, contracts, days=2, seed=9, start=start)

    rng = random.Random(20261204)
    workers_seen = 0
    for _ in range(KILLS):
        proc = _publish("--full")  # every partition, every table: the most to kill
        moment = rng.uniform(0.2, duration * 1.2)
        deadline = time.monotonic() + moment
        family: list[psutil.Process] = []
        while time.monotonic() < deadline and proc.poll() is None:  # note the workers as they come
            family = _family(proc) or family
            time.sleep(0.05)
        family = _family(proc) or family
        proc.kill()
        proc.wait()
        workers_seen += len(family)
        # Workers die with their parent (the kernel's parent-death signal), not minutes later.
        wait_for(lambda f=family: not any(p.is_running() and p.status() != "zombie" for p in f), 15)

    final = _publish("--full")
    assert final.wait(timeout=600) == 0, final.stderr.read().decode()[-3000:]

    assert workers_seen > 0, "no kill happened while shard workers ran; widen the moments"
    staging = settings.lake / zones.Zone.STAGING
    assert not staging.exists() or list(staging.iterdir()) == []
    with publish_lock(settings):
        assert orphan_files(settings) == []
        assert orphan_state_files(settings) == []
    with engine_for(settings).connect() as conn:
        paths = conn.execute(sa.select(record_batches.c.path)).scalars().all()
        paths += conn.execute(sa.select(aggregate_states.c.path)).scalars().all()
    assert paths and all((settings.lake / p).is_file() for p in paths)  # none dangling
    cat = shared.catalog(settings)
    with engine_for(settings).connect() as conn:
        rows = conn.execute(sa.select(releases).order_by(releases.c.id)).all()
    assert len(rows) >= 2
    for row in rows:
        assert row.completed_at is not None, f"release {row.id} was never completed"
        assert row.notice_sent, f"release {row.id}: notice pending"
        assert (release_dir(settings, row.id) / "disclosure.html").exists()
        for name, info in row.tables.items():
            if info["snapshot_id"] is not None:
                refs = cat.load_table(shared.table(settings, name).iceberg).refs()
                assert f"release-{row.id}" in refs, f"release {row.id}: {name} untagged"
