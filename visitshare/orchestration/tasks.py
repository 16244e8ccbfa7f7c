"""What the Airflow tasks call: one function per task, settings from the environment.

Each returns a small typed model (task logs and asset-event extras use it; the DAG hands its
JSON form to XCom); the work itself is done by the packages (`consumers.landing`,
`visitshare.quality`, `visitshare.release`). Each also records, from the work's report, the
datasets its run read and wrote (`visitshare.orchestration.lineage`): the task's OpenLineage
events name them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import BaseModel

from visitshare.landing import zones
from visitshare.orchestration import lineage
from visitshare.producing.topics import dataset_topics
from visitshare.quality.records import ValidationSummary
from visitshare.release.models import Plan, ShardResult
from visitshare.settings import Settings

if TYPE_CHECKING:
    from visitshare.release.maintain import MaintainReport

log = logging.getLogger(__name__)


class LandSummary(BaseModel):
    """What one `land_<dataset>` task landed: rows per topic, files, offset ranges."""

    dataset: str
    run_id: str
    rows: dict[str, int]  # topic → rows
    files: int
    bytes: int
    offset_ranges: dict[str, dict[str, tuple[int, int]]]  # topic → partition → first, last
    gaps: int


class ReleaseSummary(BaseModel):
    """A published release, as the `released_shared_tables` asset event carries it."""

    release_id: int
    rows: dict[str, int]  # shared table → rows
    disclosure: str  # passed | failed
    notice_sent: bool


def land_dataset(dataset: str, settings: Settings | None = None) -> LandSummary:
    """Land the dataset's topic and its DLQ up to their high watermarks (drain)."""
    from consumers.landing import land
    from visitshare.contracts import ContractRegistry

    settings = settings or Settings()
    contract = ContractRegistry.load(settings.contracts_dir).get(dataset)
    report = land(settings, dataset_topics(settings, contract))
    landed = [t for t, rows in report.rows_by_topic().items() if rows]
    lineage.read(*(lineage.topic(settings, t) for t in landed))
    lineage.wrote(*(lineage.lake(settings, zones.raw_dir(t)) for t in landed))
    ranges: dict[str, dict[str, tuple[int, int]]] = {}
    for (t, partition), p in sorted(report.partitions.items()):
        if p.rows and p.first_offset is not None and p.last_offset is not None:
            ranges.setdefault(t, {})[str(partition)] = (p.first_offset, p.last_offset)
    summary = LandSummary(
        dataset=dataset,
        run_id=report.run_id,
        rows=report.rows_by_topic(),
        files=report.files,
        bytes=report.bytes,
        offset_ranges=ranges,
        gaps=report.gaps,
    )
    log.info(
        "landed %s: %s rows in %d files (%.1f MB); offset ranges %s",
        dataset,
        summary.rows,
        summary.files,
        summary.bytes / 1e6,
        ranges or "none (nothing new)",
    )
    return summary


def validate_dataset(dataset: str, settings: Settings | None = None) -> ValidationSummary:
    """Validate what landed for the dataset since the last run (raw → validated + quarantine)."""
    # great_expectations before anything imports airflow's logging config: GX floods otherwise.
    from visitshare.quality.validate import validate

    settings = settings or Settings()
    run = validate(settings, dataset)
    lineage.read(*(lineage.lake(settings, zones.raw_dir(t)) for t in run.source_ranges))
    if run.valid:
        lineage.wrote(lineage.lake(settings, zones.validated_dir(dataset)))
    if run.quarantined:
        lineage.wrote(lineage.lake(settings, zones.quarantine_dir(dataset)))
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
def plan_release(settings: Settings | None = None) -> Plan | None:
    """The plan of the next release; None when nothing is new. First completes and cleans up
    after any earlier publish that died (and sends pending notices)."""
    from visitshare.release.plan import plan
    from visitshare.release.recovery import claim_staging, recover

    settings = settings or Settings()
    recover(settings, log.info)
    p = plan(settings)
    if p is None:
        log.info("nothing validated since the latest release: no release")
        return None
    claim_staging(settings, p.token, airflow=True)
    # Planned from the manifest of these datasets' validated rows (their files are read later).
    lineage.read(*_validated_zones(settings))
    log.info(
        "release plan %s: %d shards, %d validated rows (files up to id %d)",
        p.token,
        len(p.shards),
        sum(s.rows for s in p.shards),
        p.validated_upto,
    )
    return p


