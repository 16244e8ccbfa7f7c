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


# -- release (anonymize → join → publish), one function per DAG task ----------------------------
def plan_release(settings: Settings | None = None) -> dict:
    """The plan of the next release as a dict (XCom); no shards when nothing is new."""
    from visitshare.release import plan

    settings = settings or Settings()
    p = plan(settings)
    if p is None:
        log.info("nothing validated since the latest release: no release")
        return {"shards": []}
    log.info(
        "release plan %s: %d shards, %d validated rows (files up to id %d)",
        p.token,
        len(p.shards),
        sum(s.rows for s in p.shards),
        p.validated_upto,
    )
    return p.model_dump()


def build_release_shard(plan: dict, index: int, settings: Settings | None = None) -> dict:
    from visitshare.release import Plan, build_shard

    settings = settings or Settings()
    p = Plan.model_validate(plan)
    result = build_shard(settings, p, index)
    k = result.k_reports
    log.info(
        "shard %d (%s): visits %d rows in, %d suppressed; incidents %d in, %d suppressed; "
        "staged %d tables",
        index,
        ",".join(p.shards[index].municipalities),
        k["visit_outcome"]["rows_in"],
        k["visit_outcome"]["suppressed"],
        k["incident_report"]["rows_in"],
        k["incident_report"]["suppressed"],
        len(result.staged),
    )
    return result.model_dump()


def finalize_release(plan: dict, results: list[dict], settings: Settings | None = None) -> dict:
    """Publish the release; its summary (id, rows per table, disclosure result)."""
    from visitshare.release import Plan, ShardResult, finalize

    settings = settings or Settings()
    p = Plan.model_validate(plan)
    published = finalize(settings, p, [ShardResult.model_validate(r) for r in results], log.info)
    summary = {
        "release_id": published.release_id,
        "rows": {name: t["rows"] for name, t in published.tables.items()},
        "disclosure": published.report.result.value,
        "notice_sent": published.notice_sent,
    }
    log.info("published release %d: %s", published.release_id, summary["rows"])
    for line in published.report.summary_lines():
        log.info("disclosure: %s", line)
    return summary
