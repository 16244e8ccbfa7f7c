"""Disclosure control: what may leave the police zone, and in what form.

Pure functions on Arrow tables, driven by the contracts: every field's PII class and
disclosure rule decides what happens to it; nothing here names a column of its own.
- `anonymize`: drop, pseudonymize (keyed HMAC-SHA-256), coarsen, cap, band; values of
  sensitive categories are published at municipality level only (town emptied, or the value
  removed from a list);
- `k_anonymize`: rows whose quasi-identifier group is smaller than k are generalized
  (town → municipality), then suppressed;
- `suppress_cells`: primary suppression of counts from 1 to min-1 subjects, and secondary
  suppression so that no suppressed cell can be recovered from a published total.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from visitshare.contracts import Contract, Domain, FieldSpec, FieldType, PiiClass
from visitshare.release.errors import DisclosureError


class FieldReport(BaseModel):
    """What anonymization did to one dataset's fields and rows."""

    dropped: list[str] = Field(default_factory=list)
    pseudonymized: list[str] = Field(default_factory=list)
    coarsened: list[str] = Field(default_factory=list)
    capped: list[str] = Field(default_factory=list)
    banded: list[str] = Field(default_factory=list)
    kept: list[str] = Field(default_factory=list)
    municipality_level_rows: int = 0  # rows of a sensitive category: town emptied
    sensitive_values_removed: int = 0  # list items of a sensitive category removed


class KReport(BaseModel):
    k: int
    quasi_identifiers: list[str]
    rows_in: int = 0
    generalized: int = 0  # town → municipality
    suppressed: int = 0
    k_achieved: int | None = None  # smallest group published (None: nothing published)


def pseudonymize(values: pa.Array | pa.ChunkedArray, key: bytes, namespace: str) -> pa.Array:
    """HMAC-SHA-256 of `namespace:value` under `key`, hex (32 chars); nulls stay null.

    Keyed, so a pseudonym cannot be recomputed from a guessed identifier without the key; the
    namespace makes the same household in visits and incidents one pseudonym.
    """
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    unique = pc.unique(values.drop_null())
    keyed = hmac.new(key, namespace.encode() + b":", hashlib.sha256)
    out = []
    for v in unique.to_pylist():  # copying the keyed state skips re-keying per value
        h = keyed.copy()
        h.update(v.encode())
        out.append(h.hexdigest()[:32])
    digests = pa.array(out, pa.string())
    return pc.take(digests, pc.index_in(values, value_set=unique))


def shared_name(f: FieldSpec) -> str:
    """A field's name in shared data: what it became is in the name when its meaning changed."""
    d = f.disclosure
    if d is not None and d.action == "pseudonymize":
        return f.name.removesuffix("_id") + "_pseudonym"
    if d is not None and d.action == "coarsen":
        return f.name.removesuffix("_at") + ("_date" if d.coarsen == "day" else "_month")
    return f.name


def generalizable(contract: Contract) -> str | None:
    """The shared name of the location field that k-anonymity generalizes (the town), if any.

    Generalizing means emptying it: the row then stands at municipality level, which the
    contract keeps in `municipality_code`.
    """
    towns = [f for f in contract.fields if f.domain is Domain.TOKYO_TOWN]
    return shared_name(towns[0]) if towns else None


def shared_quasi_identifiers(contract: Contract) -> list[str]:
    """The contract's quasi-identifiers under their names in shared data."""
    return [shared_name(contract.field(n)) for n in contract.disclosure.quasi_identifiers]


def unlinkable(contract: Contract) -> list[str]:
    """Shared names of the pseudonyms, emptied on rows moved to municipality level."""
    return [
        shared_name(f)
        for f in contract.fields
        if f.disclosure is not None and f.disclosure.action == "pseudonymize"
    ]


def _rule(f: FieldSpec):
    if f.disclosure is not None:
        return f.disclosure
    if f.pii is not PiiClass.PUBLIC:  # the contract loader refuses this too; never trust alone
        raise DisclosureError(
            f"field {f.name!r} ({f.pii.value}) has no disclosure rule: refusing to publish it"
        )
    return None  # public, kept as it is


