"""Step 2 of a release: anonymize, k-anonymize, aggregate and suppress one shard; stage the results."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from visitshare.contracts import Contract
from visitshare.contracts.roles import outcome_roles
from visitshare.db import engine_for
from visitshare.db.tables import curated_files
from visitshare.landing import zones
from visitshare.landing.files import write_parquet
from visitshare.release import keys
from visitshare.release.anonymize import (
    FieldReport,
    KReport,
    anonymize,
    generalizable,
    k_anonymize,
    pseudonym_columns,
    shared_quasi_identifiers,
    unlinkable,
)
from visitshare.release.errors import ReleaseError
from visitshare.release.models import Plan, Shard, ShardResult
from visitshare.release.outcomes import (
    Categories,
    SuppressionReport,
    before_after,
    outcome_tables,
    repeat_victimization,
    suppress,
)
from visitshare.settings import Settings

log = logging.getLogger(__name__)


# -- 2. build a shard --------------------------------------------------------------------------
def _shard_files(settings: Settings, plan_: Plan, shard: Shard, dataset: str) -> list[str]:
    """The validated files of the shard's municipalities that the plan includes."""
    with engine_for(settings).connect() as conn:
        return list(
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
    return settings.lake / zones.staging_dir(token)


def build_shard(settings: Settings, plan_: Plan, index: int) -> ShardResult:
    """Anonymize, k-anonymize, aggregate and suppress one shard; stage the results."""
    shard = plan_.shards[index]
    key = keys.load_key(settings)
    if keys.fingerprint(key) != plan_.key_fingerprint:
        raise ReleaseError("the pseudonym key changed while the release was being built")
    roles = outcome_roles(settings.contracts_dir)
    cv, ci = roles["visits"], roles["incidents"]
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
        path = settings.lake / zones.staged_file(plan_.token, name, index)
        write_parquet(table, path)
        staged[name] = path.relative_to(settings.lake).as_posix()
    return ShardResult(
        index=index,
        staged=staged,
        field_reports=frs,
        k_reports=krs,
        suppression=supp,
    )


def output_schemas(settings: Settings) -> dict[str, pa.Schema]:
    """The schema of every shared table under the current contracts (from empty inputs)."""
    roles = outcome_roles(settings.contracts_dir)
    cv, ci = roles["visits"], roles["incidents"]
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
