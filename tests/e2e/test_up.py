"""`visitshare up`: events published while the stack is up reach a release with no one
triggering a DAG (landing service → landing watcher → curate DAG); `down` stops it all."""

import os
import subprocess
import sys

import psutil
import requests

from tests.helpers import free_port, wait_for
from visitshare.access import tokens
from visitshare.db import engine_for
from visitshare.orchestration import stack
from visitshare.release.releases import latest_release
from visitshare.settings import Settings


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "visitshare.cli", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def _latest(settings: Settings):
    with engine_for(settings).connect() as conn:
        return latest_release(conn)


def test_up_releases_new_events_by_itself_and_down_stops_only_ours(isolated_env, monkeypatch):
    monkeypatch.setenv("VISITSHARE_BROKER_PORT", str(free_port()))
    monkeypatch.setenv("VISITSHARE_AIRFLOW_API_PORT", str(free_port()))
    monkeypatch.setenv("VISITSHARE_SHARE_PORT", str(free_port()))
    settings = Settings()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        up = _cli("up")
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        pids = stack.running(settings)
        assert all(pids.values()), pids

        sim = _cli("simulate", "--days", "1", "--municipalities", "shinjuku", "--publish")
        assert sim.returncode == 0, sim.stderr[-2000:]
        wait_for(lambda: _latest(settings) is not None, timeout_s=300, every_s=1)
        rel = _latest(settings)
        assert rel.disclosure["result"] == "passed"
        visits = next(d for d in rel.disclosure["datasets"] if d["dataset"] == "visit_outcome")
        assert visits["rows_in"] + visits["rows_held"] > 0  # yesterday's month may be open
        # The sharing server serves the release to a partner's token.
        issued = tokens.create(settings, "shinjuku", "1h")
        version = (
            f"{tokens.endpoint(settings)}/shares/shinjuku/schemas/shared/tables/visits/version"
        )
        auth = {"Authorization": f"Bearer {issued.token}"}
        answer = requests.get(version, headers=auth, timeout=10)
        assert answer.status_code == 200 and answer.headers["Delta-Table-Version"] == str(rel.id)

        down = _cli("down")
        assert down.returncode == 0, down.stderr[-2000:]
        assert all(v is None for v in stack.running(settings).values())
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                       for p in pids.values())  # fmt: skip
        assert bystander.poll() is None  # not ours: untouched
    finally:
        stack.down(settings, say=lambda _: None)
        bystander.kill()