def pseudonym_columns(table: pa.Table, contract: Contract, key: bytes) -> dict[str, pa.Array]:
    """Every pseudonymized field of the contract, under its shared name (nothing masked)."""
    return {
        shared_name(f): pseudonymize(table.column(f.name), key, f.disclosure.namespace or "")
        for f in contract.fields
        if f.disclosure is not None and f.disclosure.action == "pseudonymize"
    }


def anonymize(
    table: pa.Table, contract: Contract, key: bytes, pseudonyms: dict[str, pa.Array] | None = None
) -> tuple[pa.Table, FieldReport]:
    """The shareable form of validated rows. Columns not in the contract are not shared.

    `pseudonyms`: from `pseudonym_columns` when the caller needs them too (computed here
    otherwise)."""
    if pseudonyms is None:
        pseudonyms = pseudonym_columns(table, contract, key)
    report = FieldReport()
    out: dict[str, pa.ChunkedArray | pa.Array] = {}
    for f in contract.fields:
        if f.pii is None:  # pragma: no cover - a contract model change would be needed
            raise DisclosureError(f"field {f.name!r} has no PII class: refusing to publish it")
        d = _rule(f)
        col = table.column(f.name)
        name = shared_name(f)
        if d is None or d.action == "keep":
            out[name] = col
            report.kept.append(f.name)
        elif d.action == "drop":
            report.dropped.append(f.name)
        elif d.action == "pseudonymize":
            out[name] = pseudonyms[name]
            report.pseudonymized.append(f.name)
        elif d.action == "coarsen":
            if d.coarsen == "day":
                out[name] = pc.cast(pc.strftime(col, format="%Y-%m-%d"), pa.date32())
            else:
                out[name] = pc.strftime(col, format="%Y-%m")
            report.coarsened.append(f"{f.name} → {d.coarsen}")
        elif d.action == "cap":
            cap = pa.scalar(d.cap, col.type)  # nulls stay null (unknown is not "the cap")
            out[name] = pc.if_else(pc.greater(col, cap), cap, col)
            report.capped.append(f"{f.name} ≤ {d.cap}")
        elif d.action == "band":
            keys = pa.array(list(d.band))
            out[name] = pc.take(pa.array(list(d.band.values())), pc.index_in(col, value_set=keys))
            report.banded.append(f.name)
    town = generalizable(contract)
    # A pseudonym would link a row at municipality level back to the same household's rows
    # that carry a town (in this table or another): such rows lose their pseudonyms too.
    linking = [n for n in unlinkable(contract) if n in out]
    # Sensitive categories: a single value, the row goes to municipality level; in a list, the
    # value is taken out (and counted at municipality level by the aggregates instead).
    for f in contract.fields:
        if not f.sensitive_values or shared_name(f) not in out:
            continue
        col = out[shared_name(f)]
        sensitive = pa.array(f.sensitive_values)
        if f.type is FieldType.ARRAY:
            kept, removed = _remove_values(col, sensitive)
            report.sensitive_values_removed += removed
            out[shared_name(f)] = kept
        elif town is not None and town in out:
            mask = pc.fill_null(pc.is_in(col, value_set=sensitive), False)
            report.municipality_level_rows += pc.sum(mask).as_py() or 0
            for name in [town, *linking]:
                out[name] = pc.if_else(mask, pa.scalar(None, out[name].type), out[name])
    return pa.table(out), report


def _remove_values(col: pa.ChunkedArray | pa.Array, values: pa.Array) -> tuple[pa.Array, int]:
    """A list column without the given items (null lists stay null); how many were removed."""
    lists = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    flat = pc.list_flatten(lists)
    keep = pc.invert(pc.fill_null(pc.is_in(flat, value_set=values), False))
    parents = pc.list_parent_indices(lists).filter(keep).to_numpy()
    counts = np.bincount(parents, minlength=len(lists))
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    kept = pa.ListArray.from_arrays(
        offsets, flat.filter(keep), type=lists.type, mask=pc.is_null(lists)
    )
    return kept, len(flat) - int(pc.sum(keep).as_py() or 0)


