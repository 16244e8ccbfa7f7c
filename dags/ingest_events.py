"""
### Ingest events

Lands new events from Kafka into the lake's **raw zone**, exactly once: for each dataset, its
topic and its DLQ topic are read up to the high watermark seen at the start of the task and
written as Parquet files named by their offset ranges, each committed to the landing manifest.

- Emits one asset event per dataset (`raw_visit_outcome`, `raw_incident_report`) whose extra
  holds the landed offset ranges per topic-partition; the curate DAG is scheduled on them.
- Retries are safe: landing resumes from the manifest, so a retry of a half-done task lands
  exactly the offsets that were still missing.
- Code: `consumers/landing.py`; lag per partition: `visitshare status`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Metadata, dag, task

from visitshare.orchestration.assets import DATASETS, RAW


@dag(
    dag_id="ingest_events",
    # Triggered (by `make run`, or by hand to catch up); with `visitshare up` the landing
    # service lands continuously instead, and two landers would only refuse each other's files.
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["visit-share", "ingest", "raw"],
    doc_md=__doc__,
    default_args={
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "execution_timeout": timedelta(minutes=30),
    },
)
def ingest_events():
    for dataset in DATASETS:

        @task(task_id=f"land_{dataset}", outlets=[RAW[dataset]])
        def land(dataset: str = dataset):
            from visitshare.orchestration.tasks import land_dataset

            summary = land_dataset(dataset)
            yield Metadata(RAW[dataset], summary.model_dump(mode="json"))
            return summary

        land()


ingest_events()
