"""Step 2 of a release: one shard's record-level rows and aggregate partitions, protected and staged."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from visitshare.contracts import Contract
from visitshare.contracts.roles import outcome_roles, record_contracts
from visitshare.db import engine_for
from visitshare.db.tables import aggregate_states, content_seq, curated_files, record_batches
from visitshare.lake import lake_for
from visitshare.landing import zones
from visitshare.release import declared, keys, shared
from visitshare.release.aggregates import (
    SPECS,
    AggregateReport,
    PartitionState,
    Refresh,
    ValuesStore,
    public,
    release_aggregates,
)
from visitshare.release.anonymize import FieldReport, anonymize
from visitshare.release.errors import ReleaseError
from visitshare.release.models import Plan, Shard, ShardResult
from visitshare.release.outcomes import (
    Categories,
    before_after,
    count_tables,
    repeat_victimization,
    visit_l2_sensitivity,
)
from visitshare.release.recode import Utility
from visitshare.release.records import Ledgers, NewBatch, release_records
from visitshare.settings import Settings

log = logging.getLogger(__name__)


# -- 2. build a shard --------------------------------------------------------------------------
def _shard_files(settings: Settings, plan_: Plan, shard: Shard, dataset: str) -> list[str]:
    """The validated files of the shard's partitions that the plan includes."""
    parts = set(shard.partitions)
    with engine_for(settings).connect() as conn:
        rows = conn.execute(
            sa.select(
                curated_files.c.path, curated_files.c.municipality_code, curated_files.c.month
            )
            .where(
                curated_files.c.zone == "validated",
                curated_files.c.dataset == dataset,
                content_seq() <= plan_.validated_upto,
                curated_files.c.municipality_code.in_(shard.municipalities),
            )
            .order_by(content_seq())
        ).all()
    return [r.path for r in rows if (r.municipality_code, r.month) in parts]


def _read(settings: Settings, paths: list[str], contract: Contract) -> pa.Table:
    from visitshare.quality.validate import validated_schema

    schema = validated_schema(contract)
    if not paths:
        return schema.empty_table()
    # read in parallel, in this order
    return lake_for(settings).dataset(paths, schema).to_table().combine_chunks()


def household_namespace(visits: Contract) -> str:
    """The pseudonym namespace of the visited household (the same in visits and incidents)."""
    f = visits.field("household_id")
    return (f.disclosure.namespace if f.disclosure else None) or "household"


