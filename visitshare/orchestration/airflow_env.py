"""The environment that runs the Airflow CLI, scheduler and `dags test` on the embedded stack.

Airflow reads its configuration from `AIRFLOW__SECTION__KEY` variables, so the whole embedded
setup is one dict: state under `<var>/airflow`, DAGs from the repo's `dags/`, a SQLite metadata
database, no examples, low parallelism for a small machine. Callers hand that dict to a
subprocess; this module never imports Airflow (importing it costs seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from visitshare.db.provision import ensure_databases
from visitshare.orchestration.cluster import celery_airflow_env
from visitshare.orchestration.lineage import lineage_env
from visitshare.settings import REPO_ROOT, Settings

# The venv's bin directory: `airflow`, and the interpreter its task processes run.
VENV_BIN = Path(sys.executable).parent

# How long a SQLite connection waits for another process's write lock before failing with
# "database is locked" (sqlite3's default is 5 s). Scheduler, DAG processor, API server and
# CLI all write to the same file.
SQLITE_BUSY_TIMEOUT_S = 30

# Where `airflow api-server` listens (port: VISITSHARE_AIRFLOW_API_PORT). Under an executor
# (scheduler or `dags test --use-executor`) task processes report to its Execution API;
# plain `dags test` needs no server.
API_HOST = "127.0.0.1"

# Harmless warnings Airflow 3.3 prints on each `airflow dags ...` / `api-server` start: graphviz
# is optional (only `dags show` draws), and the deprecated httpx test client is fastapi's own.
QUIET_WARNINGS = (
    "ignore:Could not import graphviz",
    "ignore:Using `httpx` with `starlette.testclient` is deprecated",
)


def airflow_home(settings: Settings) -> Path:
    """Where Airflow keeps its state (airflow.cfg, airflow.db, logs) for these settings."""
    return settings.var / "airflow"


def airflow_env(settings: Settings) -> dict[str, str]:
    """The complete environment for an Airflow process on the embedded stack.

    Promises: AIRFLOW_HOME under `settings.var`, DAGs from `REPO_ROOT/dags`, an absolute
    SQLite URL under AIRFLOW_HOME, no example DAGs, LocalExecutor with low parallelism, INFO
    logging without the periodic chatter, the venv's bin first on PATH, and every
    `VISITSHARE_*` variable of this process passed through. It is a fresh dict, not a copy
    of `os.environ`: nothing else from the caller's environment reaches Airflow.
    """
    home = airflow_home(settings)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        # Airflow refuses relative SQLite paths. `timeout` goes through SQLAlchemy to
        # sqlite3.connect (sync and aiosqlite engines alike) and is SQLite's busy timeout: a
        # few processes queue for the write lock instead of failing at once.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
            f"sqlite:///{home / 'airflow.db'}?timeout={SQLITE_BUSY_TIMEOUT_S}"
        ),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # The DAGs are the product: they run as soon as the scheduler sees them.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        # Tasks hand each other our typed models (plans, shard results) through XCom.
        "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES": "airflow.* visitshare.*",
        # Airflow 3 ships no SequentialExecutor; LocalExecutor is the core default and 3.3
        # runs it on SQLite (there is no SQLite check any more). It forks `parallelism` workers.
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # A 2-core machine: few task processes, one run of a DAG at a time, one parser.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG": "1",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        # Loopback only, like the embedded broker (the default 0.0.0.0 would expose the UI).
        "AIRFLOW__API__HOST": API_HOST,
        "AIRFLOW__API__PORT": str(settings.airflow_api_port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": (
            f"http://{API_HOST}:{settings.airflow_api_port}/execution/"
        ),
        # INFO, not WARNING: the level also applies to task logs, and `dags test` reports
        # task outcomes at INFO. What floods is periodic: the DAG processor's stats table and
        # its per-parse lines every 30 s, and uvicorn's per-request lines.
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__LOGGING__NAMESPACE_LEVELS": (
            "airflow.serialization.definitions.dag=WARNING airflow.models.dag=WARNING"
        ),
        "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "0",
        "AIRFLOW__LOGGING__UVICORN_LOGGING_LEVEL": "WARNING",
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
        "PYTHONWARNINGS": ",".join(QUIET_WARNINGS),
        # The venv first, so `airflow` and the interpreter of its task processes are ours.
        "PATH": os.pathsep.join(p for p in (str(VENV_BIN), os.environ.get("PATH")) if p),
    }
    if settings.profile == "cluster":
        env.update(celery_airflow_env(settings))
    env.update(lineage_env(settings))
    # Besides PATH above, the only read of os.environ in this module: task processes build
    # their own `Settings()` from VISITSHARE_* variables, so they must see the caller's.
    env.update({k: v for k, v in os.environ.items() if k.startswith("VISITSHARE_")})
    # A checkout imported through PYTHONPATH (rather than the installed one) is the one
    # Airflow's processes must import too.
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def ensure_metadata_db(settings: Settings) -> None:
    """Create or upgrade Airflow's metadata database if it is missing or from another Airflow.

    Runs `airflow db migrate` (quietly) only when the database (the SQLite file, or on the
    cluster profile the PostgreSQL database, created first if missing) or the stamp recording
    the Airflow version and database it was migrated with is missing or differs; otherwise it
    costs two stats. Raises RuntimeError with the tail of Airflow's output when it fails.
    """
    home = airflow_home(settings)
    stamp = home / "migrated-airflow-version"
    env = airflow_env(settings)
    database = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].split("?")[0]
    wanted = f"{version('apache-airflow')} {database}"
    if settings.profile == "cluster":
        created = ensure_databases(settings)
        exists = not created
    else:
        exists = (home / "airflow.db").exists()
    if exists and stamp.exists() and stamp.read_text() == wanted:
        return
    home.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [str(VENV_BIN / "airflow"), "db", "migrate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-30:])
        raise RuntimeError(
            f"`airflow db migrate` failed (exit {result.returncode}) in {home}:\n{tail}"
        )
    # Written only after success, so a failed or interrupted migration is retried next time.
    stamp.write_text(wanted)


def run_airflow(settings: Settings, args: list[str]) -> int:
    """Run `airflow <args>` on the embedded stack and return its exit code.

    Migrates the metadata database first if needed; Airflow's output streams straight to
    this process's stdout and stderr.
    """
    ensure_metadata_db(settings)
    command = [str(VENV_BIN / "airflow"), *args]
    return subprocess.run(command, env=airflow_env(settings), check=False).returncode
