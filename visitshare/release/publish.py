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
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from visitshare.contracts import Contract
from visitshare.contracts.roles import outcome_roles, record_contracts
from visitshare.db import engine_for
from visitshare.db.tables import (
    aggregate_states,
    dp_spend,
    record_batches,
    release_files,
    releases,
)
from visitshare.lake import lake_for
from visitshare.landing import zones
from visitshare.processes import process_pool
from visitshare.release import audit, declared, disclosure, history, keys, shared
from visitshare.release.aggregates import (
    SPECS,
    AggregateReport,
    Refresh,
    ValuesStore,
    release_aggregates,
)
from visitshare.release.build import (
    build_shard,
    household_namespace,
    load_state,
    output_schemas,
)
from visitshare.release.errors import ReleaseError
from visitshare.release.models import Plan, Published, ShardResult
from visitshare.release.notices import send_pending_notices
from visitshare.release.outcomes import (
    Categories,
    before_after,
    repeat_victimization,
    visit_l2_sensitivity,
)
from visitshare.release.plan import plan
from visitshare.release.records import NewBatch
from visitshare.release.recovery import claim_staging, complete_release, publish_lock, recover
from visitshare.release.releases import latest_release, read_table, release_dir
from visitshare.release.retention import expire_releases
from visitshare.release.shared import Partition
from visitshare.settings import Settings

log = logging.getLogger(__name__)


# -- 3. finalize -------------------------------------------------------------------------------
MONTHLY = ("outcomes_town_month", "outcomes_municipality_month")  # built per shard


def _datasets(records: dict[str, Contract]) -> dict[str, Contract]:
    """Dataset name → contract (the record tables are named by role or dataset)."""
    return {c.name: c for c in records.values()}


def _current_files(conn: sa.Connection, name: str) -> list[sa.Row]:
    """The files the latest release shows for a table (`release_files`, release_to null)."""
    return list(
        conn.execute(
            sa.select(release_files).where(
                release_files.c.table_name == name, release_files.c.release_to.is_(None)
            )
        ).all()
    )


def _previous_tables(
    settings: Settings,
    latest: sa.Row | None,
    replaced: dict[str, set[Partition] | None],
) -> dict[str, pa.Table] | None:
    """What the latest release published in the partitions this one replaces (for the
    differencing audit): a comparison of the two releases shows exactly these rows."""
    if latest is None:
        return None
    out = {}
    lake = lake_for(settings)
    with engine_for(settings).connect() as conn:
        for name in latest.tables:
            if name == "repeat_victimization" or name not in replaced:
                continue
            parts = replaced[name]
            if parts is None:
                out[name] = read_table(settings, latest, name)
                continue
            files = [
                f.path
                for f in _current_files(conn, name)
                if (f.municipality_code, f.period) in parts
            ]
            tables = [lake.read_table(lake.relative(f)) for f in files]
            out[name] = (
                pa.concat_tables(tables, promote_options="permissive")
                if tables
                else shared.catalog(settings)
                .load_table(shared.table(settings, name).iceberg)
                .schema()
                .as_arrow()
                .empty_table()
            )
    return out


def _refreshed(refreshes: list[Refresh]) -> set[Partition]:
    """The partitions whose published values a release changes (refreshed, not stale)."""
    return {(f.municipality_code, f.period) for f in refreshes if not f.stale}


def _only(spec: shared.SharedTable, table: pa.Table, parts: set[Partition] | None) -> pa.Table:
    """The rows of `table` in `parts` (None: all): what a release writes and audits."""
    if parts is None or not table.num_rows:
        return table
    keys = shared.partition_keys(spec, table)
    wanted = pa.array(sorted(f"{m}|{p}" for m, p in parts), pa.string())
    return table.filter(pc.is_in(keys, value_set=wanted))


def _gather(settings: Settings, results: list[ShardResult], name: str) -> pa.Table:
    lake = lake_for(settings)
    tables = [lake.read_table(r.staged[name]) for r in results]
    if not tables:
        return output_schemas(settings)[name].empty_table()
    return pa.concat_tables(tables, promote_options="permissive").combine_chunks()


