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

import hashlib
import json
import logging
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from pydantic import BaseModel

from visitshare import disclosure, keys, shared
from visitshare.anonymize import (
    FieldReport,
    KReport,
    anonymize,
    generalizable,
    k_anonymize,
    pseudonym_columns,
    shared_quasi_identifiers,
    unlinkable,
)
from visitshare.contracts import Contract, ContractRegistry
from visitshare.db import engine_for, metadata
from visitshare.lakefs import write_parquet
from visitshare.outcomes import (
    Categories,
    SuppressionReport,
    before_after,
    outcome_tables,
    repeat_victimization,
    suppress,
)
from visitshare.quality.records import curated_files
from visitshare.settings import Settings

log = logging.getLogger(__name__)

VISITS, INCIDENTS = "visit_outcome", "incident_report"
NOTICE_TOPIC = "releases.v1"

releases = sa.Table(
    "releases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # published | expired
    sa.Column("input_fingerprint", sa.String(64), nullable=False),
    # The plan it was built from: a retried finalize finds its release instead of a second one.
    sa.Column("plan_token", sa.String(64), unique=True),
    sa.Column("key_fingerprint", sa.String(16), nullable=False),
    sa.Column("validated_upto", sa.Integer, nullable=False),
    sa.Column("contracts", sa.JSON, nullable=False),
    sa.Column("tables", sa.JSON, nullable=False),  # name → {iceberg, snapshot_id, rows}
    sa.Column("disclosure", sa.JSON, nullable=False),
    sa.Column("notice_sent", sa.Boolean, nullable=False),
    sa.Column("expired_at", sa.DateTime(timezone=True)),
)


class ReleaseError(RuntimeError):
    """A release cannot be made or read; nothing was published."""


class Shard(BaseModel):
    index: int
    municipalities: list[str]
    rows: int


class Plan(BaseModel):
    token: str
    validated_upto: int
    input_fingerprint: str
    key_fingerprint: str
    contracts: dict[str, str]  # contract id → sha256 of the file
    shards: list[Shard]


class ShardResult(BaseModel):
    index: int
    staged: dict[str, str]  # staged table → path (relative to the lake)
    field_reports: dict[str, dict[str, Any]]
    k_reports: dict[str, dict[str, Any]]
    suppression: dict[str, dict[str, Any]]


class Published(BaseModel):
    release_id: int
    tables: dict[str, dict[str, Any]]
    report: disclosure.DisclosureReport
    report_html: str
    notice_sent: bool
    expired: list[int]


# -- 1. plan -----------------------------------------------------------------------------------
def _contracts(settings: Settings) -> tuple[Contract, Contract]:
    reg = ContractRegistry.load(settings.contracts_dir)
    return reg.get(VISITS), reg.get(INCIDENTS)


def latest_release(conn: sa.Connection) -> sa.Row | None:
    return conn.execute(
        sa.select(releases).where(releases.c.status == "published").order_by(releases.c.id.desc())
    ).first()


