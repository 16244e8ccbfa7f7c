"""`make run` through Airflow: the DAGs do the work, chained by Assets, not by this module.

This module only starts Airflow's services (unless `visitshare up` runs them), triggers
`ingest_events` once (unless the landing service of `visitshare up` lands continuously),
waits until the pipeline has caught up with what was published, and reads the outcome from
the project's own records (manifest, validation runs, releases) for the summary.
Airflow's scheduler does the rest: `ingest_events` emits the `raw_*` assets, which schedule
`curate_program_data` (validate → plan → mapped shard builds → release).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TypeVar

import sqlalchemy as sa

from visitshare.db import engine_for
from visitshare.orchestration import stack
from visitshare.orchestration.airflow_api import AirflowAPI
from visitshare.orchestration.airflow_env import airflow_home
from visitshare.orchestration.errors import ApiUnreachable, PipelineError
from visitshare.producing.topics import event_topics
from visitshare.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

DAGS = ("ingest_events", "curate_program_data")


@dataclass
class Outcome:
    landed: dict[str, int] = field(default_factory=dict)  # topic → rows landed since start
    validation: dict[str, dict] = field(default_factory=dict)  # dataset → summed counts
    release: object | None = None  # the releases row
    dag_runs: list[tuple[str, str, str]] = field(default_factory=list)  # dag, run_type, state


def _dag_runs(api: AirflowAPI, since: datetime) -> list[tuple[str, str, str]]:
    return [(r["dag_id"], r["run_type"], r["state"]) for r in api.dag_runs(list(DAGS), since)]


def patiently(ask: Callable[[], T], deadline: float, every_s: float = 1.0) -> T:
    """An Airflow read, asked again while the API server is too busy to answer (task
    processes starting on a loaded machine starve it), until `deadline` (monotonic)."""
    while True:
        try:
            return ask()
        except ApiUnreachable as exc:
            if time.monotonic() > deadline:
                raise
            log.info("%s; asking again", exc)
            time.sleep(every_s)


def wait_until_parsed(api: AirflowAPI, settings: Settings, timeout_s: float) -> None:
    """Until the DAG processor has serialized our DAGs (the scheduler can run them)."""
    deadline = time.monotonic() + timeout_s
    while not all(patiently(partial(api.dag_exists, d), deadline) for d in DAGS):
        if time.monotonic() > deadline:
            raise PipelineError(
                f"Airflow did not parse the DAGs in time; see {stack.log_path(settings, 'dag-processor')}"
            )
        time.sleep(1)


def _failed_tasks(api: AirflowAPI, since: datetime) -> list[str]:
    return [
        f"{t['dag_id']}.{t['task_id']} ({t['dag_run_id']})"
        for t in api.failed_tasks(list(DAGS), since)
    ]


def _caught_up(
    settings: Settings, expected: dict[str, int], since: datetime, topics: list[str]
) -> bool:
    """Everything published landed, every landed event file validated, and released."""
    from visitshare.db.tables import content_seq, curated_files
    from visitshare.landing.manifest import pending_raw_files
    from visitshare.release.releases import latest_release

    engine = engine_for(settings)
    with engine.connect() as conn:
        landed = _landed_since(conn, since)
        # by content sequence, as releases count (a compacted file's id is newer than its rows)
        newest_validated = conn.execute(
            sa.select(sa.func.max(content_seq())).where(curated_files.c.zone == "validated")
        ).scalar()
        latest = latest_release(conn)
    if any(landed.get(t, 0) < n for t, n in expected.items()):
        return False
    if pending_raw_files(settings, topics):
        return False
    return latest is not None and latest.validated_upto >= (newest_validated or 0)


def _landed_since(conn: sa.Connection, since: datetime) -> dict[str, int]:
    """Rows landed per topic since `since` (manifest)."""
    from visitshare.db.tables import raw_files

    return dict(
        conn.execute(
            sa.select(raw_files.c.topic, sa.func.sum(raw_files.c.row_count))
            .where(raw_files.c.landed_at >= since)
            .group_by(raw_files.c.topic)
        ).all()
    )


def run_pipeline(
    settings: Settings,
    expected: dict[str, int],
    since: datetime,
    timeout_s: float = 900.0,
    say: Callable[[str], None] = print,
) -> Outcome:
    """Let Airflow land, validate and release what was published; wait; report."""
    landing_service = stack.running(settings).get("landing") is not None
    started = stack.up(settings, landing=False, triggerer=landing_service, say=say)
    ours = [name for name, state in started.items() if state == "started"]
    try:
        stack.wait_for_api(settings)
        api = AirflowAPI(settings)
        deadline = time.monotonic() + timeout_s
        wait_until_parsed(api, settings, timeout_s)
        if landing_service:
            say("the landing service of `visitshare up` lands; the curate DAG follows its assets")
        else:
            say("triggering ingest_events; curate_program_data follows on its assets")
            api.trigger("ingest_events")
        topics = event_topics(settings)
        while not _caught_up(settings, expected, since, topics):
            failed = patiently(lambda: _failed_tasks(api, since), deadline)
            if failed:
                raise PipelineError(
                    f"Airflow tasks failed: {', '.join(failed)}; logs under "
                    f"{airflow_home(settings) / 'logs'}"
                )
            if time.monotonic() > deadline:
                raise PipelineError(f"the pipeline did not catch up within {timeout_s:.0f} s")
            time.sleep(2)
        # The release is committed; let the runs record their end (task exit, run state).
        while any(
            state in ("queued", "running")
            for _, _, state in patiently(lambda: _dag_runs(api, since), deadline)
        ):
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        return _outcome(settings, api, since, deadline)
    finally:
        for name in reversed(ours):
            stack.stop_service(settings, name)


def _outcome(settings: Settings, api: AirflowAPI, since: datetime, deadline: float) -> Outcome:
    from visitshare.db.tables import validation_runs
    from visitshare.release.releases import latest_release

    out = Outcome(dag_runs=patiently(lambda: _dag_runs(api, since), deadline))
    with engine_for(settings).connect() as conn:
        out.landed = _landed_since(conn, since)
        for r in conn.execute(
            sa.select(validation_runs).where(validation_runs.c.started_at >= since)
        ):
            v = out.validation.setdefault(
                r.dataset, {"rows_in": 0, "valid": 0, "quarantined": 0, "data_docs": None}
            )
            v["rows_in"] += r.rows_in
            v["valid"] += r.valid
            v["quarantined"] += r.quarantined
            v["data_docs"] = r.record.get("data_docs") or v["data_docs"]
        out.release = latest_release(conn)
    return out