def build_release_shard(plan: Plan, index: int, settings: Settings | None = None) -> ShardResult:
    """Anonymize, aggregate and stage one shard of the plan."""
    from visitshare.release.build import build_shard

    settings = settings or Settings()
    result = build_shard(settings, plan, index)
    lineage.read(*(lineage.lake(settings, zones.validated_dir(d)) for d in result.field_reports))
    lineage.wrote(
        *(lineage.lake(settings, zones.staged_table(plan.token, t)) for t in result.staged)
    )
    log.info(
        "shard %d (%s): %s; staged %d tables",
        index,
        ",".join(plan.shards[index].municipalities),
        "; ".join(
            f"{d} {u.rows_in} rows of closed months in, {u.rows_published} published, "
            f"{u.rows_held} held"
            for d, u in result.utility.items()
        ),
        len(result.staged),
    )
    return result


def finalize_release(
    plan: Plan, results: list[ShardResult], settings: Settings | None = None
) -> ReleaseSummary:
    """Publish the release; its summary (id, rows per table, disclosure result)."""
    from visitshare.release.publish import finalize

    settings = settings or Settings()
    staged = dict.fromkeys(t for r in results for t in r.staged)
    lineage.read(*(lineage.lake(settings, zones.staged_table(plan.token, t)) for t in staged))
    published = finalize(settings, plan, results, log.info)
    for table in published.tables.values():
        lineage.wrote(lineage.iceberg_table(settings, table["iceberg"]))
        if table["sql"]:
            lineage.wrote(lineage.sql_table(settings, table["sql"]))
    summary = ReleaseSummary(
        release_id=published.release_id,
        rows={name: t["rows"] for name, t in published.tables.items()},
        disclosure=published.report.result.value,
        notice_sent=published.notice_sent,
    )
    log.info("published release %d: %s", published.release_id, summary.rows)
    for line in published.report.summary_lines():
        log.info("disclosure: %s", line)
    return summary


# -- maintenance ------------------------------------------------------------------------------
def maintain_tables(settings: Settings | None = None) -> MaintainReport:
    """Compact the validated zone, rewrite small Iceberg files, expire snapshots past
    retention, remove unreferenced files (`visitshare.release.maintain`)."""
    from visitshare.release import shared
    from visitshare.release.maintain import maintain

    settings = settings or Settings()
    report = maintain(settings, log.info)
    # Per zone and table, not per partition: the report counts what changed, not where.
    validated = _validated_zones(settings)
    tables = [lineage.iceberg_table(settings, t.iceberg) for t in shared.tables(settings)]
    lineage.read(*validated, *tables)
    if report.validated.partitions_compacted:
        lineage.wrote(*validated)
    if report.iceberg_partitions_rewritten or report.snapshots_expired:
        lineage.wrote(*tables)
    for what, count in report.summary():
        log.info("%s: %s", what, count)
    for f in report.validated.failures:
        log.error("not compacted: %s %s %s: %s", f.dataset, f.municipality_code, f.month, f.reason)
    for line in report.iceberg_failures:
        log.error("not rewritten: %s", line)
    for line in report.iceberg_skipped:
        log.warning("skipped: %s", line)
    return report


def _validated_zones(settings: Settings) -> list[lineage.Dataset]:
    """The validated zone of every dataset a release publishes."""
    from visitshare.contracts.roles import record_contracts

    records = record_contracts(settings.contracts_dir)
    return [lineage.lake(settings, zones.validated_dir(c.name)) for c in records.values()]