def plan(settings: Settings, force: bool = False, new_key: bool = False) -> Plan | None:
    """What the next release consists of; None when nothing changed since the latest one."""
    key_fp = keys.fingerprint(keys.load_key(settings))
    contracts = {
        c.id: hashlib.sha256(c.path.read_bytes()).hexdigest() for c in _contracts(settings)
    }
    engine = engine_for(settings)
    with engine.connect() as conn:
        files = conn.execute(
            sa.select(curated_files.c.id, curated_files.c.rows, curated_files.c.municipality_code)
            .where(curated_files.c.zone == "validated")
            .order_by(curated_files.c.id)
        ).all()
        latest = latest_release(conn)
    files = [f for f in files if f.rows > 0]
    if not files:
        raise ReleaseError(
            "nothing validated yet: no release (run `visitshare validate` after landing events)"
        )
    if latest is not None and latest.key_fingerprint != key_fp and not new_key:
        raise ReleaseError(
            f"the pseudonym key differs from the one release {latest.id} used (fingerprint "
            f"{latest.key_fingerprint}, now {key_fp}): every pseudonym would change. Restore "
            "the key, or publish with --new-key to start a new pseudonym series on purpose"
        )
    fingerprint = hashlib.sha256(
        json.dumps([[f.id for f in files], contracts, key_fp]).encode()
    ).hexdigest()
    if latest is not None and latest.input_fingerprint == fingerprint and not force:
        return None
    rows: dict[str, int] = {}
    for f in files:
        rows[f.municipality_code] = rows.get(f.municipality_code, 0) + f.rows
    n = min(len(rows), max(1, settings.publish_workers) * 2)
    bins: list[tuple[int, list[str]]] = [(0, []) for _ in range(n)]
    for muni in sorted(rows, key=lambda m: (-rows[m], m)):  # largest first, into the lightest
        i = min(range(n), key=lambda j: bins[j][0])
        bins[i] = (bins[i][0] + rows[muni], [*bins[i][1], muni])
    shards = []
    for i, (total, munis) in enumerate(bins):
        shards.append(Shard(index=i, municipalities=sorted(munis), rows=total))
    return Plan(
        token=datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8],
        validated_upto=files[-1].id,
        input_fingerprint=fingerprint,
        key_fingerprint=key_fp,
        contracts=contracts,
        shards=shards,
    )


# -- 2. build a shard --------------------------------------------------------------------------
def _shard_files(settings: Settings, plan_: Plan, shard: Shard, dataset: str) -> list[str]:
    """The validated files of the shard's municipalities that the plan includes."""
    with engine_for(settings).connect() as conn:
        return (
            conn.execute(
                sa.select(curated_files.c.path)
                .where(
                    curated_files.c.zone == "validated",
                    curated_files.c.dataset == dataset,
                    curated_files.c.id <= plan_.validated_upto,
                    curated_files.c.municipality_code.in_(shard.municipalities),
                )
                .order_by(curated_files.c.id)
            )
            .scalars()
            .all()
        )


def _read(settings: Settings, paths: list[str], contract: Contract) -> pa.Table:
    from visitshare.quality.validate import validated_schema

    schema = validated_schema(contract)
    if not paths:
        return schema.empty_table()
    return pa.concat_tables(
        [pq.read_table(settings.lake / p, schema=schema) for p in paths]
    ).combine_chunks()


def _police_view(raw: pa.Table, pseudonyms: dict[str, pa.Array]) -> pa.Table:
    """Validated rows with their pseudonyms alongside (police zone: outcomes are computed here)."""
    out = raw
    for name, col in pseudonyms.items():
        out = out.append_column(name, col)
    return out


def staging_dir(settings: Settings, token: str) -> Path:
    return settings.lake / "staging" / token


