"""The cluster profile (`VISITSHARE_PROFILE=cluster`): the production-shaped stack on one machine.

What changes from the embedded default, and nothing else:
- PostgreSQL (the server at `pg_server_url`) holds every database: ours (`visitshare`: the
  manifest, validation runs, releases, the shared SQL tables with row-level security, and
  the Iceberg SQL catalog) and Airflow's metadata (`visitshare_airflow`). Both are created
  here when missing.
- Airflow runs the CeleryExecutor: Redis (`redis_url`, a database number of our own) is the
  broker, PostgreSQL the result backend, and `celery_workers` workers with distinct hostnames
  (worker-1@…, worker-2@…) take the tasks, one at a time each, so mapped shards spread.
- The lake and the Iceberg warehouse live on S3-compatible object storage: SeaweedFS here
  (`visitshare.orchestration.seaweed`), managed object storage in production.

Nothing here starts PostgreSQL or Redis: the machine runs them; we check that they answer
and say which setting to change when they do not.
"""

from __future__ import annotations

import functools
import socket
from urllib.parse import urlsplit

import sqlalchemy as sa

from visitshare.db.provision import AIRFLOW_DB_SUFFIX, ClusterUnavailable
from visitshare.settings import Settings


def airflow_db_url(settings: Settings) -> str:
    return settings.pg_database_url(AIRFLOW_DB_SUFFIX)


def check_redis(settings: Settings, timeout_s: float = 3.0) -> None:
    """Redis answers PING at `redis_url` (the Celery broker)."""
    parts = urlsplit(settings.redis_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            answer = s.recv(64)
    except OSError as exc:
        raise ClusterUnavailable(
            f"Redis does not answer at {host}:{port} (VISITSHARE_REDIS_URL): {exc}"
        ) from None
    if not answer.startswith((b"+PONG", b"-NOAUTH")):
        raise ClusterUnavailable(f"{host}:{port} answered {answer!r} to PING: not Redis?")


def celery_airflow_env(settings: Settings) -> dict[str, str]:
    """Airflow's configuration for the CeleryExecutor on PostgreSQL (the cluster profile)."""
    sync = airflow_db_url(settings)
    url = sa.make_url(sync)
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sync,
        # Airflow 3's async engine (API server, triggerer) needs the async driver named.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": url.set(
            drivername="postgresql+psycopg_async"
        ).render_as_string(hide_password=False),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": settings.redis_url,
        # Celery's database result backend: SQLAlchemy behind the `db+` prefix.
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + url.render_as_string(hide_password=False),
        # One task at a time per worker, in the worker's own process ("solo"): tasks start
        # processes of their own (landing, validation, shard builds), which the children of
        # Celery's default prefork pool, being daemonic, may not. No prefetching either: a
        # worker does not hoard queued tasks while another is idle (shards spread over both).
        "AIRFLOW__CELERY__POOL": "solo",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
        # Task instances record the worker that ran them (see `task_hostname`).
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "visitshare.orchestration.cluster.task_hostname",
        # Several runs of a DAG may queue on the workers (the landing service emits assets).
        "AIRFLOW__CORE__PARALLELISM": str(max(4, 2 * settings.celery_workers)),
    }


def worker_name(index: int) -> str:
    """The Celery hostname of worker `index` (1-based): distinct on one machine."""
    return f"worker-{index}@{socket.gethostname()}"


@functools.cache  # Airflow asks at every heartbeat; a process's worker name never changes
def task_hostname() -> str:
    """Airflow's `hostname_callable`: the Celery worker's name where the stack started one
    (VISITSHARE_WORKER_NAME), else the machine's name as Airflow's default gives it."""
    return Settings().worker_name or socket.getfqdn()
