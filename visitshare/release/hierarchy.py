"""Generalization hierarchies of the quasi-identifiers, as the contracts declare them.

A `Dimension` is one quasi-identifier with its levels (finest first). Each level maps every
row to an integer code (what k-anonymity groups by) and, when a row is generalized to that
level, sets the shared columns accordingly: finer columns are emptied, coarser ones filled.

- place: town (and what follows it, e.g. the koban) → town_group → municipality;
- time: day / week / month / quarter columns of one event time (`visited_date`,
  `visited_week`, `visited_month` …), the finer ones emptied as it coarsens;
- bands / categories: the value, its band or category (`residents_band`, `crime_category`),
  or neither (any);
- any: the value or nothing; fixed: never generalized (the municipality).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from visitshare.contracts import Contract, Domain, FieldType
from visitshare.contracts.model import QuasiIdentifier
from visitshare.release.anonymize import TOWN_GROUP, shared_name

TIME_UNITS = ("day", "week", "month", "quarter")


@dataclass(frozen=True)
class Dimension:
    name: str  # the contract field
    kind: str  # place | time | bands | categories | any | fixed
    levels: tuple[str, ...]
    column: str  # its shared column at the finest level
    followers: tuple[str, ...] = ()  # shared columns published only at the finest place level
    mapping: dict[str, str] = field(default_factory=dict)  # value → band / category
    derived: str | None = None  # the band / category / town-group column
    weight: float = 1.0  # of its height in the information loss the recoding minimizes

    @property
    def top(self) -> int:
        return len(self.levels) - 1

    def columns(self) -> list[str]:
        """Every shared column this dimension publishes (finest first)."""
        if self.kind == "place":
            return [self.column, *self.followers, TOWN_GROUP]
        if self.kind == "time":
            return [time_column(self.column, u) for u in self.levels]
        return [self.column, *([self.derived] if self.derived else [])]


def time_column(column: str, unit: str) -> str:
    """`visited_date` at day, `visited_week`, `visited_month`, `visited_quarter` …"""
    stem = column.rsplit("_", 1)[0]
    return f"{stem}_{'date' if unit == 'day' else unit}"


def dimensions(contract: Contract) -> list[Dimension]:
    """The contract's quasi-identifiers as dimensions, in the contract's order."""
    out = []
    qis = contract.disclosure.quasi_identifiers
    followers = {
        name: tuple(shared_name(contract.field(n)) for n, q in qis.items() if q.follows == name)
        for name in qis
    }
    for name, qi in qis.items():
        if qi.follows is not None:
            continue  # published with the place it follows
        out.append(_dimension(contract, name, qi, followers[name]))
    return out


def _dimension(
    contract: Contract, name: str, qi: QuasiIdentifier, followers: tuple[str, ...]
) -> Dimension:
    f = contract.field(name)
    column = shared_name(f)
    levels = tuple(qi.levels)
    w = qi.weight
    if f.domain is Domain.TOKYO_TOWN:
        return Dimension(name, "place", levels, column, followers, weight=w)
    if f.type is FieldType.TIMESTAMP:
        return Dimension(name, "time", levels, column, weight=w)
    if qi.bands:
        stem = column.removesuffix("_count").removesuffix("_band")
        derived = f"{stem}_band" if not column.endswith("_band") else f"{stem}_group"
        return Dimension(name, "bands", levels, column, mapping=qi.bands, derived=derived, weight=w)
    if qi.categories:
        derived = column.removesuffix("_type") + "_category"
        return Dimension(
            name, "categories", levels, column, mapping=qi.categories, derived=derived, weight=w
        )
    if levels == ("exact",):
        return Dimension(name, "fixed", levels, column, weight=w)
    return Dimension(name, "any", levels, column, weight=w)


# -- values at each level ------------------------------------------------------------------------
def period_at(values: pa.Array | pa.ChunkedArray, unit: str, base: str) -> pa.Array:
    """Text of a date (base day) or a 'YYYY-MM' month (base month) at a coarser unit.

    Computed once per distinct value (a year has 365 days) and spread back to the rows."""
    if base == "day" and unit == "day":
        return values
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values)
    return pc.take(_period_of_distinct(encoded.dictionary, unit, base), encoded.indices)


def _period_of_distinct(values: pa.Array, unit: str, base: str) -> pa.Array:
    if base == "day":
        days = values
        if unit == "day":
            return values
        if unit == "week":  # ISO week of the date, e.g. 2026-W45
            return pc.strftime(pc.cast(days, pa.timestamp("s")), format="%G-W%V")
        months = pc.strftime(pc.cast(days, pa.timestamp("s")), format="%Y-%m")
    else:
        months = values
    if unit == "month":
        return months
    year = pc.utf8_slice_codeunits(months, 0, 4)
    month = pc.cast(pc.utf8_slice_codeunits(months, 5, 7), pa.int8())
    quarter = pc.add(pc.divide(pc.subtract(month, 1), 3), 1)
    return pc.binary_join_element_wise(year, pc.cast(quarter, pa.string()), "-Q")


def level_values(table: pa.Table, dim: Dimension, level: int) -> dict[str, pa.Array]:
    """The shared columns of `dim` for every row as if all were generalized to `level`."""
    n = table.num_rows
    null = lambda t: pa.nulls(n, t)  # noqa: E731
    if dim.kind == "place":
        towns = table.column(dim.column)
        groups = table.column(TOWN_GROUP)  # derived once, when the table is anonymized
        out = {dim.column: towns, TOWN_GROUP: groups}
        for c in dim.followers:
            out[c] = table.column(c)
        if level >= 1:
            out[dim.column] = null(towns.type)
            for c in dim.followers:
                out[c] = null(table.column(c).type)
        if level >= 2:
            out[TOWN_GROUP] = null(pa.string())
        return out
    if dim.kind == "time":
        base = dim.levels[0]
        values = table.column(dim.column)
        out = {}
        for i, unit in enumerate(dim.levels):
            col = time_column(dim.column, unit)
            out[col] = (
                period_at(values, unit, base)
                if i >= level
                else null(values.type if i == 0 else pa.string())
            )
        return out
    values = table.column(dim.column)
    if dim.kind == "fixed":
        return {dim.column: values}
    if dim.kind == "any":
        return {dim.column: values if level == 0 else null(values.type)}
    mapped = _mapped(values, dim.mapping)
    assert dim.derived is not None  # bands and categories have a derived column
    if level == 0:
        return {dim.column: values, dim.derived: mapped}
    if level == 1:
        return {dim.column: null(values.type), dim.derived: mapped}
    return {dim.column: null(values.type), dim.derived: null(pa.string())}


def _mapped(values: pa.Array | pa.ChunkedArray, mapping: dict[str, str]) -> pa.Array:
    keys = pa.array(list(mapping), pa.string())
    text = pc.cast(values, pa.string())
    return pc.take(pa.array(list(mapping.values()), pa.string()), pc.index_in(text, value_set=keys))


def codes(arrays: list[pa.Array | pa.ChunkedArray]) -> np.ndarray:
    """One integer per row for the combination of these columns' values (null is a value)."""
    frame = pd.DataFrame({str(i): a.to_pandas() for i, a in enumerate(arrays)})
    if frame.shape[1] == 0:
        return np.zeros(len(frame), np.int64)
    return frame.groupby(list(frame.columns), dropna=False, sort=False).ngroup().to_numpy(np.int64)