def _report(
    release_id: int,
    roles: dict[str, Contract],
    records: dict[str, Contract],
    results: list[ShardResult],
    spanning: dict[str, AggregateReport],
    data: dict[str, pa.Table],
    previous: dict[str, pa.Table] | None,
    settings: Settings,
    now: datetime,
    scope: str,
) -> disclosure.DisclosureReport:
    datasets = []
    for contract in records.values():
        fr = disclosure.merge_field_reports([r.field_reports[contract.name] for r in results])
        u = disclosure.merge_utility([r.utility[contract.name] for r in results])
        datasets.append(disclosure.dataset_disclosure(contract, fr, u))
    names = [*SPECS, *(d.name for d in declared.load(settings.contracts_dir, _datasets(records)))]
    aggregates = [
        spanning[name]
        if name in spanning
        else disclosure.merge_aggregates([r.aggregates[name] for r in results])
        for name in names
    ]
    policy = roles["visits"].disclosure.aggregates  # the outcome tables' policy
    budget = (
        disclosure.budget(aggregates, policy.rho_per_release, policy.rho_cap)
        if policy.mode == "dp"
        else None
    )
    schemas = output_schemas(settings)
    allowed = {name: set(schemas[name].names) for name in records}
    threshold = max(c.disclosure.min_cell_count for c in records.values())
    public = {
        n: t.drop_columns([c for c in t.column_names if c.startswith("_")]) for n, t in data.items()
    }
    checks = audit.audit_tables(
        public,
        records,
        allowed,
        previous,
        threshold,
        audit.totals_pairs(settings),
        audit.aggregate_specs(settings),
    )
    failed = any(c.result is disclosure.Result.FAILED for c in checks)
    return disclosure.DisclosureReport(
        release_id=release_id,
        created_at=now,
        result=disclosure.Result.FAILED if failed else disclosure.Result.PASSED,
        datasets=datasets,
        aggregates=aggregates,
        budget=budget,
        checks=checks,
        scope=scope,
    )


Spanning = tuple[
    dict[str, pa.Table],
    dict[str, set[Partition] | None],
    dict[str, AggregateReport],
    list[Refresh],
]


def _spanning_tables(
    settings: Settings, plan_: Plan, roles: dict[str, Contract], key: bytes
) -> Spanning:
    """The tables that span months, for the partitions whose inputs changed: before/after per
    municipality (every municipality with a recomputed partition, and the stale ones) and
    repeat victimization per incident month (new incidents, and earlier incidents of
    households with a new visit before them)."""
    with history.Session() as hs:
        return _spanning(settings, plan_, roles, key, hs)


def _spanning(
    settings: Settings,
    plan_: Plan,
    roles: dict[str, Contract],
    key: bytes,
    hs: history.Session,
) -> Spanning:
    cv, ci = roles["visits"], roles["incidents"]
    cats = Categories.from_contracts(cv, ci)
    incidents = history.read(settings, ci, history.INCIDENTS, plan_.validated_upto, session=hs)
    # before / after the first completed visit, per municipality
    with engine_for(settings).connect() as conn:
        stale = set(
            conn.execute(
                sa.select(aggregate_states.c.municipality_code).where(
                    aggregate_states.c.table_name == "before_after_town", aggregate_states.c.stale
                )
            ).scalars()
        )
    munis = {m for m, _ in plan_.touched} | stale  # full: every partition is touched
    wanted = pa.array(sorted(munis), pa.string())
    true = before_after(
        history.first_completed_visits(
            settings, cv, plan_.validated_upto, sorted(munis), session=hs
        ),
        incidents.filter(pc.is_in(incidents.column("municipality_code"), value_set=wanted)),
        cats,
    )
    name = "before_after_town"
    policy = cv.disclosure.aggregates
    threshold = max(cv.disclosure.min_cell_count, ci.disclosure.min_cell_count)
    state = load_state(settings, sorted(munis), tables=(name,))
    values_path = zones.aggregate_values(name, f"{plan_.token}-ba")
    table, refreshes, report, stored = release_aggregates(
        SPECS[name],
        true,
        policy,
        threshold,
        visit_l2_sensitivity(cats, policy.max_items_per_list, False),
        state.aggregates.get(name, {}),
        plan_.as_of,
        cv.disclosure.close_after_days,
        ValuesStore(lake_for(settings).read_table, munis),
        values_path.as_posix(),
    )
    if stored is not None:
        lake_for(settings).write_parquet(stored, values_path)
    out = {name: table}
    replaced: dict[str, set[Partition] | None] = {
        name: None if plan_.full else _refreshed(refreshes)
    }
    reports = {name: report}
    # outcome tables declared over the whole history, per municipality
    for d in declared.load(
        settings.contracts_dir, _datasets(record_contracts(settings.contracts_dir))
    ):
        if not d.spans_history:
            continue
        made = _declared_history(settings, plan_, d, sorted(munis), hs)
        out[d.name], reports[d.name], more = made
        replaced[d.name] = None if plan_.full else _refreshed(more)
        refreshes = [*refreshes, *more]
    # repeat victimization, per incident month
    if plan_.full:
        chosen = incidents
        replaced["repeat_victimization"] = None
    else:
        new_visits = history.read(
            settings,
            cv,
            ["household_id", "visited_at"],
            plan_.validated_upto,
            plan_.previous_upto,
            session=hs,
        )
        parts = set(plan_.touched) | history.revisited(incidents, new_visits)
        chosen = history.in_partitions(incidents, "occurred_at", parts)
        replaced["repeat_victimization"] = parts
    victims = chosen.column("victim_household_id").drop_null().unique().to_pylist()
    visits = history.visits_of(settings, cv, plan_.validated_upto, victims, session=hs)
    out["repeat_victimization"] = repeat_victimization(visits, chosen, key, household_namespace(cv))
    return out, replaced, reports, refreshes


