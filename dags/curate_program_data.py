"""
### Curate programme data

Runs when new raw data has landed (scheduled on the `raw_*` assets of `ingest_events`).

**Validate** (this part): for each dataset, the raw files landed since the last run are checked
against the data contract and the Great Expectations suite in `expectations/`. Valid rows go
to the validated zone (partitioned by municipality and month), failing rows to the quarantine
with one reason code per failed rule; counts reconcile (rows in = valid + quarantined).
Data Docs (values redacted) are under `var/reports/data_docs/`, run records in the
`validation_runs` table and `var/reports/validation/`.

- A rerun of the same interval finds nothing new; a reprocessed batch rewrites the same files.
- See the quarantine: `visitshare quarantine list|show|release`.
- Code: `visitshare/quality/`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Metadata, dag, task

from visitshare.assets import DATASETS, RAW, VALIDATED


@dag(
    dag_id="curate_program_data",
    schedule=(RAW["visit_outcome"] | RAW["incident_report"]),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["visit-share", "curate", "validated"],
    doc_md=__doc__,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "execution_timeout": timedelta(hours=1),
    },
)
def curate_program_data():
    for dataset in DATASETS:

        @task(task_id=f"validate_{dataset}", outlets=[VALIDATED[dataset]])
        def validate(dataset: str = dataset):
            from visitshare.pipeline import validate_dataset

            summary = validate_dataset(dataset)
            yield Metadata(VALIDATED[dataset], summary)
            return summary

        validate()


curate_program_data()
