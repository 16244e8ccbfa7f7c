"""The hierarchy search, on small tables whose best recoding is known by hand."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from visitshare.contracts import geography
from visitshare.release.hierarchy import Dimension, value_codes
from visitshare.release.recode import Recoding, apply, l_diversity, recode, utility

TOWNS = geography.municipalities()["13104"].towns  # towns 0-7 form group G01, 8-15 G02
PLACE = Dimension("town", "place", ("town", "town_group", "municipality"), "town")
TIME = Dimension("visited_at", "time", ("day", "week", "month"), "visited_date")
FLAG = Dimension("elderly_only", "any", ("exact", "any"), "elderly_only")
MUNI = Dimension("municipality_code", "fixed", ("exact",), "municipality_code")
DIMS = [MUNI, PLACE, TIME, FLAG]


def table(rows: list[tuple[str, date, bool]], muni: str = "13104") -> pa.Table:
    towns = [r[0] for r in rows]
    return pa.table(
        {
            "municipality_code": [muni] * len(rows),
            "town": towns,
            "town_group": [geography.town_group(muni, t) for t in towns],
            "visited_date": pa.array([r[1] for r in rows], pa.date32()),
            "elderly_only": [r[2] for r in rows],
        }
    )


def published(t: pa.Table) -> pa.Table:
    """The table as published at the finest levels (every hierarchy column present)."""
    levels = {d.name: np.zeros(t.num_rows, np.int8) for d in DIMS}
    return apply(t, DIMS, Recoding(levels, np.zeros(t.num_rows, bool)))


def test_the_least_loss_node_that_meets_k_is_chosen():
    """Two days of one ISO week, both flags twice: by day the flag must go (loss 1/3 a row);
    by week the flag stays (loss 1/6 a row); every class then holds two rows."""
    t = table(
        [
            (TOWNS[0], date(2026, 10, 5), True),
            (TOWNS[0], date(2026, 10, 5), False),
            (TOWNS[0], date(2026, 10, 6), True),
            (TOWNS[0], date(2026, 10, 6), False),
        ]
    )
    rec = recode(t, DIMS, np.zeros(4, np.int64), k=2, budget=0.0)
    assert rec.nodes == {0: {"visited_at": 1, "elderly_only": 0}}
    assert rec.levels["town"].tolist() == [0, 0, 0, 0]
    assert not rec.suppressed.any()
    out = apply(t, DIMS, rec)
    assert out.column("visited_date").null_count == 4
    assert set(out.column("visited_week").to_pylist()) == {"2026-W41"}
    assert out.column("elderly_only").to_pylist() == [True, False, True, False]


def test_small_classes_climb_the_place_hierarchy_alone():
    """Two towns of one group with a visit each climb to the group together; the town with
    two visits keeps its name (local recoding: only small classes move)."""
    day = date(2026, 10, 5)
    t = table(
        [
            (TOWNS[0], day, False),
            (TOWNS[1], day, False),
            (TOWNS[8], day, False),
            (TOWNS[8], day, False),
        ]
    )
    rec = recode(t, DIMS, np.zeros(4, np.int64), k=2, budget=0.0)
    assert rec.nodes[0] == {"visited_at": 0, "elderly_only": 0}
    assert rec.levels["town"].tolist() == [1, 1, 0, 0]
    out = apply(t, DIMS, rec)
    assert out.column("town").to_pylist() == [None, None, TOWNS[8], TOWNS[8]]
    assert out.column("town_group").to_pylist() == [
        "13104-G01",
        "13104-G01",
        "13104-G02",
        "13104-G02",
    ]


def test_what_no_generalization_can_hide_is_suppressed_within_the_budget():
    """One visit in its own group and month, alone even at municipality level: suppressed."""
    t = table([(TOWNS[0], date(2026, 10, 5), False)] * 4 + [(TOWNS[8], date(2026, 10, 20), True)])
    rec = recode(t, DIMS, np.zeros(5, np.int64), k=2, budget=0.2)
    assert rec.suppressed.tolist() == [False] * 4 + [True]
    assert rec.nodes[0] == {"visited_at": 0, "elderly_only": 0}  # the rest loses nothing
    u = utility(5, apply(t, DIMS, rec), DIMS, rec, 2, {})
    assert (u.rows_published, u.rows_suppressed, u.k_achieved) == (4, 1, 4)
    assert u.discernibility == 4**2 + 5 * 1


def test_over_budget_a_coarser_node_is_taken():
    """The same rows with no suppression allowed: month and no flag put all five together."""
    t = table([(TOWNS[0], date(2026, 10, 5), False)] * 4 + [(TOWNS[0], date(2026, 10, 20), True)])
    rec = recode(t, DIMS, np.zeros(5, np.int64), k=5, budget=0.0)
    assert not rec.suppressed.any()
    assert rec.nodes[0] == {"visited_at": 2, "elderly_only": 1}


def test_partitions_are_recoded_each_on_its_own():
    busy = [(TOWNS[0], date(2026, 10, 5), False)] * 4
    sparse = [(TOWNS[0], date(2026, 11, 2), False), (TOWNS[0], date(2026, 11, 20), False)]
    t = table(busy + sparse)
    rec = recode(t, DIMS, np.array([0] * 4 + [1] * 2), k=2, budget=0.0)
    assert rec.nodes[0] == {"visited_at": 0, "elderly_only": 0}  # by day: nothing lost
    assert rec.nodes[1]["visited_at"] == 2  # by month: the only way to pair the two


def test_rows_that_must_stay_at_municipality_level_start_there():
    t = table([(TOWNS[0], date(2026, 10, 5), False)] * 3)
    rec = recode(t, DIMS, np.zeros(3, np.int64), k=2, budget=1.0, min_place=np.array([0, 0, 2]))
    assert rec.levels["town"].tolist() == [0, 0, 2]
    assert rec.suppressed.tolist() == [False, False, True]  # alone at municipality level


@pytest.mark.parametrize(
    ("values", "withheld"),
    [
        ([["a"], ["b"], ["c"], ["a"]], False),  # three distinct: shown
        ([["a"], ["a", "b"], ["a"], None], True),  # two distinct known values: withheld
        ([None, None, None, None], True),
    ],
)
def test_l_diversity_withholds_a_sensitive_column_of_a_poor_class(values, withheld):
    t = published(table([(TOWNS[0], date(2026, 10, 5), False)] * 4)).append_column(
        "vulnerabilities", pa.array(values, pa.list_(pa.string()))
    )
    masks = l_diversity(t, DIMS, ["vulnerabilities"], 3)
    assert masks["vulnerabilities"].tolist() == [withheld] * 4


def test_l_diversity_does_not_apply_at_municipality_level():
    t = published(table([(TOWNS[0], date(2026, 10, 5), False)] * 2)).append_column(
        "vulnerabilities", pa.array([["a"], ["a"]], pa.list_(pa.string()))
    )
    t = t.set_column(t.schema.get_field_index("town_group"), "town_group", pa.nulls(2, pa.string()))
    assert not l_diversity(t, DIMS, ["vulnerabilities"], 3)["vulnerabilities"].any()


def test_a_list_is_one_value_in_any_order_for_recoder_and_audit_alike():
    col = pa.array([["a", "b"], ["b", "a"], None, [], ["a"], ["a", "b", "c"]])
    v = value_codes(col)
    assert v[0] == v[1]  # the same set
    assert pd.isna(v[2]) and not pd.isna(v[3])  # unknown is not an empty list
    assert len({v[0], v[3], v[4], v[5]}) == 4
    plain = value_codes(pa.chunked_array([pa.array(["x", None]), pa.array(["x", "y"])]))
    assert plain[0] == plain[2] != plain[3] and pd.isna(plain[1])


@pytest.mark.parametrize(
    ("place_weight", "time_weight", "expected_town", "expected_time"),
    [
        (1.0, 1.0, [1, 1, 1, 1], 0),  # a tie (each costs half a level): the first node, by day
        (3.0, 1.0, [0, 0, 0, 0], 1),  # the place weighs more: towns kept, days become a week
        (1.0, 3.0, [1, 1, 1, 1], 0),  # time weighs more: days kept, towns become their group
    ],
)
def test_contract_weights_decide_which_column_is_generalized(
    place_weight, time_weight, expected_town, expected_time
):
    """Two towns of one group, two days of one week, one visit each pairwise: k = 2 is met by
    grouping the towns or by the week. The weights (in the contract) choose."""
    t = table(
        [
            (TOWNS[0], date(2026, 10, 5), False),
            (TOWNS[0], date(2026, 10, 6), False),
            (TOWNS[1], date(2026, 10, 5), False),
            (TOWNS[1], date(2026, 10, 6), False),
        ]
    )
    place = Dimension("town", "place", PLACE.levels, "town", weight=place_weight)
    time = Dimension("visited_at", "time", TIME.levels, "visited_date", weight=time_weight)
    rec = recode(t, [MUNI, place, time, FLAG], np.zeros(4, np.int64), k=2, budget=0.0)
    assert rec.levels["town"].tolist() == expected_town
    assert rec.nodes[0]["visited_at"] == expected_time
    assert not rec.suppressed.any()
