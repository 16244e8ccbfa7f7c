"""The content checksum compaction verifies with: order-independent, sensitive to any value."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa

from visitshare.quality.compact import content_checksum


def _table() -> pa.Table:
    return pa.table(
        {
            "id": pa.array(["a", "b", None, "d"]),
            "n": pa.array([1, None, 3, 2**62], pa.int64()),
            "x": pa.array([0.5, 1.5, None, -0.0]),
            "at": pa.array(
                [datetime(2026, 1, i + 1, tzinfo=UTC) for i in range(3)] + [None],
                pa.timestamp("us", tz="Asia/Tokyo"),
            ),
            "day": pa.array([date(2026, 1, 1), None, date(2026, 1, 3), date(2026, 1, 4)]),
            "flag": pa.array([True, False, None, True]),
            "items": pa.array([["x", "y"], [], None, ["z"]], pa.list_(pa.string())),
        }
    )


def test_the_same_rows_in_any_order_and_split_have_the_same_checksum():
    t = _table()
    shuffled = t.take(pa.array([3, 1, 0, 2]))
    split = pa.concat_tables([t.slice(2), t.slice(0, 2)])
    assert content_checksum(t) == content_checksum(shuffled) == content_checksum(split)


def test_any_changed_value_missing_or_repeated_row_changes_it():
    t = _table()
    base = content_checksum(t)
    assert content_checksum(t.slice(1)) != base
    assert content_checksum(pa.concat_tables([t, t.slice(0, 1)])) != base
    for name in t.column_names:
        column = t.column(name).to_pylist()
        column[0], column[1] = column[1], column[0]  # two rows swap one value
        changed = t.set_column(
            t.column_names.index(name), name, pa.array(column, t.schema.field(name).type)
        )
        assert content_checksum(changed) != base, name
    nulled = t.set_column(0, "id", pa.array([None, "b", None, "d"]))
    assert content_checksum(nulled) != base
    empty_string = t.set_column(0, "id", pa.array(["a", "b", "", "d"]))
    assert content_checksum(empty_string) != base  # a null is not an empty string