def build_shard(settings: Settings, plan_: Plan, index: int) -> ShardResult:
    """Anonymize and recode the record-level rows of the shard's partitions, protect its
    aggregate partitions, and stage the results (nothing is shared until finalize)."""
    shard = plan_.shards[index]
    key = keys.load_key(settings)
    if keys.fingerprint(key) != plan_.key_fingerprint:
        raise ReleaseError("the pseudonym key changed while the release was being built")
    roles = outcome_roles(settings.contracts_dir)
    cv, ci = roles["visits"], roles["incidents"]
    cats = Categories.from_contracts(cv, ci)
    state = load_state(settings, shard.municipalities, shard.partitions)
    out: dict[str, pa.Table] = {}
    frs: dict[str, FieldReport] = {}
    utilities: dict[str, Utility] = {}
    batches: list[NewBatch] = []
    police: dict[str, pa.Table] = {}
    records = record_contracts(settings.contracts_dir)
    lake = lake_for(settings)
    for role, contract in records.items():
        raw = _read(settings, _shard_files(settings, plan_, shard, contract.name), contract)
        base, frs[contract.name], municipality_only = anonymize(raw, contract)

        def write_ledger(kind: str, ledger: pa.Table, dataset: str = contract.name) -> str:
            rel = zones.record_ledger(dataset, f"{plan_.token}-{index:03d}-{kind}")
            lake.write_parquet(ledger, rel)
            return rel.as_posix()

        released = release_records(
            base,
            raw.column("event_id"),
            municipality_only,
            contract,
            state.ledgers.get(contract.name, Ledgers()),
            plan_.as_of,
            write_ledger,
        )
        assert released.periods is not None
        # The partition of each row (finalize replaces the table's files partition by partition).
        out[role] = released.table.append_column(shared.PERIOD, released.periods)
        utilities[contract.name] = released.utility
        batches += released.new_batches
        police[role] = raw  # outcomes are computed in the police zone

    policy = cv.disclosure.aggregates
    threshold = max(cv.disclosure.min_cell_count, ci.disclosure.min_cell_count)
    max_items = policy.max_items_per_list if policy.mode == "dp" else None
    counts = count_tables(police["visits"], police["incidents"], cats, max_items)
    true = {
        "outcomes_town_month": counts["town_month"],
        "outcomes_municipality_month": counts["municipality_month"],
    }
    reports: dict[str, AggregateReport] = {}
    refreshes: list[Refresh] = []

    store = ValuesStore(lake.read_table, shard.municipalities)
    for name, spec in SPECS.items():
        if not spec.by_month:
            continue  # spans every month: computed in finalize, from the whole history
        values_path = zones.aggregate_values(name, f"{plan_.token}-{index:03d}")
        out[name], made, reports[name], stored = release_aggregates(
            spec,
            true[name],
            policy,
            threshold,
            visit_l2_sensitivity(
                cats, policy.max_items_per_list, spec.name == "outcomes_town_month"
            ),
            state.aggregates.get(name, {}),
            plan_.as_of,
            cv.disclosure.close_after_days,
            store,
            values_path.as_posix(),
        )
        if stored is not None:
            lake.write_parquet(stored, values_path)
        refreshes += made
    # Outcome tables declared next to the contracts, over the rows of any dataset.
    datasets = {c.name: c for c in records.values()}
    rows = {c.name: police[role] for role, c in records.items()}
    for d in declared.load(settings.contracts_dir, datasets):
        if d.spans_history:
            continue  # computed in finalize, from the whole history
        values_path = zones.aggregate_values(d.name, f"{plan_.token}-{index:03d}")
        out[d.name], made, reports[d.name], stored = declared.release(
            d,
            declared.true_values(d, rows),
            datasets,
            state.aggregates.get(d.name, {}),
            plan_.as_of,
            store,
            values_path.as_posix(),
        )
        if stored is not None:
            lake.write_parquet(stored, values_path)
        refreshes += made
    staged = {}
    for name, table in out.items():
        staged[name] = zones.staged_file(plan_.token, name, index).as_posix()
        lake.write_parquet(table, staged[name])
    return ShardResult(
        index=index,
        staged=staged,
        field_reports=frs,
        utility=utilities,
        aggregates=reports,
        batches=batches,
        refreshes=refreshes,
    )


class ReleaseState:
    """What earlier releases published for some municipalities (committed releases only)."""

    def __init__(self) -> None:
        # dataset → the ledger rows of its batches, and which partitions have one
        self.ledgers: dict[str, Ledgers] = {}
        # aggregate table → (municipality, period) → its last publication
        self.aggregates: dict[str, dict[tuple[str, str], PartitionState]] = {}