def _declared_history(
    settings: Settings,
    plan_: Plan,
    d: declared.OutcomeDefinition,
    munis: list[str],
    hs: history.Session,
) -> tuple[pa.Table, AggregateReport, list[Refresh]]:
    """A declared table over the whole validated history of `munis` (its partitions)."""
    datasets = _datasets(record_contracts(settings.contracts_dir))
    inputs = {
        ds: history.read_municipalities(
            settings, datasets[ds], d.columns.get(ds), plan_.validated_upto, munis, session=hs
        )
        for ds in d.inputs
    }
    state = load_state(settings, munis, tables=(d.name,))
    values_path = zones.aggregate_values(d.name, f"{plan_.token}-h")
    table, refreshes, report, stored = declared.release(
        d,
        declared.true_values(d, inputs),
        datasets,
        state.aggregates.get(d.name, {}),
        plan_.as_of,
        ValuesStore(lake_for(settings).read_table, munis),
        values_path.as_posix(),
    )
    if stored is not None:
        lake_for(settings).write_parquet(stored, values_path)
    return table, report, refreshes


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
    records = record_contracts(settings.contracts_dir)
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
    if (latest.id if latest else None) != plan_.previous:
        raise ReleaseError(
            f"release {latest.id if latest else '?'} was published after this plan was made "
            f"(it builds on {plan_.previous}); publish again"
        )
    release_id = (top or 0) + 1
    outcomes = [
        d.name
        for d in declared.load(settings.contracts_dir, _datasets(records))
        if not d.spans_history  # built per shard; the history ones below, in one piece
    ]
    data = {name: _gather(settings, results, name) for name in [*records, *MONTHLY, *outcomes]}
    # Partitions whose published rows may change: record-level ones wherever recomputed,
    # aggregate ones where refreshed (a carried or stale partition keeps its values: its files
    # stay as they are).
    touched = set(plan_.touched)
    refreshes = [f for r in results for f in r.refreshes]
    replaced: dict[str, set[Partition] | None] = {
        name: None
        if plan_.full
        else touched
        if name in records
        else _refreshed([f for f in refreshes if f.table_name == name])
        for name in data
    }
    key = keys.load_key(settings)
    if keys.fingerprint(key) != plan_.key_fingerprint:
        raise ReleaseError("the pseudonym key changed while the release was being built")
    spanning, more, spanning_reports, more_refreshes = _spanning_tables(settings, plan_, roles, key)
    data.update(spanning)
    replaced.update(more)
    data = {
        name: _only(shared.table(settings, name), table, replaced[name])
        for name, table in data.items()
    }
    now = settings.clock.now()
    previous = _previous_tables(settings, latest, replaced)
    scope = (
        "full"
        if plan_.full
        else f"incremental: {len(plan_.touched)} municipality × month partitions recomputed "
        f"on release {plan_.previous} (the figures cover them; every other partition is "
        "carried over unchanged)"
    )
    report = _report(
        release_id,
        roles,
        records,
        results,
        spanning_reports,
        data,
        previous,
        settings,
        now,
        scope,
    )
    if report.result is disclosure.Result.FAILED:
        disclosure.write_report(
            report, settings.reports_dir / "releases" / f"refused-{plan_.token}"
        )
        disclosure.enforce(report)  # raises: nothing was written to the shared zone

    with publish_lock(settings):
        return _write(
            settings,
            plan_,
            results,
            more_refreshes,
            data,
            replaced,
            report,
            release_id,
            latest,
            say,
        )