def _sql(con: duckdb.DuckDBPyConnection, query: str, **tables: pa.Table) -> pa.Table:
    for name, t in tables.items():
        con.register(name, t)
    return con.sql(query).to_arrow_table()


def k_anonymize(
    table: pa.Table,
    quasi_identifiers: list[str],
    k: int,
    generalize: str | None,
    unlink: Sequence[str] = (),
) -> tuple[pa.Table, KReport]:
    """Generalize rows in groups smaller than k (empty `generalize`: town → municipality),
    then suppress the rows still in groups smaller than k. Generalized rows lose the
    `unlink` columns (pseudonyms), which would tie them back to the household's other rows."""
    report = KReport(k=k, quasi_identifiers=list(quasi_identifiers), rows_in=table.num_rows)
    if not table.num_rows:
        return table, report
    con = duckdb.connect()
    qi = ", ".join(f'"{c}"' for c in quasi_identifiers)
    # Window partitions treat an empty town (already municipality level) as one group.
    sized = _sql(con, f"SELECT *, count(*) OVER (PARTITION BY {qi}) AS _n FROM t", t=table)
    small = pc.less(sized.column("_n"), k)
    general = sized.drop_columns(["_n"])
    if generalize is not None:
        col = sized.column(generalize)
        report.generalized = pc.sum(pc.and_(small, pc.is_valid(col))).as_py() or 0
        general = general.set_column(
            general.schema.get_field_index(generalize),
            generalize,
            pc.if_else(small, pa.scalar(None, col.type), col),
        )
        for name in unlink:
            c = general.column(name)
            general = general.set_column(
                general.schema.get_field_index(name),
                name,
                pc.if_else(small, pa.scalar(None, c.type), c),
            )
    regrouped = _sql(con, f"SELECT *, count(*) OVER (PARTITION BY {qi}) AS _n FROM g", g=general)
    keep = pc.greater_equal(regrouped.column("_n"), k)
    published = regrouped.filter(keep)
    report.suppressed = table.num_rows - published.num_rows
    report.k_achieved = pc.min(published.column("_n")).as_py() if published.num_rows else None
    return published.drop_columns(["_n"]).select(table.column_names), report


# -- aggregate cells -------------------------------------------------------------------------------
PRIMARY, SECONDARY = 1, 2


def suppress_cells(
    cells: np.ndarray,
    threshold: int,
    row_totals: bool = True,
    column_totals: bool = True,
) -> np.ndarray:
    """Which cells of a count table to suppress: 0 = publish, 1 = primary, 2 = secondary.

    Primary: 1 ≤ count < threshold. Secondary: wherever a published total would let a single
    suppressed cell be recovered (total minus the other cells), the smallest other non-zero
    cell of that row (or column) is suppressed too; repeated until every row and column with a published
    total has none or at least two suppressed cells.
    """
    cells = np.asarray(cells, dtype=float)
    status = np.where((cells >= 1) & (cells < threshold), PRIMARY, 0).astype(np.int8)
    changed = True
    while changed:
        changed = False
        lines: list[tuple[int | slice, int | slice]] = []
        if row_totals:
            lines += [(i, slice(None)) for i in range(cells.shape[0])]
        if column_totals:
            lines += [(slice(None), j) for j in range(cells.shape[1])]
        for line in lines:
            s = status[line]
            if np.count_nonzero(s) == 1 and len(s) > 1:
                # The smallest published non-zero cell: a zero often is known to be zero from
                # another line, so suppressing it would hide nothing (zeros only as a last resort).
                values = np.where((s == 0) & (cells[line] > 0), cells[line], np.inf)
                if not np.isfinite(values).any():
                    values = np.where(s == 0, cells[line], np.inf)
                pick = int(np.argmin(values))
                if np.isfinite(values[pick]):
                    view = status[line]
                    view[pick] = SECONDARY
                    status[line] = view
                    changed = True
    return status
