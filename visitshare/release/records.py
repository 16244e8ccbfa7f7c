"""Record-level shared rows: published once per partition, when its month closes.

A partition is a dataset's rows of one municipality and one month (of the event time). While
the month is open (until `close_after_days` after its end) its rows are held: they count in
the aggregates, not at record level. When it closes, the partition is recoded
(`visitshare.release.recode`) and published as one *close batch*; the batch is frozen: later
releases carry its rows unchanged, so their generalization never gets finer. Rows that arrive
after the close (late events) are published in *revision batches*, recoded among themselves,
and only in classes of at least k new rows (the others wait for more late rows): comparing any
two releases shows whole batches, each of them k-anonymous, never a single person's row.

Every batch is in a ledger file in the police zone (event ids, partition, the levels each row
was given, where a sensitive column was withheld, whether it was suppressed; one file per
release, shard and kind); the shared rows are made from the validated rows and these ledgers,
so a full rebuild gives exactly the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from visitshare.contracts import Contract
from visitshare.release.hierarchy import Dimension, dimensions, period_at
from visitshare.release.recode import (
    Recoding,
    Utility,
    apply,
    l_diversity,
    recode,
    utility,
    withhold,
)

TOKYO = ZoneInfo("Asia/Tokyo")
EVENT_ID = "event_id"
HELD = "held"  # a ledger row of a revision that waits for more late rows of its partition


class NewBatch(BaseModel):
    """A batch this release adds (committed with the release's row)."""

    dataset: str
    municipality_code: str
    period: str
    kind: str  # close | revision
    rows: int  # rows published by it
    node: dict[str, int]
    path: str  # ledger file, relative to the lake


@dataclass
class RecordRelease:
    table: pa.Table  # every published row of these partitions (earlier batches and new ones)
    new_batches: list[NewBatch]
    utility: Utility
    periods: pa.Array | None = None  # each published row's partition month (YYYY-MM)


def period_of(base: pa.Table, contract: Contract) -> pa.Array:
    """The month (YYYY-MM, Tokyo) of each row's event time, from its shared column."""
    from visitshare.release.anonymize import shared_name

    column = base.column(shared_name(contract.field(contract.event_time)))
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_date(column.type):
        return period_at(column, "month", "day")
    return column


def closed(period: str, as_of: datetime, close_after_days: int) -> bool:
    """Whether a month is closed: its end, plus the grace days, is past (Tokyo time)."""
    year, month = int(period[:4]), int(period[5:7])
    end = date(year + month // 12, month % 12 + 1, 1)
    closes = datetime(end.year, end.month, end.day, tzinfo=TOKYO) + timedelta(days=close_after_days)
    return as_of >= closes


def last_closed_month(as_of: datetime, close_after_days: int) -> str:
    """The latest month that is closed at `as_of` (YYYY-MM)."""
    local = (as_of - timedelta(days=close_after_days)).astimezone(TOKYO)
    first = date(local.year, local.month, 1) - timedelta(days=1)
    return f"{first.year:04d}-{first.month:02d}"


def closed_window(days: int, as_of: datetime, close_after_days: int) -> date:
    """The first day of the `days` days that end with the latest closed month: a window whose
    record-level rows a release publishes at `as_of` (demos, tests, replays)."""
    month = last_closed_month(as_of, close_after_days)
    year, m = int(month[:4]), int(month[5:7])
    return date(year + m // 12, m % 12 + 1, 1) - timedelta(days=days)


class Ledgers:
    """What earlier releases decided for a dataset: every ledger row (event id, municipality,
    period, published, levels, withheld) and the partitions that already have a batch."""

    def __init__(self, rows: pa.Table | None = None, batched: set[tuple[str, str]] | None = None):
        self.rows = rows
        self.batched = batched or set()


def release_records(
    base: pa.Table,
    event_ids: pa.Array | pa.ChunkedArray,
    municipality_only: np.ndarray,
    contract: Contract,
    earlier: Ledgers,
    as_of: datetime,
    write_ledger: Callable[[str, pa.Table], str],
) -> RecordRelease:
    """The published record-level rows of `base`'s partitions, and the batches this release
    adds. `write_ledger(kind, table) -> path` stores the ledger of this release's batches of
    one kind (one file for all their partitions)."""
    d = contract.disclosure
    dims = dimensions(contract)
    sensitive = [c for c in d.sensitive if c in base.column_names]
    n = base.num_rows
    ids = event_ids.combine_chunks() if isinstance(event_ids, pa.ChunkedArray) else event_ids
    munis = base.column("municipality_code").combine_chunks()
    periods = period_of(base, contract)
    # Partitions: one code per (municipality, month), computed on the distinct pairs.
    pairs = pc.dictionary_encode(pc.binary_join_element_wise(munis, periods, "|"))
    partition = pairs.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    keys = [tuple(x.split("|")) for x in pairs.dictionary.to_pylist()]
    is_closed = np.array([closed(k[1], as_of, d.close_after_days) for k in keys], bool)
    has_batch = np.array([k in earlier.batched for k in keys], bool)
    decided = _decided_index(ids, earlier.rows)
    was_held = _held(earlier.rows, decided)
    row_closed = is_closed[partition] if n else np.zeros(0, bool)
    close_rows = np.flatnonzero(row_closed & ~has_batch[partition])
    # Late rows of a partition that has a batch: the new ones, with the ones an earlier
    # revision held back, decided together, but only where a new one arrived: a partition
    # without new late rows keeps its held rows held (a full rebuild decides exactly what the
    # incremental releases decided).
    late = row_closed & has_batch[partition] & ((decided < 0) | was_held)
    fresh = np.zeros(len(keys), bool)
    fresh[partition[late & (decided < 0)]] = True
    late_rows = np.flatnonzero(late & fresh[partition])
    held = int((~row_closed).sum()) + int((late & ~fresh[partition]).sum())
    min_place = np.where(municipality_only, 2, 0).astype(np.int8)
    new_batches: list[NewBatch] = []
    ledgers = [earlier.rows] if earlier.rows is not None else []

    def decide(idx: np.ndarray, kind: str) -> int:
        """Recode rows `idx` as batches of `kind`; returns how many wait (revisions)."""
        if not len(idx):
            return 0
        subset = base.take(pa.array(idx))
        part = partition[idx]
        rec = recode(subset, dims, part, d.k_anonymity, d.suppression_budget, min_place[idx])
        published = apply(subset, dims, rec)
        masks = l_diversity(published, dims, sensitive, d.l_diversity)
        kept = np.flatnonzero(~rec.suppressed)
        withheld = {c: np.zeros(len(idx), bool) for c in sensitive}
        for c, m in masks.items():
            withheld[c][kept[m]] = True
        # A revision's rows in classes smaller than k wait for more late rows: in the ledger
        # as held, decided again with the next late rows of their partition.
        waiting = rec.suppressed if kind == "revision" else np.zeros(len(idx), bool)
        ledger = pa.table(
            {
                EVENT_ID: ids.take(pa.array(idx)),
                "municipality_code": munis.take(pa.array(idx)),
                "period": periods.take(pa.array(idx)),
                "published": pa.array(~rec.suppressed),
                HELD: pa.array(waiting),
                **{f"level_{x.name}": pa.array(rec.levels[x.name], pa.int8()) for x in dims},
                **{f"withheld_{c}": pa.array(withheld[c]) for c in sensitive},
            }
        )
        path = write_ledger(kind, ledger)
        ledgers.append(ledger)
        published_per = np.bincount(part[~rec.suppressed], minlength=len(keys))
        for code in np.unique(part).tolist():
            muni, per = keys[code]
            new_batches.append(
                NewBatch(dataset=contract.name, municipality_code=muni, period=per, kind=kind,
                         rows=int(published_per[code]), node=rec.nodes.get(code, {}), path=path)
            )  # fmt: skip
        return int(waiting.sum())

    decide(close_rows, "close")
    # Late rows are a batch of their own: recoded among themselves (each class ≥ k within the
    # batch, so the rows a comparison with the previous release shows are k-anonymous); the
    # rows that would be suppressed wait for more late rows instead.
    held += decide(late_rows, "revision")
    all_decided = pa.concat_tables(ledgers, promote_options="permissive") if ledgers else None
    result = _materialize(base, ids, dims, sensitive, all_decided, d.k_anonymity, held, periods)
    result.new_batches = new_batches
    return result


def _decided_index(ids: pa.Array, ledger: pa.Table | None) -> np.ndarray:
    """For each event id, its latest row in `ledger` (rows in decision order), or -1."""
    if ledger is None or not ledger.num_rows or not len(ids):
        return np.full(len(ids), -1, np.int64)
    last = ledger.num_rows - 1
    reversed_ids = ledger.column(EVENT_ID).combine_chunks().take(pa.array(np.arange(last, -1, -1)))
    where = pc.fill_null(pc.index_in(ids, value_set=reversed_ids), -1)
    at = where.to_numpy(zero_copy_only=False).astype(np.int64)
    return np.where(at >= 0, last - at, -1)


def _held(ledger: pa.Table | None, at: np.ndarray) -> np.ndarray:
    """Whether each row's latest decision held it back (a revision row waiting for more)."""
    if ledger is None or HELD not in ledger.column_names or not len(at):
        return np.zeros(len(at), bool)
    flags = pc.fill_null(ledger.column(HELD), False).combine_chunks()
    values = flags.take(pa.array(np.where(at >= 0, at, 0))).to_numpy(zero_copy_only=False)
    return (at >= 0) & values.astype(bool)


def _materialize(
    base: pa.Table,
    ids: pa.Array,
    dims: list[Dimension],
    sensitive: list[str],
    decided: pa.Table | None,
    k: int,
    held: int,
    periods: pa.Array,
) -> RecordRelease:
    """The shared rows of `base` as the ledgers decided them (rows without a decision: none)."""
    n = base.num_rows
    at = _decided_index(ids, decided)
    in_ledger = (at >= 0) & ~_held(decided, at)  # held rows are not decided yet
    rows = pa.array(np.where(in_ledger, at, 0))

    def column(name: str, dtype) -> np.ndarray:
        if decided is None or not decided.num_rows or name not in decided.column_names:
            return np.zeros(n, dtype)
        # A row decided before a contract version added a quasi-identifier (or a sensitive
        # column) has no decision for it: it is an earlier version's row, null at every level,
        # so it stays at the finest level, nothing withheld (and is never rewritten).
        known = pc.fill_null(decided.column(name), np.dtype(dtype).type(0).item())
        values = known.take(rows).to_numpy(zero_copy_only=False).astype(dtype)
        return np.where(in_ledger, values, np.zeros(1, dtype))

    published = column("published", bool)
    levels = {d.name: column(f"level_{d.name}", np.int8) for d in dims}
    withheld = {c: column(f"withheld_{c}", bool) for c in sensitive}
    table = apply(base, dims, Recoding(levels, ~published))
    keep = np.flatnonzero(published)
    table = withhold(table, {c: withheld[c][keep] for c in sensitive})
    decided_rows = Recoding({d: v[in_ledger] for d, v in levels.items()}, ~published[in_ledger])
    report = utility(
        int(in_ledger.sum()),
        table,
        dims,
        decided_rows,
        k,
        {c: withheld[c][keep] for c in sensitive},
        held=held,
    )
    return RecordRelease(table, [], report, periods.take(pa.array(keep)))
