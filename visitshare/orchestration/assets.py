"""Airflow Assets of the lake: the names DAGs use to schedule on each other's data.

Constants built at import from the contract file names (no parsing, no database, no broker),
so that DAG files can import them at parse time: one raw and one validated asset per dataset.
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetAny, AssetWatcher

from visitshare.contracts.model import dataset_names
from visitshare.orchestration.triggers import LandedFilesTrigger
from visitshare.settings import Settings

DATASETS = tuple(dataset_names(Settings().contracts_dir))

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

# The curate DAG runs when any dataset's raw files landed (DAG runs or the landing watcher).
CURATE_SCHEDULE = AssetAny(*RAW.values(), LANDED)
