"""Utility-optimized recoding: the least generalization that makes each partition k-anonymous.

For every partition (municipality × month) and every node of the lattice of hierarchy levels
(one level per quasi-identifier except place), rows start at the finest place; rows in classes
smaller than k climb the place hierarchy (town → town group → municipality: local recoding);
rows still in small classes are suppressed. Each partition then takes the node with the least
information loss whose suppression stays within the contract's budget (or, if none does, the
node that suppresses least), as ARX's global-then-local recoding does.

Information loss of a row: the mean, over the quasi-identifiers, of its generalization height
(level / top level); a suppressed row loses everything (1). Pure numpy over integer codes:
all partitions of a release are searched at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel

from visitshare.release.hierarchy import Dimension, codes, level_values, value_codes


@dataclass
class Recoding:
    """Per row: the level of every dimension, and whether it is suppressed."""

    levels: dict[str, np.ndarray]  # dimension → level per row (int8)
    suppressed: np.ndarray  # bool per row
    nodes: dict[int, dict[str, int]] = field(default_factory=dict)  # partition → global levels


class DimensionUtility(BaseModel):
    dimension: str
    levels: list[str]
    rows_at_level: list[int]  # published rows at each level, finest first


class Utility(BaseModel):
    """How much of the data survives, between "as collected" and "everything suppressed"."""

    rows_in: int
    rows_published: int
    rows_suppressed: int
    rows_held: int = 0  # rows of open periods, not published yet
    k: int
    k_achieved: int | None
    average_class_size: float | None
    discernibility: int  # Σ class size² over published rows + rows_in × suppressed rows
    dimensions: list[DimensionUtility]
    sensitive_withheld: dict[str, int] = {}  # sensitive column → rows where it was withheld

    @property
    def suppressed_share(self) -> float:
        return self.rows_suppressed / self.rows_in if self.rows_in else 0.0

    def below_share(self, dimension: str, level: int) -> float:
        """Share of published rows at `level` or finer of `dimension` (e.g. below municipality)."""
        for d in self.dimensions:
            if d.dimension == dimension and self.rows_published:
                return sum(d.rows_at_level[: level + 1]) / self.rows_published
        return 0.0


def _radix_key(parts: Sequence[np.ndarray]) -> np.ndarray:
    key = np.zeros(len(parts[0]), np.int64)
    for p in parts:
        key = key * (int(p.max(initial=0)) + 1) + p
    return key


def _class_sizes(key: np.ndarray) -> np.ndarray:
    ids, uniques = pd.factorize(key)
    return np.bincount(ids, minlength=len(uniques))[ids]


class Search:
    """The codes of one table's rows at every level of every dimension (computed once)."""

    def __init__(self, table: pa.Table, dims: list[Dimension], partition: np.ndarray):
        self.dims = dims
        self.partition = partition.astype(np.int64)
        self.n = table.num_rows
        self.codes: dict[str, list[np.ndarray]] = {
            d.name: [
                codes(list(level_values(table, d, lv).values())) for lv in range(len(d.levels))
            ]
            for d in dims
        }
        self.place = next((d for d in dims if d.kind == "place"), None)
        if self.place is not None:  # rows mix place levels: give each level its own codes
            offset = 0
            for level, c in enumerate(self.codes[self.place.name]):
                self.codes[self.place.name][level] = c + offset
                offset += int(c.max(initial=-1)) + 1
        # A dimension with one value in the whole table is never generalized: that would make
        # no class larger, and it would only dilute the loss of the others. So a field that
        # only a later contract version has (null in every row while the rows are all of an
        # earlier version) leaves the search as it was without it.
        self.free = [
            d
            for d in dims
            if d.kind not in ("place", "fixed")
            and d.top > 0
            and int(self.codes[d.name][0].max(initial=0)) > 0
        ]

    def nodes(self) -> list[dict[str, int]]:
        """Every combination of the free dimensions' levels (a dimension left out of the
        search for its single value stays at its finest level)."""
        ranges = [range(d.top + 1) for d in self.free]
        still = [d.name for d in self.dims if d.kind not in ("place", "fixed") and d.top > 0]
        out = []
        for combo in itertools.product(*ranges):
            chosen = dict(zip([d.name for d in self.free], combo, strict=True))
            out.append({name: chosen.get(name, 0) for name in still})
        return out

    def evaluate(
        self,
        node: dict[str, int],
        k: int,
        min_place: np.ndarray | None,
        rows: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(place level per row, suppressed per row) of `node` with local recoding of place."""
        idx = np.arange(self.n) if rows is None else rows
        fixed = [self.partition[idx]]
        for d in self.dims:
            if d.kind == "fixed":
                fixed.append(self.codes[d.name][0][idx])
            elif d.kind != "place":
                fixed.append(self.codes[d.name][node.get(d.name, 0)][idx])
        base = _radix_key(fixed)
        if self.place is None:
            size = _class_sizes(base)
            return np.zeros(len(idx), np.int8), size < k
        place_codes = self.codes[self.place.name]
        level = np.zeros(len(idx), np.int8) if min_place is None else min_place[idx].astype(np.int8)
        while True:  # climb the rows of small classes one level, until none can climb
            code = np.choose(level, [c[idx] for c in place_codes])
            size = _class_sizes(_radix_key([base, code]))
            climb = (size < k) & (level < self.place.top)
            if not climb.any():
                break
            level = np.where(climb, level + 1, level).astype(np.int8)
        return level, size < k

    def loss(self, node: dict[str, int], place: np.ndarray, suppressed: np.ndarray) -> np.ndarray:
        """Per row, between 0 (as collected) and 1 (suppressed): the mean height of its levels,
        each over its hierarchy's height, weighted as the contract says (`weight`)."""
        heights = [np.full(len(place), node.get(d.name, 0) / d.top) for d in self.free]
        weights = [d.weight for d in self.free]
        if self.place is not None:
            heights.append(place / self.place.top)
            weights.append(self.place.weight)
        per_row = np.average(heights, axis=0, weights=weights) if heights else np.zeros(len(place))
        return np.where(suppressed, 1.0, per_row)


def recode(
    table: pa.Table,
    dims: list[Dimension],
    partition: np.ndarray,
    k: int,
    budget: float,
    min_place: np.ndarray | None = None,
) -> Recoding:
    """Choose, per partition, the generalization with the least loss that meets k within the
    suppression budget (or, if none does, the one that suppresses least)."""
    search = Search(table, dims, partition)
    n = table.num_rows
    levels = {d.name: np.zeros(n, np.int8) for d in dims}
    suppressed = np.zeros(n, bool)
    if n == 0:
        return Recoding(levels, suppressed)
    parts, part_ids = np.unique(search.partition, return_inverse=True)
    sizes = np.bincount(part_ids, minlength=len(parts))
    allowed = budget * sizes
    # Best so far per partition, compared as (over budget?, suppressed if over, loss).
    best = np.full((len(parts), 3), np.inf)
    best_node = np.full(len(parts), -1)
    results = []
    for i, node in enumerate(search.nodes()):
        place, supp = search.evaluate(node, k, min_place)
        results.append((node, place, supp))
        loss = search.loss(node, place, supp)
        part_loss = np.bincount(part_ids, weights=loss, minlength=len(parts)) / sizes
        part_supp = np.bincount(part_ids, weights=supp, minlength=len(parts))
        over = part_supp > allowed
        score = np.column_stack([over, np.where(over, part_supp, 0.0), part_loss])
        better = _lexically_less(score, best)
        best[better] = score[better]
        best_node[better] = i
    nodes = {}
    for j, p in enumerate(parts.tolist()):
        node, place, supp = results[best_node[j]]
        rows = part_ids == j
        for d in dims:
            if d.kind == "place":
                levels[d.name][rows] = place[rows]
            elif d.kind != "fixed":
                levels[d.name][rows] = node.get(d.name, 0)
        suppressed[rows] = supp[rows]
        nodes[int(p)] = node
    return Recoding(levels, suppressed, nodes)


def _lexically_less(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise a < b comparing columns left to right."""
    less = np.zeros(len(a), bool)
    equal = np.ones(len(a), bool)
    for j in range(a.shape[1]):
        less |= equal & (a[:, j] < b[:, j])
        equal &= a[:, j] == b[:, j]
    return less


# -- applying a recoding -------------------------------------------------------------------------
def apply(table: pa.Table, dims: list[Dimension], recoding: Recoding) -> pa.Table:
    """Every row generalized to its levels (suppressed rows removed): the shared columns of
    each dimension replaced, the other columns kept as they are."""
    n = table.num_rows
    out = {name: table.column(name) for name in table.column_names}
    positions = np.arange(n, dtype=np.int64)
    for d in dims:
        per_level = [level_values(table, d, lv) for lv in range(len(d.levels))]
        take = pa.array(recoding.levels[d.name].astype(np.int64) * n + positions)
        for column in per_level[0]:
            kind = _as_array(per_level[0][column], None).type
            stacked = pa.concat_arrays([_as_array(lv[column], kind) for lv in per_level])
            out[column] = stacked.take(take)
    keep = pa.array(~recoding.suppressed)
    return pa.table(out).filter(keep)


def _as_array(values, type_: pa.DataType | None) -> pa.Array:
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return arr.cast(type_) if type_ is not None and arr.type != type_ else arr


def qi_columns(dims: list[Dimension]) -> list[str]:
    return [c for d in dims for c in d.columns()]


def l_diversity(
    published: pa.Table, dims: list[Dimension], sensitive: list[str], l_min: int
) -> dict[str, np.ndarray]:
    """Rows whose sensitive column must be withheld: in a class (all quasi-identifier columns)
    that has a place finer than municipality and fewer than `l_min` distinct values of it."""
    if not published.num_rows or not sensitive:
        return {c: np.zeros(published.num_rows, bool) for c in sensitive}
    classes = codes([published.column(c) for c in qi_columns(dims)])
    place = next((d for d in dims if d.kind == "place"), None)
    finer = (
        np.ones(published.num_rows, bool)
        if place is None
        else published.column("town_group").is_valid().to_numpy(zero_copy_only=False)
    )
    out = {}
    for column in sensitive:
        frame = pd.DataFrame({"c": classes, "v": value_codes(published.column(column))})
        # Distinct known values (nunique skips nulls): a class shows the column only if they
        # are at least l_min; otherwise the column is withheld for the whole class.
        distinct = frame.groupby("c")["v"].transform("nunique").to_numpy()
        out[column] = finer & (distinct < l_min)
    return out


def withhold(published: pa.Table, masks: dict[str, np.ndarray]) -> pa.Table:
    for column, mask in masks.items():
        i = published.schema.get_field_index(column)
        col = published.column(column)
        if mask.any():
            published = published.set_column(i, column, _null_where(col, mask))
    return published


def _null_where(col, mask: np.ndarray) -> pa.Array:
    import pyarrow.compute as pc

    return pc.if_else(pa.array(mask), pa.scalar(None, col.type), col)


def utility(
    rows_in: int,
    published: pa.Table,
    dims: list[Dimension],
    recoding: Recoding,
    k: int,
    withheld: dict[str, np.ndarray],
    held: int = 0,
) -> Utility:
    """The utility metrics of one recoded table (the rows that went in, and what came out)."""
    kept = ~recoding.suppressed
    sizes = (
        np.bincount(codes([published.column(c) for c in qi_columns(dims)]))
        if published.num_rows
        else np.zeros(0, np.int64)
    )
    suppressed = int(recoding.suppressed.sum())
    return Utility(
        rows_in=rows_in,
        rows_published=published.num_rows,
        rows_suppressed=suppressed,
        rows_held=held,
        k=k,
        k_achieved=int(sizes.min()) if len(sizes) else None,
        average_class_size=round(float(sizes.mean()), 2) if len(sizes) else None,
        discernibility=int((sizes.astype(np.int64) ** 2).sum()) + rows_in * suppressed,
        dimensions=[
            DimensionUtility(
                dimension=d.name,
                levels=list(d.levels),
                rows_at_level=np.bincount(
                    recoding.levels[d.name][kept], minlength=len(d.levels)
                ).tolist(),
            )
            for d in dims
            if d.kind != "fixed"
        ],
        sensitive_withheld={c: int(m.sum()) for c, m in withheld.items()},
    )
