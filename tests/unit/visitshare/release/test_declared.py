"""Outcome tables declared in files: loading, true values over police-zone rows, protection
and derived values (`visitshare.release.declared`)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from visitshare.contracts import ContractError, ContractRegistry, geography
from visitshare.quality.validate import validated_schema
from visitshare.release import declared
from visitshare.release.aggregates import AggregateReport, protect
from visitshare.settings import REPO_ROOT

DEFINITION = {
    "name": "follow_ups_town_month",
    "description": "Follow-ups asked for and workshop invitations, per town and month.",
    "level": "town",
    "grain": "town_month",
    "inputs": {"visit_outcome": "visited_at"},
    "sql": """
        SELECT municipality_code, town, month,
               count(*) FILTER (WHERE outcome = 'completed') AS visits_completed,
               count(*) FILTER (WHERE follow_up_requested) AS follow_ups,
               count(*) FILTER (WHERE workshop_invited) AS invited,
               coalesce(sum(satisfaction - 1), 0) AS _points,
               count(satisfaction) AS _answers,
               count(*) FILTER (WHERE satisfaction <= 2) AS low,
               count(*) FILTER (WHERE satisfaction >= 3) AS high
        FROM visit_outcome GROUP BY ALL""",
    "counts": [
        {"name": "visit", "columns": ["visits_completed", "follow_ups", "invited"]},
        {"name": "satisfaction", "columns": ["_points", "_answers"], "l2": 4.2},
        {"name": "satisfaction_band", "columns": ["low", "high"]},
    ],
    "ratios": {"follow_up_rate": ["follow_ups", "visits_completed", 100]},
    "means": {"satisfaction_mean": ["_points", "_answers", 1, 5]},
    "medians": {"satisfaction_median": {"low": 1.5, "high": 4}},
}


@pytest.fixture
def contracts_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "schemas"
    shutil.copytree(REPO_ROOT / "schemas", folder)
    shutil.rmtree(folder / "outcomes", ignore_errors=True)  # only the test's own declarations
    (folder / "outcomes").mkdir()
    return folder


def _write(folder: Path, definition: dict) -> None:
    path = folder / "outcomes" / f"{definition['name']}.yaml"
    path.write_text(yaml.safe_dump(definition, allow_unicode=True), encoding="utf-8")


def _datasets(folder: Path) -> dict:
    return {c.name: c for c in ContractRegistry.load(folder)}


def _visits(contract, rows: list[dict]) -> pa.Table:
    schema = validated_schema(contract)
    full = [{f.name: r.get(f.name) for f in schema} for r in rows]
    return pa.Table.from_pylist(full, schema=schema)


def test_a_declaration_is_loaded_and_checked(contracts_dir):
    _write(contracts_dir, DEFINITION)
    (d,) = declared.load(contracts_dir, _datasets(contracts_dir))
    assert d.keys == ["municipality_code", "town", "month"]
    assert d.counts[0].sensitivity == pytest.approx(3**0.5)
    for broken, message in (
        ({"inputs": {"no_such_dataset": "at"}}, "no contract"),
        ({"inputs": {"visit_outcome": "no_such_field"}}, "no field"),
        ({"ratios": {"r": ["follow_ups", "not_counted"]}}, "not counts"),
        ({"counts": [{"name": "x", "columns": ["a", "a"]}]}, "two count families"),
        (
            {"counts": [{"name": "x", "columns": ["a"]}, {"name": "x", "columns": ["b"]}]},
            "same name",
        ),
        ({"level": "everyone"}, "level"),
        ({"extra": 1}, "extra"),
        ({"counts": [{"name": "x", "columns": ["bad name"]}]}, "pattern"),
    ):
        _write(contracts_dir, DEFINITION | broken)
        with pytest.raises(ContractError) as err:
            declared.load(contracts_dir, _datasets(contracts_dir))
        assert message in str(err.value), broken


def test_true_values_cover_every_town_and_protection_derives_from_noisy_counts(contracts_dir):
    _write(contracts_dir, DEFINITION)
    datasets = _datasets(contracts_dir)
    (d,) = declared.load(contracts_dir, datasets)
    muni = "13104"
    towns = geography.municipalities()[muni].towns
    at = datetime(2030, 3, 10, 10, tzinfo=UTC)
    rows = [
        {
            "municipality_code": muni,
            "town": towns[i % 3],
            "visited_at": at + timedelta(days=i % 2 * 30),
            "outcome": "completed",
            "follow_up_requested": i % 4 == 0,
            "workshop_invited": i % 5 == 0,
            "satisfaction": 1 + i % 5,
        }
        for i in range(60)
    ]
    true = declared.true_values(d, {"visit_outcome": _visits(datasets["visit_outcome"], rows)})
    months = sorted(set(true.column("month").to_pylist()))
    assert months == ["2030-03", "2030-04"]
    assert true.num_rows == 2 * len(towns)  # every town of the municipality, each month
    assert sum(true.column("follow_ups").to_pylist()) == 15
    assert sum(true.column("_answers").to_pylist()) == 60
    empty = [r for r in true.to_pylist() if r["town"] not in towns[:3]]
    assert empty and all(r["visits_completed"] == 0 for r in empty)

    policy = d.policy_contract(datasets).disclosure.aggregates
    report = AggregateReport(table=d.name, mode="dp")
    values, rho = protect(declared.table_spec(d), true, policy, 10, 1.0, None, report)
    assert rho == pytest.approx(policy.rho_per_release)
    assert set(report.moe95) == {"visit", "satisfaction", "satisfaction_band"}
    published = values.drop_columns([c for c in values.column_names if c.startswith("_")])
    assert {"follow_up_rate", "satisfaction_mean", "satisfaction_median"} <= set(
        published.column_names
    )
    noisy = np.array(values.column("follow_ups").to_pylist())
    assert not np.array_equal(noisy, np.array(true.column("follow_ups").to_pylist()))
    # A rate exists only where its denominator is clear of the noise.
    moe = values.column("visit_counts_moe95")[0].as_py()
    for r in values.to_pylist():
        if r["follow_up_rate"] is not None:
            assert r["visits_completed"] > 0
            assert r["follow_up_rate"] == pytest.approx(
                100 * r["follow_ups"] / r["visits_completed"]
            )
        if r["visits_completed"] <= 0:
            assert r["follow_up_rate"] is None
    assert moe > 0


def test_a_rollup_sums_the_town_rows_per_municipality(contracts_dir):
    _write(contracts_dir, DEFINITION | {"rollup": "follow_ups_municipality_month"})
    datasets = _datasets(contracts_dir)
    town, muni = declared.load(contracts_dir, datasets)
    assert (muni.name, muni.grain, muni.level) == (
        "follow_ups_municipality_month",
        "municipality_month",
        "municipality",
    )
    towns = geography.municipalities()["13104"].towns
    at = datetime(2030, 3, 10, 10, tzinfo=UTC)
    rows = [
        {"municipality_code": "13104", "town": towns[i % 4], "visited_at": at,
         "outcome": "completed", "follow_up_requested": i % 2 == 0, "satisfaction": 3}
        for i in range(30)
    ]  # fmt: skip
    inputs = {"visit_outcome": _visits(datasets["visit_outcome"], rows)}
    by_town = declared.true_values(town, inputs)
    total = declared.true_values(muni, inputs)
    assert total.num_rows == 1 and total.column_names[:2] == ["municipality_code", "month"]
    for c in town.count_columns:
        assert total.column(c)[0].as_py() == sum(by_town.column(c).to_pylist()), c
    _write(contracts_dir, DEFINITION | {"rollup": DEFINITION["name"]})
    with pytest.raises(ContractError, match="share a name"):
        declared.load(contracts_dir, datasets)


def test_threshold_mode_suppresses_small_cells_in_declared_families(contracts_dir):
    _write(contracts_dir, DEFINITION)
    datasets = _datasets(contracts_dir)
    (d,) = declared.load(contracts_dir, datasets)
    true = pa.table(
        {
            "municipality_code": ["13104"] * 3,
            "town": ["a", "b", "c"],
            "month": ["2030-03"] * 3,
            "visits_completed": [40, 3, 25],
            "follow_ups": [12, 1, 0],
            "invited": [5, 2, 30],
            "_points": [80, 6, 40],
            "_answers": [40, 3, 25],
            "low": [10, 1, 5],
            "high": [30, 2, 20],
        }
    )
    policy = d.policy_contract(datasets).disclosure.aggregates.model_copy(
        update={"mode": "threshold"}
    )
    report = AggregateReport(table=d.name, mode="threshold")
    values, _ = protect(declared.table_spec(d), true, policy, 10, 1.0, None, report)
    rows = values.to_pylist()
    for r, t in zip(rows, true.to_pylist(), strict=True):
        for c in ("visits_completed", "follow_ups", "invited", "low", "high"):
            if 0 < t[c] < 10:
                assert r[c] is None, (c, t[c])  # primary suppression
    assert report.primary > 0
    assert rows[1]["satisfaction_mean"] is None  # 3 answers: under the threshold
    assert rows[0]["satisfaction_mean"] == pytest.approx(80 / 40 + 1)
    assert rows[0]["satisfaction_median"] == 4  # 30 of 40 answers are high


def test_the_median_comes_from_the_bucket_of_the_middle_record():
    d = declared.OutcomeDefinition.model_validate(DEFINITION)
    t = pa.table({"low": [10, 30, None, 2], "high": [30, 10, 5, 1]})
    med = declared._median(t, d.medians["satisfaction_median"], {"low": 10, "high": 10})
    assert med.to_pylist() == [4.0, 1.5, None, None]  # withheld count; fewer than a cell


def test_a_shard_without_rows_for_a_declared_table_publishes_it_empty(contracts_dir):
    from visitshare.release.aggregates import ValuesStore, release_aggregates

    _write(contracts_dir, DEFINITION)
    datasets = _datasets(contracts_dir)
    (d,) = declared.load(contracts_dir, datasets)
    true = declared.true_values(d, declared.empty_inputs(d, datasets))
    assert true.num_rows == 0 and set(d.keys) <= set(true.column_names)
    policy = d.policy_contract(datasets).disclosure.aggregates
    table, refreshes, report, stored = release_aggregates(
        declared.table_spec(d), true, policy, 10, 1.0, {},
        datetime(2030, 4, 1, tzinfo=UTC), 3, ValuesStore(lambda _: pa.table({})), "unused",
    )  # fmt: skip
    assert table.num_rows == 0 and refreshes == [] and stored is None
    assert (report.cells, report.partitions_refreshed) == (0, 0)


def test_a_history_table_has_one_row_per_town_its_sql_returns(contracts_dir):
    definition = {
        "name": "first_visit_follow_ups_town",
        "description": "Follow-ups after each town's first completed visit.",
        "level": "town",
        "grain": "town",
        "inputs": {"visit_outcome": "visited_at"},
        "columns": {"visit_outcome": ["municipality_code", "town", "visited_at", "outcome",
                                      "follow_up_requested"]},
        "sql": """
            WITH first AS (SELECT municipality_code, town, min(visited_at) AS first_visit
                           FROM visit_outcome WHERE outcome = 'completed' GROUP BY ALL)
            SELECT municipality_code, town,
                   count(*) FILTER (WHERE follow_up_requested AND visited_at > first_visit)
                     AS follow_ups_after
            FROM first JOIN visit_outcome USING (municipality_code, town) GROUP BY ALL""",
        "counts": [{"name": "visit", "columns": ["follow_ups_after"]}],
    }  # fmt: skip
    _write(contracts_dir, definition)
    datasets = _datasets(contracts_dir)
    (d,) = declared.load(contracts_dir, datasets)
    assert d.spans_history and d.keys == ["municipality_code", "town"]
    assert declared.table_spec(d).by_month is False
    towns = geography.municipalities()["13104"].towns
    at = datetime(2030, 3, 10, 10, tzinfo=UTC)
    rows = [
        {"municipality_code": "13104", "town": towns[i % 2], "visited_at": at + timedelta(days=i),
         "outcome": "completed", "follow_up_requested": True}
        for i in range(10)
    ]  # fmt: skip
    inputs = declared.empty_inputs(d, datasets)
    assert inputs["visit_outcome"].column_names == definition["columns"]["visit_outcome"]
    full = _visits(datasets["visit_outcome"], rows)
    true = declared.true_values(
        d, {"visit_outcome": full.select(inputs["visit_outcome"].column_names)}
    )
    assert sorted(true.column("town").to_pylist()) == sorted(towns[:2])  # only its towns
    assert sum(true.column("follow_ups_after").to_pylist()) == 8  # all but each first visit
    _write(contracts_dir, definition | {"columns": {"visit_outcome": ["no_such_field"]}})
    with pytest.raises(ContractError, match="no field"):
        declared.load(contracts_dir, datasets)


def test_derived_values_stay_within_what_they_can_be():
    d = declared.OutcomeDefinition.model_validate(
        DEFINITION | {"ratios": {"share": ["follow_ups", "visits_completed", 1, 1]}}
    )
    t = pa.table(
        {
            "visits_completed": [40, 40, 40],
            "follow_ups": [60, -5, 20],  # noise: more than the whole, below zero
            "_points": [200, -30, 80],
            "_answers": [40, 40, 40],
            "low": [1, 1, 1],
            "high": [1, 1, 1],
        }
    )
    out = declared.derive(d, t, {})
    assert out.column("share").to_pylist() == [1.0, 0.0, 0.5]
    assert out.column("satisfaction_mean").to_pylist() == [5.0, 1.0, 3.0]


def test_a_rollup_protects_town_cells_along_the_column_and_the_audit_checks_it(contracts_dir):
    import dataclasses

    from visitshare.release import audit
    from visitshare.release.aggregates import public

    _write(contracts_dir, DEFINITION | {"rollup": "follow_ups_municipality_month"})
    datasets = _datasets(contracts_dir)
    town, muni = declared.load(contracts_dir, datasets)
    counts = [c for c in town.count_columns if not c.startswith("_")]
    true = pa.table(
        {
            "municipality_code": ["13104"] * 3,
            "town": ["a", "b", "c"],
            "month": ["2030-03"] * 3,
            "visits_completed": [40, 30, 25],
            "follow_ups": [12, 3, 20],  # one small cell: primary suppression
            "invited": [15, 12, 30],
            "_points": [80, 60, 40],
            "_answers": [40, 30, 25],
            "low": [10, 12, 15],
            "high": [30, 18, 10],
        }
    )
    rolled = pa.table(
        {"municipality_code": ["13104"], "month": ["2030-03"]}
        | {c: [sum(true.column(c).to_pylist())] for c in town.count_columns}
    )
    policy = town.policy_contract(datasets).disclosure.aggregates.model_copy(
        update={"mode": "threshold"}
    )

    def published(spec) -> dict[str, pa.Table]:
        report = AggregateReport(table=town.name, mode="threshold")
        values, _ = protect(spec, true, policy, 10, 1.0, None, report)
        totals, _ = protect(declared.table_spec(muni), rolled, policy, 10, 1.0, None, report)
        return {town.name: public(values), muni.name: public(totals)}

    pairs = [(town.name, muni.name, counts)]
    safe = audit.interval_bounds(published(declared.table_spec(town)), pairs)
    assert safe.result == "passed" and safe.detail.startswith("0 of ")
    # Without the column protection, the lone cell is the total minus the others: found.
    naive = dataclasses.replace(declared.table_spec(town), column_totals=False)
    exposed = audit.interval_bounds(published(naive), pairs)
    assert exposed.result == "failed"


def test_the_differencing_check_covers_declared_tables(contracts_dir):
    from visitshare.release import audit

    _write(contracts_dir, DEFINITION)
    (d,) = declared.load(contracts_dir, _datasets(contracts_dir))
    row = {"municipality_code": "13104", "town": "a", "month": "2030-03", "follow_ups": 20}
    old = {d.name: pa.Table.from_pylist([row])}
    moved = {d.name: pa.Table.from_pylist([row | {"follow_ups": 22}])}  # exact, by 2 < 10
    checks = audit.differencing(moved, old, {}, 10, {d.name: declared.table_spec(d)})
    (check,) = [c for c in checks if c.name == f"{d.name}: differencing"]
    assert check.result == "failed" and check.detail.startswith("1 published cell")
    assert not [c for c in audit.differencing(moved, old, {}, 10) if d.name in c.name]
