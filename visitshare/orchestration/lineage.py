"""OpenLineage events from every Airflow task: where they go, and what each run read and wrote.

The OpenLineage provider's listener emits a START and a COMPLETE (or FAIL) event for every task
instance; `lineage_env` configures it. Our tasks are TaskFlow functions, which the provider
cannot look into, and the channel it offers them does not fit: its hook lineage collector
keeps only datasets of URI schemes an installed provider converts (`file` alone here: not
Kafka, S3, Iceberg or SQL), and under `airflow dags test` one collector serves every task of
the run, so each task's events would name the tasks' before it too.

So each task records what its run actually read and wrote (`read`, `wrote`) right after the
work, from the work's own report, under its task instance; the extractor
`visitshare.orchestration.lineage_extractor` hands that record to the provider for the task's
COMPLETE or FAIL event. START names no datasets: nothing has been read yet.

Datasets follow OpenLineage's naming conventions and are names only: no facets, no values.
This module never imports Airflow at import time (`airflow_env` imports it).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from visitshare.settings import Settings

# The job namespace of every event: this deployment's Airflow (jobs are `<dag>.<task>`).
NAMESPACE = "visit-share"

# Where the file transport appends its events, one JSON object a line, under `settings.var`.
EVENTS_FILE = PurePosixPath("lineage", "events.jsonl")

EXTRACTOR = "visitshare.orchestration.lineage_extractor.TaskFlowExtractor"


def events_file(settings: Settings) -> Path:
    return settings.var / EVENTS_FILE


def lineage_env(settings: Settings) -> dict[str, str]:
    """The `AIRFLOW__OPENLINEAGE__*` variables for `settings.lineage_transport`.

    "file" appends to `events_file` (its directory is created here: the transport opens the
    file for appending but creates no directory); "http" posts to `settings.lineage_url` (a
    backend's base URL such as Marquez's, which takes events at `api/v1/lineage`, or the
    full URL of the endpoint); "none" turns the provider off. Raises ValueError for "http"
    without a URL.
    """
    if settings.lineage_transport == "none":
        return {"AIRFLOW__OPENLINEAGE__DISABLED": "True"}
    transport: dict[str, Any]
    if settings.lineage_transport == "http":
        if not settings.lineage_url:
            raise ValueError("VISITSHARE_LINEAGE_TRANSPORT=http needs VISITSHARE_LINEAGE_URL")
        url = urlsplit(settings.lineage_url)
        transport = {"type": "http", "url": f"{url.scheme}://{url.netloc}"}
        if url.path.strip("/"):
            transport["endpoint"] = url.path.strip("/")
    else:
        path = events_file(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        transport = {"type": "file", "log_file_path": str(path), "append": True}
    return {
        "AIRFLOW__OPENLINEAGE__NAMESPACE": NAMESPACE,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
        "AIRFLOW__OPENLINEAGE__EXTRACTORS": EXTRACTOR,
    }


# -- dataset names ------------------------------------------------------------------------------
class Dataset(NamedTuple):
    """An OpenLineage dataset's identity: the data source, and the dataset within it."""

    namespace: str
    name: str


def topic(settings: Settings, name: str) -> Dataset:
    """A Kafka topic (physical name), on the first bootstrap server of the cluster."""
    server = settings.bootstrap.split(",")[0].strip()
    return Dataset(f"kafka://{server}", name)


def lake(settings: Settings, path: PurePosixPath) -> Dataset:
    """A directory of the lake (`visitshare.landing.zones`): a key prefix in the bucket when
    the lake is on object storage, else an absolute local path."""
    if settings.lake_uri:
        bucket, _, prefix = settings.lake_uri.removeprefix("s3://").partition("/")
        return Dataset(f"s3://{bucket}", PurePosixPath(prefix, path).as_posix())
    return Dataset("file", (settings.lake / path).as_posix())


def iceberg_table(settings: Settings, identifier: str) -> Dataset:
    """An Iceberg table (`namespace.table`) of the settings' catalog, named by the database
    that holds the catalog (`iceberg+sqlite:///…/catalog.db`, `iceberg+postgres://host:port/db`)."""
    source, database = _database(settings.catalog_uri)
    return Dataset(f"iceberg+{source}" + (f"/{database}" if database else ""), identifier)


def sql_table(settings: Settings, table: str) -> Dataset:
    """A table of the project database: `postgres://host:port` and `<database>.public.<table>`
    (OpenLineage's convention), or the SQLite file and the table."""
    source, database = _database(settings.db_url)
    return Dataset(source, f"{database}.public.{table}" if database else table)


def _database(url: str) -> tuple[str, str | None]:
    """(data source, database name or None) of a SQLAlchemy URL, without driver or credentials."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return f"sqlite://{Path(u.database or '').resolve().as_posix()}", None
    backend = "postgres" if u.get_backend_name() == "postgresql" else u.get_backend_name()
    return f"{backend}://{u.host}:{u.port or 5432}", u.database


# -- what the running task read and wrote -------------------------------------------------------
class TaskKey(NamedTuple):
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int


class Recorded(NamedTuple):
    inputs: list[Dataset]
    outputs: list[Dataset]


# Per task instance of this process (one, or every task of a `dags test` run, in turn).
_recorded: dict[TaskKey, Recorded] = {}


def task_key(ti: Any) -> TaskKey:
    """The key of a task instance (the running one's, or the one an event is about)."""
    return TaskKey(ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.try_number)


def read(*datasets: Dataset) -> None:
    """Record datasets the running Airflow task read (each once, in order)."""
    _add(datasets, outputs=False)


def wrote(*datasets: Dataset) -> None:
    """Record datasets the running Airflow task wrote (each once, in order)."""
    _add(datasets, outputs=True)


def recorded(key: TaskKey) -> Recorded:
    """What the task instance recorded so far (nothing, before its work or if it recorded none)."""
    return _recorded.get(key, Recorded([], []))


def _add(datasets: tuple[Dataset, ...], outputs: bool) -> None:
    """Add to the running task's record; outside an Airflow task Airflow raises RuntimeError
    (there is no event to name them)."""
    from airflow.sdk import get_current_context

    entry = _recorded.setdefault(task_key(get_current_context()["ti"]), Recorded([], []))
    into = entry.outputs if outputs else entry.inputs
    into.extend(d for d in dict.fromkeys(datasets) if d not in into)
