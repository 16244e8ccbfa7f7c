"""`make run-cluster`: the main job on the cluster profile (PostgreSQL, Redis, SeaweedFS, Celery).

One run of `visitshare run` with VISITSHARE_PROFILE=cluster on this machine's PostgreSQL and
Redis, with databases, a Redis database number, ports and a home of this test's own; then
`visitshare down`. It checks what the profile promises: Airflow's task instances ran on both
Celery workers (the mapped shards too), the release's Iceberg tables live on object storage
and read back through pyiceberg and DuckDB, the lineage events name what each task read and
wrote, and nothing of ours runs afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import psutil
import pytest
import sqlalchemy as sa

from tests.helpers import free_port
from visitshare.orchestration import cluster, stack
from visitshare.settings import Settings

pytestmark = pytest.mark.postgres


@pytest.fixture
def cluster_env(isolated_env, pg_server, monkeypatch):
    """Settings of a cluster profile of this test alone; its databases dropped afterwards."""
    try:
        cluster.check_redis(Settings(profile="cluster"))
    except cluster.ClusterUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc}; CI requires it")
        pytest.skip(f"{exc}; start Redis to run the cluster test")
    prefix = f"vs_t{uuid.uuid4().hex[:8]}"
    env = {
        "VISITSHARE_PROFILE": "cluster",
        "VISITSHARE_PG_DATABASE_PREFIX": prefix,
        "VISITSHARE_REDIS_URL": "redis://127.0.0.1:6379/13",
        "VISITSHARE_BROKER_PORT": str(free_port()),
        "VISITSHARE_AIRFLOW_API_PORT": str(free_port()),
        "VISITSHARE_SHARE_PORT": str(free_port()),
        **{
            f"VISITSHARE_SEAWEED_{name.upper()}_PORT": str(free_port())
            for name in ("s3", "iceberg", "master", "filer", "volume")
        },
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    yield settings
    stack.down(settings, say=lambda _: None)
    admin = sa.create_engine(sa.make_url(pg_server).set(database="postgres"))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for name in (prefix, prefix + cluster.AIRFLOW_DB_SUFFIX):
            conn.exec_driver_sql(f'drop database if exists "{name}" with (force)')
    admin.dispose()


def _ours(settings: Settings) -> list[psutil.Process]:
    """Every live process of our services, with their children."""
    procs = []
    for pid in stack.running(settings).values():
        if pid is not None:
            p = psutil.Process(pid)
            procs += [p, *p.children(recursive=True)]
    return procs


def test_run_cluster_lands_validates_and_releases_on_the_production_stack(cluster_env):
    settings = cluster_env
    out = subprocess.run(
        [sys.executable, "-m", "visitshare.cli", "run", "--days", "2"],
        capture_output=True, text=True, timeout=900, env={**os.environ, "COLUMNS": "220"},
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "│ reconciles " in out.stdout and "✗" not in out.stdout

    # Airflow ran on PostgreSQL with Celery: every task instance names the worker that ran it,
    # both workers took tasks, and the mapped shards spread over both.
    airflow_db = sa.create_engine(cluster.airflow_db_url(settings))
    with airflow_db.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select task_id, map_index, hostname from task_instance "
                "where state = 'success' and dag_id in ('ingest_events', 'curate_program_data')"
            )
        ).all()
    airflow_db.dispose()
    workers = {cluster.worker_name(i) for i in (1, 2)}
    assert {r.hostname for r in rows} == workers
    shards = [r for r in rows if r.task_id == "build_release_shard"]
    assert len(shards) >= 2 and {r.hostname for r in shards} == workers

    # The project's records are on PostgreSQL; the release's tables on object storage.
    from visitshare.db import engine_for
    from visitshare.release import shared
    from visitshare.release.releases import get_release, read_table

    assert engine_for(settings).dialect.name == "postgresql"
    rel = get_release(settings, "latest")
    visits = read_table(settings, rel, "visits")
    assert visits.num_rows > 0
    tbl = shared.catalog(settings).load_table(shared.table(settings, "visits").iceberg)
    assert tbl.location().startswith(settings.lake_uri + "/")
    files = [
        t.file.file_path
        for t in tbl.scan(snapshot_id=rel.tables["visits"]["snapshot_id"]).plan_files()
    ]
    assert files and all(f.startswith("s3://") for f in files)
    assert not (settings.lake / "shared").exists()  # nothing of the release on local disk

    import duckdb
    import pyarrow.dataset as ds

    from visitshare.lake import s3_filesystem

    arrow = ds.dataset([f.removeprefix("s3://") for f in files], filesystem=s3_filesystem(settings))
    con = duckdb.connect()
    con.register("visits", arrow.to_table())
    assert con.execute("select count(*) from visits").fetchone()[0] == visits.num_rows

    # Lineage: every task's START and COMPLETE, naming its inputs and outputs.
    events = [
        json.loads(line)
        for path in sorted((settings.var / "lineage").rglob("*.json*"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    completes = {
        e["job"]["name"]: e
        for e in events
        if e.get("eventType") == "COMPLETE" and "." in e["job"]["name"]
    }
    land = completes["ingest_events.land_visit_outcome"]
    assert any("visits.outcomes.v1" in d["name"] for d in land["inputs"])
    assert any("raw/" in d["name"] for d in land["outputs"])
    publish = completes["curate_program_data.finalize_release"]
    assert any("visits" in d["name"] for d in publish["outputs"])

    # `down` leaves no process of ours.
    procs = _ours(settings)
    assert procs  # SeaweedFS at least is still up after the run
    stack.down(settings, say=lambda _: None)
    _, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive
    assert all(pid is None for pid in stack.running(settings).values())