def _write(
    settings: Settings,
    plan_: Plan,
    results: list[ShardResult],
    more_refreshes: list[Refresh],
    data: dict[str, pa.Table],
    replaced: dict[str, set[Partition] | None],
    report: disclosure.DisclosureReport,
    release_id: int,
    latest: sa.Row | None,
    say: Callable[[str], None],
) -> Published:
    """Write every table and commit the release (under the publish lock), then complete it."""
    engine = engine_for(settings)
    now = report.created_at
    kind = "full" if plan_.full else f"incremental: {len(plan_.touched)} partitions"
    say(f"writing release {release_id} ({kind}): {len(shared.tables(settings))} Iceberg tables")
    cat = shared.catalog(settings)
    schemas = output_schemas(settings)
    tables: dict[str, dict[str, Any]] = {}
    new_files: list[dict] = []
    with engine.connect() as conn:
        kept = {
            spec.name: {
                f.path
                for f in _current_files(conn, spec.name)
                if replaced[spec.name] is not None
                and (f.municipality_code, f.period) not in replaced[spec.name]  # type: ignore[operator]
            }
            for spec in shared.tables(settings)
        }
    for spec in shared.tables(settings):
        parts = shared.split_partitions(spec, data[spec.name])
        snap, files = shared.write_partitions(
            cat, spec, schemas[spec.name], parts, kept[spec.name], release_id
        )
        new_files += files
        tables[spec.name] = {"iceberg": spec.iceberg, "snapshot_id": snap, "sql": spec.sql}
    with engine.begin() as conn:  # the release: SQL tables, file map and releases row together
        current = latest_release(conn)
        if (current.id if current else None) != (latest.id if latest else None):
            raise ReleaseError(
                f"release {current.id if current else '?'} was published by someone else "
                "meanwhile; publish again"
            )
        for spec in shared.tables(settings):
            replacing = replaced[spec.name]
            if spec.sql:
                t = shared.ensure_sql_table(conn, spec.sql, schemas[spec.name])
                shared.supersede_sql_rows(conn, t, spec, replacing, release_id)
                shared.insert_sql_rows(conn, t, data[spec.name], release_id)
            gone = release_files.c.release_to.is_(None) & (release_files.c.table_name == spec.name)
            if replacing is None:
                conn.execute(release_files.update().where(gone).values(release_to=release_id))
            else:
                for muni, period in sorted(replacing):
                    conn.execute(
                        release_files.update()
                        .where(
                            gone,
                            release_files.c.municipality_code == muni,
                            release_files.c.period == period,
                        )
                        .values(release_to=release_id)
                    )
        if new_files:
            conn.execute(
                release_files.insert(), [{**f, "release_from": release_id} for f in new_files]
            )
        for spec in shared.tables(settings):
            tables[spec.name]["rows"] = int(
                conn.execute(  # type: ignore[arg-type]
                    sa.select(sa.func.coalesce(sa.func.sum(release_files.c.rows), 0)).where(
                        release_files.c.table_name == spec.name,
                        release_files.c.release_to.is_(None),
                    )
                ).scalar()
            )
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
                closed_through=plan_.closed_through,
                full=plan_.full,
            )
        )
        superseded = _commit_state(
            conn, [*(f for r in results for f in r.refreshes), *more_refreshes],
            [b for r in results for b in r.batches], release_id, now,
        )  # fmt: skip
    lake = lake_for(settings)
    for path in superseded:  # values of partitions this release published anew
        lake.remove(path)  # (or recovery, if this one dies)
    # The release is committed. What follows is repeated by the next publish if this one dies
    # here (recovery.complete_releases), so each step is idempotent.
    with engine.connect() as conn:
        row = conn.execute(sa.select(releases).where(releases.c.id == release_id)).one()
    complete_release(settings, row)
    page = release_dir(settings, release_id) / "disclosure.html"
    lake.remove_tree(zones.staging_dir(plan_.token))
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
    conn: sa.Connection,
    refreshes: list[Refresh],
    batches: list[NewBatch],
    release_id: int,
    now: datetime,
) -> list[str]:
    """What this release published, per partition, in the same transaction as the release;
    the aggregate values files it supersedes."""
    superseded = []
    if batches:
        conn.execute(
            record_batches.insert(),
            [{**b.model_dump(), "release_id": release_id} for b in batches],
        )
    for f in refreshes:
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
    full: bool = False,
) -> Published | None:
    """Recover from any earlier publish that died, then plan, build every shard (in
    `publish_workers` processes) and finalize. Incremental unless `full` (or the plan
    decides a full release is needed: the first one, a contract or key change)."""
    recover(settings, say)
    p = plan(settings, force=force, new_key=new_key, full=full)
    if p is None:
        return None
    claim_staging(settings, p.token)
    rows = sum(s.rows for s in p.shards)
    what = "every partition" if p.full else f"{len(p.touched)} partitions"
    say(f"building {what}: {len(p.shards)} shards of {rows:,} validated rows")
    try:
        if (
            settings.publish_workers == 1
            or len(p.shards) <= 1
            or rows < settings.publish_in_process_rows
        ):
            results = [build_shard(settings, p, s.index) for s in p.shards]
        else:
            from visitshare.db import dispose_all

            dispose_all()
            with process_pool(settings.publish_workers, fork_ok=False) as pool:
                futures = [pool.submit(build_shard, settings, p, s.index) for s in p.shards]
                results = [f.result() for f in futures]
        return finalize(settings, p, results, say)
    finally:
        lake_for(settings).remove_tree(zones.staging_dir(p.token))
