"""The embedded stack as background services: broker, landing service, Airflow.

`visitshare up` starts what is not running; `visitshare down` stops only what it started.
Each service is a process started in its own session with a PID file under var/run/ and a log
under var/log/. The PID file records the process's start time, and `down` signals a process
only if both match (Airflow rewrites its process title, so the command line cannot tell):
a recycled PID or someone else's Airflow is never touched. The process environment carries
a token (VISITSHARE_STACK_TOKEN) for finding strays by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from visitshare.db.provision import ensure_databases
from visitshare.orchestration import cluster, seaweed
from visitshare.orchestration.airflow_env import VENV_BIN, airflow_env, ensure_metadata_db
from visitshare.settings import Settings

TOKEN_VAR = "VISITSHARE_STACK_TOKEN"  # noqa: S105 - a variable name, not a secret


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    airflow: bool  # runs with Airflow's environment
    env: tuple[tuple[str, str], ...] = ()  # this service's own variables, on top


def services(settings: Settings, landing: bool = True, triggerer: bool = True) -> list[Service]:
    """In start order; `down` stops them in reverse. The landing service and the triggerer
    (which runs the landing watcher) make the stack event-driven, and the sharing server lets
    partners read each release; `make run` needs none of them. The cluster profile adds
    SeaweedFS (first: everything stores into it) and the Celery workers."""
    out = []
    if settings.profile == "cluster":
        out.append(Service("seaweedfs", seaweed.weed_argv(settings), False))
    visitshare = str(VENV_BIN / "visitshare")
    if landing:
        out.append(Service("landing", [visitshare, "land", "--follow"], False))
    airflow = str(VENV_BIN / "airflow")
    out += [
        Service("api-server", [airflow, "api-server"], True),
        Service("dag-processor", [airflow, "dag-processor"], True),
        Service("scheduler", [airflow, "scheduler"], True),
    ]
    if settings.profile == "cluster":
        # Each worker serves its task logs from the shared local disk through the API
        # server (`--skip-serve-logs`: two log servers on one machine would share a port).
        out += [
            Service(
                f"celery-worker-{i}",
                [
                    airflow,
                    "celery",
                    "worker",
                    "--celery-hostname",
                    cluster.worker_name(i),
                    "--skip-serve-logs",
                    "--without-mingle",
                    "--without-gossip",
                ],
                True,
                (("VISITSHARE_WORKER_NAME", cluster.worker_name(i)),),
            )
            for i in range(1, settings.celery_workers + 1)
        ]
    if triggerer:
        out.append(Service("triggerer", [airflow, "triggerer"], True))
    if landing:
        out.append(Service("sharing", [visitshare, "share", "serve"], False))
    return out


def _run_dir(settings: Settings) -> Path:
    return settings.var / "run"


def _pid_path(settings: Settings, name: str) -> Path:
    return _run_dir(settings) / f"{name}.pid"


def log_path(settings: Settings, name: str) -> Path:
    return settings.var / "log" / f"{name}.log"


def _process(settings: Settings, name: str) -> psutil.Process | None:
    """The live process of a service of ours, or None (no PID file, dead, or not ours)."""
    try:
        info = json.loads(_pid_path(settings, name).read_text())
        proc = psutil.Process(int(info["pid"]))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if abs(proc.create_time() - info["created"]) > 1.0:
            return None  # a recycled PID: someone else's process
    except (OSError, ValueError, KeyError, psutil.Error):
        return None
    return proc


def running(settings: Settings) -> dict[str, int | None]:
    return {
        s.name: (p.pid if (p := _process(settings, s.name)) else None) for s in services(settings)
    }


def start_service(settings: Settings, service: Service, extra_env: dict[str, str]) -> bool:
    """Start one service unless it runs; True if started now."""
    if _process(settings, service.name) is not None:
        return False
    token = uuid.uuid4().hex
    env = airflow_env(settings) if service.airflow else dict(os.environ)
    env.update(extra_env)
    env.update(service.env)
    env[TOKEN_VAR] = token
    log = log_path(settings, service.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    _run_dir(settings).mkdir(parents=True, exist_ok=True)
    with log.open("ab") as f:
        f.write(
            f"\n--- start {settings.clock.now().isoformat()} {' '.join(service.argv)}\n".encode()
        )
        f.flush()
        proc = subprocess.Popen(
            service.argv,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    _pid_path(settings, service.name).write_text(
        json.dumps(
            {
                "pid": proc.pid,
                "created": psutil.Process(proc.pid).create_time(),
                "token": token,
                "argv": service.argv,
            }
        )
    )
    return True


def stop_service(settings: Settings, name: str, timeout_s: float = 20.0) -> bool:
    """SIGTERM the service's process group (Airflow forks workers), then SIGKILL if needed."""
    proc = _process(settings, name)
    _pid = _pid_path(settings, name)
    if proc is None:
        _pid.unlink(missing_ok=True)
        return False
    family = [proc, *proc.children(recursive=True)]
    for p in family:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)
    with contextlib.suppress(OSError):  # its own session: strays re-parented to init too
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=timeout_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    _pid.unlink(missing_ok=True)
    return True


