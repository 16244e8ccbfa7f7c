"""
### Maintain tables

Daily housekeeping of the lake and the shared tables; `visitshare maintain` does the same by
hand. No release changes: every release reads exactly the rows it read before.

1. **Recovery** from any publish that died (as every publish does first).
2. **Compaction of the validated zone**: per dataset × municipality × month, the files a
   release already includes (content sequence up to the latest release's `validated_upto`)
   become one file, rows in validation order. Each new file is read back and must hold the
   same rows (count and an order-independent content checksum) before it commits; the
   replaced files' `curated_files` rows move to zone `compacted` (lineage kept) and their
   files are deleted by a run at least two hours later. A partition that fails is left as it
   was and reported; the others go on.
3. **Small Iceberg files** of the latest release are rewritten, partition by partition, in one
   overwrite snapshot per table that the latest release then names (tag moved).
4. **Retention**: releases past `VISITSHARE_RELEASE_RETENTION_DAYS` expire, and so do
   snapshots older than that which no release names.
5. **Unreferenced files** under the shared tables, and police-zone state no release
   references, are deleted.

Steps 3 to 5 hold the publish lock, so a release being finalized waits (and vice versa).
The task returns the report (counts, as JSON); failed partitions are logged as errors.
Code: `visitshare/quality/compact.py`, `visitshare/release/maintain.py`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task


@dag(
    dag_id="maintain_tables",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["visit-share", "maintenance", "validated", "release"],
    doc_md=__doc__,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=2),
    },
)
def maintain_tables():
    @task
    def maintain() -> dict:
        from visitshare.orchestration.tasks import maintain_tables

        return maintain_tables().model_dump(mode="json")

    maintain()


maintain_tables()
