"""Releases: anonymize, join and publish the validated zone as one consistent shared view.

A release is built in three steps, each callable on its own (the curate DAG maps the middle
one; `visitshare publish` runs them in a process pool):

1. `plan`: which validated files go in (everything validated so far, by manifest id), split
   into shards of whole municipalities balanced by rows. Nothing new since the last release
   → no release. No validated data at all → a clear error.
2. `build_shard`: for its municipalities, anonymize and k-anonymize the record-level data,
   compute and suppress the outcome tables, and stage everything as Parquet in the police
   zone (`lake/staging/<plan token>/`). Every k-anonymity group (municipality × …) and every
   suppression group (municipality × month) lies within one shard, so shards are exact.
3. `finalize`: join the shards, compute the police-only repeat-victimization table, pass the
   privacy gate (`visitshare.disclosure`), write every Iceberg table, then commit the SQL
   tables and the `releases` row in one transaction: that commit is the release. Readers go
   through the `releases` row, so they see the previous release or this one, never a mix.
   Then tag the snapshots, send the notice to `releases.v1`, expire old releases.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from visitshare.contracts import Contract
from visitshare.contracts.roles import outcome_roles
from visitshare.db import engine_for
from visitshare.db.tables import aggregate_states, dp_spend, record_batches, releases
from visitshare.processes import process_pool
from visitshare.release import audit, disclosure, keys, shared
from visitshare.release.aggregates import SPECS
from visitshare.release.build import build_shard, household_namespace, output_schemas, staging_dir
from visitshare.release.errors import ReleaseError
from visitshare.release.models import Plan, Published, ShardResult
from visitshare.release.notices import send_pending_notices
from visitshare.release.outcomes import (
    repeat_victimization,
)
from visitshare.release.plan import plan
from visitshare.release.recovery import claim_staging, complete_release, publish_lock, recover
from visitshare.release.releases import latest_release, read_table, release_dir
from visitshare.release.retention import expire_releases
from visitshare.settings import Settings

log = logging.getLogger(__name__)


# -- 3. finalize -------------------------------------------------------------------------------
def _previous_tables(settings: Settings, latest: sa.Row | None) -> dict[str, pa.Table] | None:
    """The shared tables of the latest release, as published (for the differencing audit)."""
    if latest is None:
        return None
    return {
        name: read_table(settings, latest, name)
        for name in latest.tables
        if name != "repeat_victimization"
    }


def _gather(settings: Settings, results: list[ShardResult], name: str) -> pa.Table:
    tables = [pq.read_table(settings.lake / r.staged[name]) for r in results]
    return pa.concat_tables(tables, promote_options="permissive").combine_chunks()


def _report(
    release_id: int,
    roles: dict[str, Contract],
    results: list[ShardResult],
    data: dict[str, pa.Table],
    previous: dict[str, pa.Table] | None,
    settings: Settings,
    now: datetime,
) -> disclosure.DisclosureReport:
    datasets = []
    for contract in roles.values():
        fr = disclosure.merge_field_reports([r.field_reports[contract.name] for r in results])
        u = disclosure.merge_utility([r.utility[contract.name] for r in results])
        datasets.append(disclosure.dataset_disclosure(contract, fr, u))
    aggregates = [
        disclosure.merge_aggregates([r.aggregates[name] for r in results]) for name in SPECS
    ]
    policy = roles["visits"].disclosure.aggregates
    budget = (
        disclosure.budget(aggregates, policy.rho_per_release, policy.rho_cap)
        if policy.mode == "dp"
        else None
    )
    schemas = output_schemas(settings)
    allowed = {role: set(schemas[role].names) for role in roles}
    threshold = max(c.disclosure.min_cell_count for c in roles.values())
    checks = audit.audit_tables(data, roles, allowed, previous, threshold)
    failed = any(c.result is disclosure.Result.FAILED for c in checks)
    return disclosure.DisclosureReport(
        release_id=release_id,
        created_at=now,
        result=disclosure.Result.FAILED if failed else disclosure.Result.PASSED,
        datasets=datasets,
        aggregates=aggregates,
        budget=budget,
        checks=checks,
    )


def finalize(
    settings: Settings,
    plan_: Plan,
    results: list[ShardResult],
    say: Callable[[str], None] = log.info,
) -> Published:
    """Join the shards, pass the privacy gate, publish atomically, notify, expire."""
    results = sorted(results, key=lambda r: r.index)
    if [r.index for r in results] != list(range(len(plan_.shards))):
        raise ReleaseError("not every shard of the plan was built: nothing published")
    roles = outcome_roles(settings.contracts_dir)
    engine = engine_for(settings)
    with engine.connect() as conn:
        done = conn.execute(sa.select(releases).where(releases.c.plan_token == plan_.token)).first()
        latest = latest_release(conn)
        top = conn.execute(sa.select(sa.func.max(releases.c.id))).scalar()
    if done is not None:  # a retry after the release committed: the same release, once
        say(f"plan {plan_.token} was already published as release {done.id}")
        if done.completed_at is None:
            complete_release(settings, done)
        return Published(
            release_id=done.id,
            tables=done.tables,
            report=disclosure.DisclosureReport.model_validate(done.disclosure),
            report_html=str(release_dir(settings, done.id) / "disclosure.html"),
            notice_sent=done.id in send_pending_notices(settings) or done.notice_sent,
            expired=[],
        )
    release_id = (top or 0) + 1
    data = {
        name: _gather(settings, results, name)
        for name in (
            "visits",
            "incidents",
            "outcomes_town_month",
            "outcomes_municipality_month",
            "before_after_town",
        )
    }
    key = keys.load_key(settings)
    if keys.fingerprint(key) != plan_.key_fingerprint:
        raise ReleaseError("the pseudonym key changed while the release was being built")
    data["repeat_victimization"] = repeat_victimization(
        _gather(settings, results, "_rv_visits"),
        _gather(settings, results, "_rv_incidents"),
        key,
        household_namespace(roles["visits"]),
    )
    now = settings.clock.now()
    previous = _previous_tables(settings, latest)
    report = _report(release_id, roles, results, data, previous, settings, now)
    if report.result is disclosure.Result.FAILED:
        disclosure.write_report(
            report, settings.reports_dir / "releases" / f"refused-{plan_.token}"
        )
        disclosure.enforce(report)  # raises: nothing was written to the shared zone

    with publish_lock(settings):
        return _write(settings, plan_, results, data, report, release_id, latest, say)


def _write(
    settings: Settings,
    plan_: Plan,
    results: list[ShardResult],
    data: dict[str, pa.Table],
    report: disclosure.DisclosureReport,
    release_id: int,
    latest: sa.Row | None,
    say: Callable[[str], None],
) -> Published:
    """Write every table and commit the release (under the publish lock), then complete it."""
    engine = engine_for(settings)
    now = report.created_at
    say(f"writing release {release_id}: {len(shared.TABLES)} Iceberg tables")
    cat = shared.catalog(settings)
    tables: dict[str, dict[str, Any]] = {}
    for spec in shared.TABLES:
        snap = shared.write_iceberg(cat, spec, data[spec.name], release_id)
        tables[spec.name] = {
            "iceberg": spec.iceberg,
            "snapshot_id": snap,
            "rows": data[spec.name].num_rows,
            "sql": spec.sql,
        }
    with engine.begin() as conn:  # the release: SQL tables and the releases row together
        current = latest_release(conn)
        if (current.id if current else None) != (latest.id if latest else None):
            raise ReleaseError(
                f"release {current.id if current else '?'} was published by someone else "
                "meanwhile; publish again"
            )
        for spec in shared.TABLES:
            if spec.sql:
                t = shared.ensure_sql_table(conn, spec.sql, data[spec.name].schema)
                shared.insert_sql_rows(conn, t, data[spec.name], release_id)
        conn.execute(
            releases.insert().values(
                id=release_id,
                published_at=now,
                status="published",
                input_fingerprint=plan_.input_fingerprint,
                plan_token=plan_.token,
                key_fingerprint=plan_.key_fingerprint,
                validated_upto=plan_.validated_upto,
                contracts=plan_.contracts,
                tables=tables,
                disclosure=json.loads(report.model_dump_json()),
                notice_sent=False,
            )
        )
        superseded = _commit_state(conn, results, release_id, now)
    for path in superseded:  # values of partitions this release published anew
        (settings.lake / path).unlink(missing_ok=True)  # (or recovery, if this one dies)
    # The release is committed. What follows is repeated by the next publish if this one dies
    # here (recovery.complete_releases), so each step is idempotent.
    with engine.connect() as conn:
        row = conn.execute(sa.select(releases).where(releases.c.id == release_id)).one()
    complete_release(settings, row)
    page = release_dir(settings, release_id) / "disclosure.html"
    shutil.rmtree(staging_dir(settings, plan_.token), ignore_errors=True)
    sent = send_pending_notices(settings)
    expired = expire_releases(settings, now)
    return Published(
        release_id=release_id,
        tables=tables,
        report=report,
        report_html=str(page),
        notice_sent=release_id in sent,
        expired=expired,
    )


def _commit_state(
    conn: sa.Connection, results: list[ShardResult], release_id: int, now
) -> list[str]:
    """What this release published, per partition, in the same transaction as the release;
    the aggregate values files it supersedes."""
    superseded = []
    batches = [b for r in results for b in r.batches]
    if batches:
        conn.execute(
            record_batches.insert(),
            [{**b.model_dump(), "release_id": release_id} for b in batches],
        )
    for f in (f for r in results for f in r.refreshes):
        key = (
            (aggregate_states.c.table_name == f.table_name)
            & (aggregate_states.c.municipality_code == f.municipality_code)
            & (aggregate_states.c.period == f.period)
        )
        old = conn.execute(sa.select(aggregate_states).where(key)).first()
        if f.stale:
            conn.execute(aggregate_states.update().where(key).values(stale=True))
            continue
        values = {
            "fingerprint": f.fingerprint,
            "path": f.path,
            "rho_spent": (old.rho_spent if old else 0.0) + f.rho,
            "refreshes": (old.refreshes if old else 0) + 1,
            "refreshed_at": now,
            "release_id": release_id,
            "stale": False,
        }
        if old is None:
            conn.execute(
                aggregate_states.insert().values(
                    table_name=f.table_name,
                    municipality_code=f.municipality_code,
                    period=f.period,
                    **values,
                )
            )
        else:
            conn.execute(aggregate_states.update().where(key).values(**values))
            if old.path != f.path:
                superseded.append(old.path)  # unless other partitions still use the file
        if f.rho:
            conn.execute(
                dp_spend.insert().values(
                    table_name=f.table_name,
                    municipality_code=f.municipality_code,
                    period=f.period,
                    release_id=release_id,
                    rho=f.rho,
                )
            )
    still = set(
        conn.execute(
            sa.select(aggregate_states.c.path).where(aggregate_states.c.path.in_(set(superseded)))
        ).scalars()
    )
    return sorted(set(superseded) - still)


def publish(
    settings: Settings,
    force: bool = False,
    new_key: bool = False,
    say: Callable[[str], None] = log.info,
) -> Published | None:
    """Recover from any earlier publish that died, then plan, build every shard (in
    `publish_workers` processes) and finalize."""
    recover(settings, say)
    p = plan(settings, force=force, new_key=new_key)
    if p is None:
        return None
    claim_staging(settings, p.token)
    say(
        f"building {len(p.shards)} shards of {sum(s.rows for s in p.shards):,} validated rows "
        f"({settings.publish_workers} processes)"
    )
    try:
        if settings.publish_workers == 1 or len(p.shards) == 1:
            results = [build_shard(settings, p, s.index) for s in p.shards]
        else:
            from visitshare.db import dispose_all

            dispose_all()
            with process_pool(settings.publish_workers, fork_ok=False) as pool:
                futures = [pool.submit(build_shard, settings, p, s.index) for s in p.shards]
                results = [f.result() for f in futures]
        return finalize(settings, p, results, say)
    finally:
        shutil.rmtree(staging_dir(settings, p.token), ignore_errors=True)