def build_shard(settings: Settings, plan_: Plan, index: int) -> ShardResult:
    """Anonymize, k-anonymize, aggregate and suppress one shard; stage the results."""
    shard = plan_.shards[index]
    key = keys.load_key(settings)
    if keys.fingerprint(key) != plan_.key_fingerprint:
        raise ReleaseError("the pseudonym key changed while the release was being built")
    cv, ci = _contracts(settings)
    cats = Categories.from_contracts(cv, ci)
    threshold = max(cv.disclosure.min_cell_count, ci.disclosure.min_cell_count)
    out: dict[str, pa.Table] = {}
    frs: dict[str, FieldReport] = {}
    krs: dict[str, KReport] = {}
    police: dict[str, pa.Table] = {}
    for contract, name in ((cv, "visits"), (ci, "incidents")):
        raw = _read(settings, _shard_files(settings, plan_, shard, contract.name), contract)
        pseudonyms = pseudonym_columns(raw, contract, key)
        anon, frs[contract.name] = anonymize(raw, contract, key, pseudonyms)
        out[name], krs[contract.name] = k_anonymize(
            anon,
            shared_quasi_identifiers(contract),
            contract.disclosure.k_anonymity,
            generalizable(contract),
            unlinkable(contract),
        )
        police[name] = _police_view(raw, pseudonyms)
    supp: dict[str, SuppressionReport] = {}
    agg = outcome_tables(police["visits"], police["incidents"], cats)
    out["outcomes_town_month"], supp["outcomes_town_month"] = suppress(
        agg["town_month"], "outcomes_town_month", ["municipality_code", "month"], threshold, True
    )
    out["outcomes_municipality_month"], supp["outcomes_municipality_month"] = suppress(
        agg["municipality_month"], "outcomes_municipality_month", [], threshold, False
    )
    out["before_after_town"], supp["before_after_town"] = suppress(
        before_after(police["visits"], police["incidents"], cats),
        "before_after_town",
        [],
        threshold,
        False,
    )
    # Narrow police-zone inputs of the repeat-victimization join, which spans shards.
    out["_rv_visits"] = police["visits"].select(["household_pseudonym", "visited_at"])
    out["_rv_incidents"] = police["incidents"].select(
        ["municipality_code", "town", "victim_household_pseudonym", "crime_type", "occurred_at"]
    )
    staged = {}
    for name, table in out.items():
        path = staging_dir(settings, plan_.token) / name / f"shard-{index:03d}.parquet"
        write_parquet(table, path)
        staged[name] = path.relative_to(settings.lake).as_posix()
    return ShardResult(
        index=index,
        staged=staged,
        field_reports={k: asdict(v) for k, v in frs.items()},
        k_reports={k: asdict(v) for k, v in krs.items()},
        suppression={k: asdict(v) for k, v in supp.items()},
    )


# -- 3. finalize -------------------------------------------------------------------------------
def _gather(settings: Settings, results: list[ShardResult], name: str) -> pa.Table:
    tables = [pq.read_table(settings.lake / r.staged[name]) for r in results]
    return pa.concat_tables(tables, promote_options="permissive").combine_chunks()


def _report(
    release_id: int, cv: Contract, ci: Contract, results: list[ShardResult], data: dict
) -> disclosure.DisclosureReport:
    datasets = []
    for contract, name in ((cv, "visits"), (ci, "incidents")):
        fr = disclosure.merge_field_reports(
            [FieldReport(**r.field_reports[contract.name]) for r in results]
        )
        kr = disclosure.merge_k_reports([KReport(**r.k_reports[contract.name]) for r in results])
        datasets.append(disclosure.dataset_disclosure(contract, fr, kr, data[name].num_rows))
    tables = []
    for name in ("outcomes_town_month", "outcomes_municipality_month", "before_after_town"):
        s = disclosure.merge_suppression(
            [SuppressionReport(**r.suppression[name]) for r in results]
        )
        tables.append(disclosure.TableSuppression(**asdict(s)))
    checks = [
        *disclosure.check_record_table(data["visits"], cv),
        *disclosure.check_record_table(data["incidents"], ci),
        disclosure.check_no_identifiers(data, disclosure.identifier_patterns([cv, ci])),
    ]
    failed = any(c.result is disclosure.Result.FAILED for c in checks)
    return disclosure.DisclosureReport(
        release_id=release_id,
        created_at=datetime.now(UTC),
        result=disclosure.Result.FAILED if failed else disclosure.Result.PASSED,
        datasets=datasets,
        tables=tables,
        checks=checks,
    )


