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
- Code: `visitshare/quality/` (validate), `visitshare/release/` (plan, build, publish).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Metadata, dag, task

from visitshare.orchestration.assets import CURATE_SCHEDULE, DATASETS, RELEASED, VALIDATED


@dag(
    dag_id="curate_program_data",
    schedule=CURATE_SCHEDULE,
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
            from visitshare.orchestration.tasks import validate_dataset

            summary = validate_dataset(dataset)
            yield Metadata(VALIDATED[dataset], summary.model_dump(mode="json"))
            return summary

        validations.append(validate())

    @task
    def plan_release():
        from visitshare.orchestration.tasks import plan_release

        return plan_release()  # None when nothing is new: no shard runs, nothing is published

    @task
    def shard_indexes(plan) -> list[int]:
        return [] if plan is None else [s.index for s in plan.shards]

    @task
    def build_release_shard(plan, index: int):
        from visitshare.orchestration.tasks import build_release_shard

        return build_release_shard(plan, index)

    @task(outlets=[RELEASED])
    def finalize_release(plan, results):
        from visitshare.orchestration.tasks import finalize_release

        summary = finalize_release(plan, list(results))
        yield Metadata(RELEASED, summary.model_dump(mode="json"))
        return summary

    plan = plan_release()
    validations >> plan
    shards = build_release_shard.partial(plan=plan).expand(index=shard_indexes(plan))
    finalize_release(plan, shards)


curate_program_data()