def load_state(
    settings: Settings,
    municipalities: list[str],
    partitions: list[tuple[str, str]] | None = None,
    tables: tuple[str, ...] | None = None,
) -> ReleaseState:
    """The state of the municipalities' partitions (all, or `partitions` only)."""
    state = ReleaseState()
    wanted = set(partitions) if partitions is not None else None
    lake = lake_for(settings)
    with engine_for(settings).connect() as conn:
        batches = (
            conn.execute(
                sa.select(record_batches).where(
                    record_batches.c.municipality_code.in_(municipalities)
                )
            ).all()
            if tables is None  # only aggregate tables asked for: no ledgers
            else []
        )
        query = sa.select(aggregate_states).where(
            aggregate_states.c.municipality_code.in_(municipalities)
        )
        if tables is not None:
            query = query.where(aggregate_states.c.table_name.in_(tables))
        aggs = conn.execute(query).all()
    if wanted is not None:
        batches = [b for b in batches if (b.municipality_code, b.period) in wanted]
    for dataset in {b.dataset for b in batches}:
        mine = [b for b in batches if b.dataset == dataset]
        # a ledger file holds the batches of one release's shard: keep this shard's rows
        # in decision order (a row decided again, e.g. held then published: the last counts)
        order = {b.path: (b.release_id, b.path) for b in mine}
        files = [lake.read_table(p) for p in sorted(order, key=order.__getitem__)]
        rows = pa.concat_tables(files, promote_options="permissive")
        keep = pc.is_in(rows.column("municipality_code"), pa.array(municipalities))
        if wanted is not None:
            pairs = pc.binary_join_element_wise(
                rows.column("municipality_code"), rows.column("period"), "|"
            )
            keep = pc.and_(keep, pc.is_in(pairs, pa.array([f"{m}|{p}" for m, p in wanted])))
        rows = rows.filter(keep)
        state.ledgers[dataset] = Ledgers(rows, {(b.municipality_code, b.period) for b in mine})
    for a in aggs:
        state.aggregates.setdefault(a.table_name, {})[(a.municipality_code, a.period)] = (
            PartitionState(
                fingerprint=a.fingerprint,
                path=a.path,
                rho_spent=a.rho_spent,
                refreshes=a.refreshes,
                refreshed_at=a.refreshed_at,
                release_id=a.release_id,
            )
        )
    return state


def output_schemas(settings: Settings) -> dict[str, pa.Schema]:
    """The schema of every shared table under the current contracts (from empty inputs;
    computed once per version of the contracts)."""
    roles = record_contracts(settings.contracts_dir)
    key = tuple(sorted((c.id, c.fingerprint) for c in roles.values()))
    if key not in _SCHEMAS:
        _SCHEMAS.clear()
        _SCHEMAS[key] = _output_schemas(settings)
    return dict(_SCHEMAS[key])


_SCHEMAS: dict[tuple, dict[str, pa.Schema]] = {}


def _output_schemas(settings: Settings) -> dict[str, pa.Schema]:
    from visitshare.quality.validate import validated_schema
    from visitshare.release.aggregates import AggregateReport, protect
    from visitshare.release.hierarchy import dimensions
    from visitshare.release.recode import Recoding, apply

    roles = outcome_roles(settings.contracts_dir)
    cv, ci = roles["visits"], roles["incidents"]
    police, shared = {}, {}
    for role, contract in record_contracts(settings.contracts_dir).items():
        raw = validated_schema(contract).empty_table()
        base, _, _ = anonymize(raw, contract)
        dims = dimensions(contract)
        empty = Recoding({d.name: np.zeros(0, np.int8) for d in dims}, np.zeros(0, bool))
        shared[role] = apply(base, dims, empty).schema
        police[role] = raw
    cats = Categories.from_contracts(cv, ci)
    policy = cv.disclosure.aggregates
    counts = count_tables(police["visits"], police["incidents"], cats)
    true = {
        "outcomes_town_month": counts["town_month"],
        "outcomes_municipality_month": counts["municipality_month"],
        "before_after_town": before_after(police["visits"], police["incidents"], cats),
    }
    out = {**shared}
    for name, spec in SPECS.items():
        values, _ = protect(
            spec, true[name], policy, 10, 1.0, None, AggregateReport(table=name, mode=policy.mode)
        )
        out[name] = public(values).schema
    out["repeat_victimization"] = repeat_victimization(
        police["visits"], police["incidents"], b"0" * 32, household_namespace(cv)
    ).schema
    datasets = {c.name: c for c in record_contracts(settings.contracts_dir).values()}
    for d in declared.load(settings.contracts_dir, datasets):
        values, _ = protect(
            declared.table_spec(d),
            declared.true_values(d, declared.empty_inputs(d, datasets)),
            d.policy_contract(datasets).disclosure.aggregates,
            10,
            1.0,
            None,
            AggregateReport(table=d.name, mode=policy.mode),
        )
        out[d.name] = public(values).schema
    return out