def release_dir(settings: Settings, release_id: int) -> Path:
    return settings.reports_dir / "releases" / str(release_id)


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
    cv, ci = _contracts(settings)
    engine = engine_for(settings)
    with engine.connect() as conn:
        done = conn.execute(sa.select(releases).where(releases.c.plan_token == plan_.token)).first()
        latest = latest_release(conn)
        top = conn.execute(sa.select(sa.func.max(releases.c.id))).scalar()
    if done is not None:  # a retry after the release committed: the same release, once
        say(f"plan {plan_.token} was already published as release {done.id}")
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
    data["repeat_victimization"] = repeat_victimization(
        _gather(settings, results, "_rv_visits"), _gather(settings, results, "_rv_incidents")
    )
    report = _report(release_id, cv, ci, results, data)
    if report.result is disclosure.Result.FAILED:
        disclosure.write_report(
            report, settings.reports_dir / "releases" / f"refused-{plan_.token}"
        )
        disclosure.enforce(report)  # raises: nothing was written to the shared zone

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
    now = datetime.now(UTC)
    with engine.begin() as conn:  # the release: SQL tables and the releases row together
        current = latest_release(conn)
        if (current.id if current else None) != (latest.id if latest else None):
            raise ReleaseError(
                f"release {current.id} was published by someone else meanwhile; publish again"
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
    for spec in shared.TABLES:
        shared.tag_release(cat, spec, tables[spec.name]["snapshot_id"], release_id)
    _, page = disclosure.write_report(report, release_dir(settings, release_id))
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


def publish(
    settings: Settings,
    force: bool = False,
    new_key: bool = False,
    say: Callable[[str], None] = log.info,
) -> Published | None:
    """Plan, build every shard (in `publish_workers` processes) and finalize."""
    p = plan(settings, force=force, new_key=new_key)
    if p is None:
        return None
    say(
        f"building {len(p.shards)} shards of {sum(s.rows for s in p.shards):,} validated rows "
        f"({settings.publish_workers} processes)"
    )
    try:
        if settings.publish_workers == 1 or len(p.shards) == 1:
            results = [build_shard(settings, p, s.index) for s in p.shards]
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            from visitshare.db import dispose_all

            dispose_all()
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(settings.publish_workers, mp_context=ctx) as pool:
                futures = [pool.submit(build_shard, settings, p, s.index) for s in p.shards]
                results = [f.result() for f in futures]
        return finalize(settings, p, results, say)
    finally:
        shutil.rmtree(staging_dir(settings, p.token), ignore_errors=True)


# -- notices -----------------------------------------------------------------------------------
def notice(row: sa.Row) -> dict[str, Any]:
    """The `releases.v1` message: what a partner needs to decide to pull (no data)."""
    return {
        "release_id": row.id,
        "published_at": row.published_at.isoformat(),
        "tables": {
            name: {"snapshot_id": t["snapshot_id"], "rows": t["rows"]}
            for name, t in row.tables.items()
        },
        "disclosure_result": row.disclosure["result"],
    }


def send_pending_notices(settings: Settings) -> list[int]:
    """Send the notice of every published release not yet announced; the ids sent."""
    from visitshare import kafka

    engine = engine_for(settings)
    with engine.connect() as conn:
        pending = conn.execute(
            sa.select(releases)
            .where(releases.c.notice_sent.is_(False), releases.c.status == "published")
            .order_by(releases.c.id)
        ).all()
    if not pending:
        return []
    if settings.embedded_broker:
        from visitshare.broker import EmbeddedBroker

        if not EmbeddedBroker(settings).status().running:
            log.warning("release notice not sent: the embedded broker is not running")
            return []
    sent = []
    try:
        producer = kafka.producer(settings)
    except Exception as exc:
        log.warning("release notice not sent (broker unreachable: %s); retried next publish", exc)
        return []
    try:
        for row in pending:
            value = json.dumps(notice(row), ensure_ascii=False).encode()
            producer.send(settings.topic(NOTICE_TOPIC), key=str(row.id).encode(), value=value).get(
                timeout=settings.delivery_timeout_ms / 1000
            )
            with engine.begin() as conn:
                conn.execute(
                    releases.update().where(releases.c.id == row.id).values(notice_sent=True)
                )
            sent.append(row.id)
    except Exception as exc:
        log.warning("release notice not sent (%s); retried next publish", exc)
    finally:
        producer.close(timeout=5)
    return sent


# -- retention and reading ---------------------------------------------------------------------
def expire_releases(settings: Settings, now: datetime | None = None) -> list[int]:
    """Expire releases older than the retention period (never the latest); the ids expired."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=settings.release_retention_days)
    engine = engine_for(settings)
    with engine.begin() as conn:
        latest = latest_release(conn)
        if latest is None:
            return []
        old = conn.execute(
            sa.select(releases.c.id, releases.c.published_at).where(
                releases.c.status == "published", releases.c.id < latest.id
            )
        ).all()
        ids = [r.id for r in old if _aware(r.published_at) < cutoff]
        if not ids:
            return []
        for spec in shared.TABLES:
            if spec.sql and sa.inspect(conn).has_table(spec.sql):
                t = sa.Table(spec.sql, sa.MetaData(), autoload_with=conn)
                conn.execute(t.delete().where(t.c.release_id.in_(ids)))
        conn.execute(
            releases.update().where(releases.c.id.in_(ids)).values(status="expired", expired_at=now)
        )
    cat = shared.catalog(settings)
    for spec in shared.TABLES:
        for rid in ids:
            shared.untag_release(cat, spec, rid)
        if cat.table_exists(spec.iceberg):
            cat.load_table(spec.iceberg).maintenance.expire_snapshots().older_than(cutoff).commit()
    return ids


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)  # SQLite returns naive UTC


def get_release(settings: Settings, which: str | int = "latest") -> sa.Row:
    """A published release by id, or the latest; clear errors for unknown or expired ids."""
    engine = engine_for(settings)
    with engine.connect() as conn:
        latest = latest_release(conn)
        if str(which) == "latest":
            if latest is None:
                raise ReleaseError("no release has been published yet (run `visitshare publish`)")
            return latest
        try:
            rid = int(which)
        except ValueError:
            raise ReleaseError(f"release must be 'latest' or a number, not {which!r}") from None
        row = conn.execute(sa.select(releases).where(releases.c.id == rid)).first()
    if row is None:
        hint = f"latest is {latest.id}" if latest else "none published yet"
        raise ReleaseError(f"release {rid} does not exist ({hint})")
    if row.status != "published":
        raise ReleaseError(
            f"release {rid} expired on {row.expired_at:%Y-%m-%d} (kept "
            f"{settings.release_retention_days} days); latest is {latest.id if latest else '-'}"
        )
    return row


def read_table(settings: Settings, release: sa.Row, name: str, row_filter=None) -> pa.Table:
    """One shared table as it is in `release` (Iceberg snapshot of that release)."""
    spec = shared.table(name)
    info = release.tables.get(name)
    if info is None:
        raise ReleaseError(f"release {release.id} has no table {name!r}")
    try:
        return shared.read_iceberg(shared.catalog(settings), spec, info["snapshot_id"], row_filter)
    except LookupError as exc:
        raise ReleaseError(f"release {release.id}: {exc}") from None


def output_schemas(settings: Settings) -> dict[str, pa.Schema]:
    """The schema of every shared table under the current contracts (from empty inputs)."""
    cv, ci = _contracts(settings)
    from visitshare.quality.validate import validated_schema

    empty = {}
    for contract, name in ((cv, "visits"), (ci, "incidents")):
        raw = validated_schema(contract).empty_table()
        pseudonyms = pseudonym_columns(raw, contract, b"0" * 32)
        anon, _ = anonymize(raw, contract, b"0" * 32, pseudonyms)
        empty[name] = _police_view(raw, pseudonyms), anon
    cats = Categories.from_contracts(cv, ci)
    pv, pi = empty["visits"][0], empty["incidents"][0]
    agg = outcome_tables(pv, pi, cats)
    return {
        "visits": empty["visits"][1].schema,
        "incidents": empty["incidents"][1].schema,
        "outcomes_town_month": agg["town_month"].schema,
        "outcomes_municipality_month": agg["municipality_month"].schema,
        "before_after_town": before_after(pv, pi, cats).schema,
        "repeat_victimization": repeat_victimization(pv, pi).schema,
    }
