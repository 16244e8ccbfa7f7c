"""
### Curate programme data

Runs when new raw data has landed: scheduled on the `raw_*` assets of `ingest_events` and on
`landed_events`, which the triggerer updates when the landing service (`visitshare up`) has
committed raw files that wait for validation (no one triggers anything).

**Validate** (this part): for each dataset, the raw files landed since the last run are checked
against the data contract and the Great Expectations suite in `expectations/`. Valid rows go
to the validated zone (partitioned by municipality and month), failing rows to the quarantine
with one reason code per failed rule; counts reconcile (rows in = valid + quarantined).
Data Docs (values redacted) are under `var/reports/data_docs/`, run records in the
`validation_runs` table and `var/reports/validation/`.

**Release** (after both validations succeed; a failed validation blocks it):
`plan_release` splits the validated zone into shards of whole municipalities balanced by
rows; `build_release_shard` (mapped, one task per shard) anonymizes and k-anonymizes the
record-level data and computes and suppresses the outcome tables for its municipalities;
`finalize_release` passes the privacy gate and publishes the release atomically (Iceberg
snapshots + SQL tables + `releases` row), sends the notice to `releases.v1`, expires old
releases, and emits the `released_shared_tables` asset.

- A rerun of the same interval finds nothing new: no new validated rows, no release.
- See the quarantine: `visitshare quarantine list|show|release`; releases:
  `visitshare releases list`; a partner's view: `visitshare pull --partner shinjuku`.
- Code: `visitshare/quality/`, `visitshare/anonymize.py`, `visitshare/outcomes.py`,
  `visitshare/release.py`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Metadata, dag, task

from visitshare.assets import DATASETS, LANDED, RAW, RELEASED, VALIDATED


@dag(
    dag_id="curate_program_data",
    schedule=(RAW["visit_outcome"] | RAW["incident_report"] | LANDED),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["visit-share", "curate", "validated", "release"],
    doc_md=__doc__,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "execution_timeout": timedelta(hours=1),
    },
)
def curate_program_data():
    validations = []
    for dataset in DATASETS:

        @task(task_id=f"validate_{dataset}", outlets=[VALIDATED[dataset]])
        def validate(dataset: str = dataset):
            from visitshare.pipeline import validate_dataset

            summary = validate_dataset(dataset)
            yield Metadata(VALIDATED[dataset], summary)
            return summary

        validations.append(validate())

    @task
    def plan_release() -> dict:
        from visitshare.pipeline import plan_release

        return plan_release()

    @task
    def shard_indexes(plan: dict) -> list[int]:
        return [s["index"] for s in plan["shards"]]

    @task
    def build_release_shard(plan: dict, index: int) -> dict:
        from visitshare.pipeline import build_release_shard

        return build_release_shard(plan, index)

    @task(outlets=[RELEASED])
    def finalize_release(plan: dict, results: list[dict]):
        from visitshare.pipeline import finalize_release

        summary = finalize_release(plan, list(results))
        yield Metadata(RELEASED, summary)
        return summary

    plan = plan_release()
    validations >> plan
    shards = build_release_shard.partial(plan=plan).expand(index=shard_indexes(plan))
    finalize_release(plan, shards)


curate_program_data()
