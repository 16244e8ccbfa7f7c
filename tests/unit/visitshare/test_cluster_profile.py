"""The cluster profile's settings and the environment it gives Airflow and SeaweedFS."""

from __future__ import annotations

import pytest

from visitshare.orchestration import cluster, seaweed, stack
from visitshare.orchestration.airflow_env import airflow_env
from visitshare.settings import Settings


def test_embedded_is_the_default_and_keeps_sqlite_local_disk_and_local_executor(settings):
    assert settings.profile == "embedded"
    assert settings.db_url.startswith("sqlite:///") and settings.lake_uri is None
    env = airflow_env(settings)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///")
    assert not [s for s in stack.services(settings) if s.name.startswith(("celery", "seaweed"))]


def test_cluster_profile_puts_every_store_on_the_production_engines(isolated_env):
    s = Settings(profile="cluster", pg_database_prefix="vs_x", redis_url="redis://h:1/9")
    assert s.db_url == s.catalog_uri == "postgresql+psycopg://postgres@127.0.0.1:5432/vs_x"
    assert s.lake_uri == "s3://visitshare/lake"
    assert s.s3_endpoint == f"http://127.0.0.1:{s.seaweed_s3_port}"
    assert s.var == isolated_env.resolve() / "cluster"  # apart from the embedded stack's state
    env = airflow_env(s)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("/vs_x_airflow")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"].startswith(
        "postgresql+psycopg_async://"
    )
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://h:1/9"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + cluster.airflow_db_url(s)


def test_explicit_settings_win_over_the_profile(isolated_env):
    s = Settings(
        profile="cluster",
        database_url="postgresql+psycopg://u@db/x",
        lake_url="s3://b/p/",
        s3_endpoint_url="https://s3.example",
    )
    assert s.db_url == "postgresql+psycopg://u@db/x"
    assert s.lake_uri == "s3://b/p" and s.s3_endpoint == "https://s3.example"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"lake_url": "gs://b/p"}, "only s3://"),
        ({"s3_access_key_id": "k"}, "set both"),
        ({"s3_credentials_file": "/nonexistent/creds"}, "no such file"),
    ],
)
def test_object_storage_settings_that_cannot_work_are_refused(isolated_env, fields, problem):
    with pytest.raises(ValueError, match=problem):
        Settings(**fields)


def test_celery_workers_have_distinct_names_and_report_them_as_task_hostnames(
    isolated_env, monkeypatch
):
    s = Settings(profile="cluster", celery_workers=3)
    workers = [w for w in stack.services(s) if w.name.startswith("celery-worker")]
    names = [dict(w.env)["VISITSHARE_WORKER_NAME"] for w in workers]
    assert len(set(names)) == 3
    for w, name in zip(workers, names, strict=True):
        assert w.argv[w.argv.index("--celery-hostname") + 1] == name
        assert "--skip-serve-logs" in w.argv  # two log servers would share one port
    monkeypatch.setenv("VISITSHARE_WORKER_NAME", names[1])
    cluster.task_hostname.cache_clear()  # once per process: a fresh process here
    assert cluster.task_hostname() == names[1]
    monkeypatch.delenv("VISITSHARE_WORKER_NAME")
    cluster.task_hostname.cache_clear()
    assert cluster.task_hostname() not in names


def test_seaweedfs_binds_loopback_with_telemetry_off_and_our_identity(isolated_env):
    s = Settings(profile="cluster")
    argv = seaweed.weed_argv(s)
    assert "-ip.bind=127.0.0.1" in argv and "-master.telemetry=false" in argv
    assert f"-s3.port={s.seaweed_s3_port}" in argv and "-bucket=visitshare" in argv
    seaweed.prepare(s)
    key, secret = s.s3_credentials() or ("", "")
    assert key and len(secret) >= 30
    assert (s.s3_credentials_path.stat().st_mode & 0o777) == 0o600
    assert secret in seaweed.s3_config_path(s).read_text()
    seaweed.prepare(s)  # the keys are generated once
    assert s.s3_credentials() == (key, secret)


def test_an_unreachable_redis_is_named_with_its_setting(isolated_env):
    from tests.helpers import free_port

    s = Settings(profile="cluster", redis_url=f"redis://127.0.0.1:{free_port()}/7")
    with pytest.raises(cluster.ClusterUnavailable, match="VISITSHARE_REDIS_URL"):
        cluster.check_redis(s, timeout_s=1)


def test_the_cluster_profile_listens_apart_from_the_embedded_stack(isolated_env, monkeypatch):
    embedded, clustered = Settings(), Settings(profile="cluster")
    for field in ("broker_port", "airflow_api_port", "share_port"):
        assert getattr(embedded, field) != getattr(clustered, field)
    monkeypatch.setenv("VISITSHARE_PROFILE", "cluster")
    monkeypatch.setenv("VISITSHARE_AIRFLOW_API_PORT", "18123")
    assert Settings().airflow_api_port == 18123  # a chosen port wins
    assert Settings().broker_port == clustered.broker_port
