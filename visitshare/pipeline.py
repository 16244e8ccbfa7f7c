"""What the Airflow tasks call: one function per task, settings from the environment.

Each returns a small JSON-able summary (task logs and asset-event extras use it); the work
itself is done by the packages (`consumers.landing`, ...).
"""

from __future__ import annotations

import logging

from visitshare.settings import Settings

log = logging.getLogger(__name__)


def land_dataset(dataset: str, settings: Settings | None = None) -> dict:
    """Land the dataset's topic and its DLQ up to their high watermarks (drain)."""
    from consumers.landing import land
    from visitshare.contracts import ContractRegistry

    settings = settings or Settings()
    contract = ContractRegistry.load(settings.contracts_dir).get(dataset)
    topic = settings.topic(contract.topic)
    report = land(settings, [topic, topic + ".dlq"])
    ranges: dict[str, dict[str, list[int]]] = {}
    for (t, partition), p in sorted(report.partitions.items()):
        if p.rows:
            ranges.setdefault(t, {})[str(partition)] = [p.first_offset, p.last_offset]
    summary = {
        "dataset": dataset,
        "run_id": report.run_id,
        "rows": report.rows_by_topic(),
        "files": report.files,
        "bytes": report.bytes,
        "offset_ranges": ranges,
        "gaps": report.gaps,
    }
    log.info(
        "landed %s: %s rows in %d files (%.1f MB); offset ranges %s",
        dataset,
        report.rows_by_topic(),
        report.files,
        report.bytes / 1e6,
        ranges or "none (nothing new)",
    )
    return summary


def validate_dataset(dataset: str, settings: Settings | None = None) -> dict:
    """Validate what landed for the dataset since the last run (raw → validated + quarantine)."""
    # great_expectations before anything imports airflow's logging config: GX floods otherwise.
    from visitshare.quality.validate import validate

    settings = settings or Settings()
    run = validate(settings, dataset)
    log.info(
        "validated %s: %d rows in, %d valid, %d quarantined (%d duplicates); by reason %s; "
        "data docs %s",
        dataset,
        run.rows_in,
        run.valid,
        run.quarantined,
        run.duplicates,
        run.quarantined_by_reason or "none",
        run.data_docs,
    )
    return run.summary()
