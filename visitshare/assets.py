"""Airflow Assets of the lake: the names DAGs use to schedule on each other's data.

Plain constants (no I/O, no heavy imports) so that DAG files can import them at parse time.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetWatcher

from visitshare.triggers import LandedFilesTrigger

DATASETS = ("visit_outcome", "incident_report")

RAW = {d: Asset(name=f"raw_{d}", uri=f"visitshare://lake/raw/{d}", group="raw") for d in DATASETS}
VALIDATED = {
    d: Asset(name=f"validated_{d}", uri=f"visitshare://lake/validated/{d}", group="validated")
    for d in DATASETS
}

# A published release (every shared table at once); the extra carries the release id.
RELEASED = Asset(name="released_shared_tables", uri="visitshare://shared/releases", group="shared")

# Updated by the triggerer whenever the landing service (`visitshare up`) has committed raw
# files that wait for validation: the curate DAG runs without anyone triggering it.
LANDED = Asset(
    name="landed_events",
    uri="visitshare://lake/raw/landed",
    group="raw",
    watchers=[AssetWatcher(name="landing_manifest_watcher", trigger=LandedFilesTrigger())],
)