def up(
    settings: Settings,
    landing: bool = True,
    triggerer: bool = True,
    say=print,
    env: dict[str, str] | None = None,
) -> dict[str, str]:
    """Broker, topics, landing service and Airflow, each unless already running.

    The services build their settings from `VISITSHARE_*` variables: this process's, with
    `env` on top (for a stack whose settings differ from the environment's, e.g. its own home).
    """
    from visitshare.producing.broker import ensure_broker
    from visitshare.producing.topics import apply_topics

    if settings.profile == "cluster":
        _up_cluster_storage(settings, say)
    ensure_broker(settings)
    apply_topics(settings)
    ensure_metadata_db(settings)
    # Fresh data should reach a release quickly: landing closes its files after a few
    # seconds instead of 30 (unless the user chose a value).
    extra = {}
    if "VISITSHARE_LAND_ROLL_SECONDS" not in os.environ:
        extra["VISITSHARE_LAND_ROLL_SECONDS"] = "5"
    extra["VISITSHARE_PROFILE"] = settings.profile
    extra.update(env or {})
    states = {}
    for s in services(settings, landing, triggerer):
        if s.name == "seaweedfs":
            continue  # started above
        started = start_service(settings, s, extra)
        states[s.name] = "started" if started else "already running"
        say(f"{s.name}: {states[s.name]} (log {log_path(settings, s.name)})")
    return states


def _up_cluster_storage(settings: Settings, say) -> None:
    """The cluster profile's stores before anything else: PostgreSQL and Redis answer (the
    machine's), our databases exist, SeaweedFS runs and its bucket exists, and the project
    database carries the shared SQL tables with row-level security (`visitshare db apply`)."""
    from visitshare.access.rls import apply

    cluster.check_redis(settings)
    created = ensure_databases(settings)
    for name in created:
        say(f"postgresql: created database {name}")
    service = next(s for s in services(settings) if s.name == "seaweedfs")
    seaweed.prepare(settings)
    started = start_service(settings, service, {})
    say(
        f"seaweedfs: {'started' if started else 'already running'} (log {log_path(settings, 'seaweedfs')})"
    )
    seaweed.wait_ready(settings, alive=lambda: _process(settings, "seaweedfs") is not None)
    report = apply(settings)
    say(f"postgresql: {len(report.tables)} shared tables, {len(report.roles)} partner roles")


def down(settings: Settings, stop_broker: bool = True, say=print) -> dict[str, bool]:
    """Stop our services (reverse start order), then the embedded broker."""
    from visitshare.producing.broker import EmbeddedBroker

    stopped = {}
    for s in reversed(services(settings)):
        stopped[s.name] = stop_service(settings, s.name)
        say(f"{s.name}: {'stopped' if stopped[s.name] else 'not running'}")
    if stop_broker and settings.embedded_broker:
        stopped["broker"] = EmbeddedBroker(settings).stop()
        say(f"broker: {'stopped' if stopped['broker'] else 'not running'}")
    return stopped


def wait_for_api(settings: Settings, timeout_s: float = 120.0) -> None:
    """Until Airflow's API server answers (task processes report to it)."""
    import urllib.request

    from visitshare.orchestration.airflow_env import API_HOST

    deadline = time.monotonic() + timeout_s
    url = f"http://{API_HOST}:{settings.airflow_api_port}/api/v2/monitor/health"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Airflow's API server did not answer within {timeout_s:.0f} s; see "
                    f"{log_path(settings, 'api-server')}"
                ) from None
            if _process(settings, "api-server") is None:
                raise RuntimeError(
                    f"Airflow's API server exited; see {log_path(settings, 'api-server')}"
                ) from None
            time.sleep(1)


if __name__ == "__main__":  # pragma: no cover - manual use
    print(running(Settings()), file=sys.stderr)
