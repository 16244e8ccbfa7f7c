"""Disclosure control: what may leave the police zone, and in what form.

Pure functions on Arrow tables, driven by the contracts: every field's PII class and
disclosure rule decides what happens to it; nothing here names a column of its own.
- `anonymize`: drop, pseudonymize (keyed HMAC-SHA-256), coarsen, cap, band; values of
  sensitive categories are published at municipality level only (the row is flagged
  `municipality_only` for the recoding, or the value removed from a list);
- generalization to k-anonymity is `visitshare.release.recode` (hierarchies in the contract);
- `suppress_cells`: primary suppression of counts from 1 to min-1 subjects, and secondary
  suppression so that no suppressed cell can be recovered from a published total.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from visitshare.contracts import Contract, Domain, FieldSpec, FieldType, PiiClass, geography
from visitshare.release.errors import DisclosureError


class FieldReport(BaseModel):
    """What anonymization did to one dataset's fields and rows."""

    dropped: list[str] = Field(default_factory=list)
    pseudonymized: list[str] = Field(default_factory=list)
    coarsened: list[str] = Field(default_factory=list)
    capped: list[str] = Field(default_factory=list)
    banded: list[str] = Field(default_factory=list)
    kept: list[str] = Field(default_factory=list)
    municipality_level_rows: int = 0  # rows of a sensitive category: recoded to municipality
    sensitive_values_removed: int = 0  # list items of a sensitive category removed


TOWN_GROUP = "town_group"  # the public group of neighbouring towns (geography.town_group)


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


def anonymize(table: pa.Table, contract: Contract) -> tuple[pa.Table, FieldReport, np.ndarray]:
    """The shareable form of validated rows, before generalization: (table, what was done,
    rows that may only be published at municipality level).

    Columns not in the contract are not shared. Pseudonyms are not shared either: they join
    datasets in the police zone (`pseudonym_columns`), and in shared rows a persistent
    pseudonym would link a household's rows across places and months. Sensitive categories:
    a single value sends its row to municipality level; in a list, the value is taken out (the
    aggregates count it at municipality level instead). A place hierarchy adds the public
    `town_group` of each row's town."""
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
    municipality_only = np.zeros(table.num_rows, bool)
    for f in contract.fields:
        if not f.sensitive_values or shared_name(f) not in out:
            continue
        col = out[shared_name(f)]
        sensitive = pa.array(f.sensitive_values)
        if f.type is FieldType.ARRAY:
            kept, removed = _remove_values(col, sensitive)
            report.sensitive_values_removed += removed
            out[shared_name(f)] = kept
        else:
            mask = pc.fill_null(pc.is_in(col, value_set=sensitive), False)
            municipality_only |= mask.to_numpy(zero_copy_only=False)
    report.municipality_level_rows = int(municipality_only.sum())
    town = generalizable(contract)
    if town is not None and town in out:
        out[TOWN_GROUP] = geography.town_groups(out["municipality_code"], out[town])
    return pa.table(out), report, municipality_only


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