def value_codes(column: pa.Array | pa.ChunkedArray) -> pd.Series:
    """One integer per row for its value (nullable: null stays null), for counting distinct
    values. A list is a set: the same items in any order are one value (an order-independent
    sum of 63-bit digests of its items, so recoder and audit agree without sorting)."""
    import hashlib

    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    valid = col.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        flat = pc.cast(pc.list_flatten(col), pa.string())
        parents = pc.list_parent_indices(col).to_numpy(zero_copy_only=False)
        distinct = pc.unique(flat)
        weights = np.array(
            [int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest()) >> 1
             for v in distinct.to_pylist()] or [0],
            np.uint64,
        )  # fmt: skip
        items = pc.fill_null(pc.index_in(flat, value_set=distinct), 0).to_numpy(
            zero_copy_only=False
        )
        sums = np.zeros(len(col), np.uint64)
        np.add.at(sums, parents, weights[items])
        values = sums.view(np.int64)
    else:
        values = pc.dictionary_encode(col).indices.fill_null(0).to_numpy(zero_copy_only=False)
    return pd.Series(pd.array(values.astype(np.int64), dtype="Int64")).mask(~valid)


def quarter_of(month: str) -> str:
    return f"{month[:4]}-Q{(int(month[5:7]) - 1) // 3 + 1}"


def week_of(d: date) -> str:
    iso = d.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"
