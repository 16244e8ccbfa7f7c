"""Schema evolution on real stores: visit_outcome v1 and v2 events landed and validated side by
side, published in one release; a release made before v2 existed still reads as it was.

Input: the raw zone, written with landing's own code (`tests.helpers.land_values`, no broker).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from producers.simulator import CORE_DATASETS, SimConfig, Simulator
from tests.helpers import land_values
from visitshare.access import sharing
from visitshare.access.export import pull
from visitshare.contracts import ContractRegistry
from visitshare.quality.validate import read_curated, validate
from visitshare.release import shared
from visitshare.release.hierarchy import dimensions
from visitshare.release.publish import publish
from visitshare.release.recode import qi_columns
from visitshare.release.records import closed_window
from visitshare.release.releases import get_release, read_table
from visitshare.settings import REPO_ROOT, Settings

NEW = ("preferred_language", "interpreter_used")
SHARED_NEW = (*NEW, "preferred_language_category")


@pytest.fixture(autouse=True)
def _one_publish_process(monkeypatch):
    monkeypatch.setenv("VISITSHARE_PUBLISH_WORKERS", "1")


def _v1_only(tmp_path: Path) -> Path:
    """The project's contracts as they were before visit_outcome v2."""
    folder = tmp_path / "schemas-v1"
    shutil.copytree(REPO_ROOT / "schemas", folder)
    (folder / "visit_outcome.v2.yaml").unlink()
    return folder


def _simulate(settings: Settings, registry, seed: int, share: float, days: int = 3) -> list:
    grace = registry.get("visit_outcome").disclosure.close_after_days
    config = SimConfig(
        days=days,
        seed=seed,
        start=closed_window(days, settings.clock.now(), grace),
        datasets=CORE_DATASETS,
        visit_v2_share=share,
    )
    return list(Simulator(config, registry, clock=settings.clock).events())


def _land(settings: Settings, registry, events: list, datasets=CORE_DATASETS) -> None:
    for dataset in datasets:
        topic = settings.topic(registry.get(dataset).topic)
        land_values(settings, topic, [e.payload for e in events if e.dataset == dataset])


def _check_k(settings, registry, release) -> None:
    contract = registry.get("visit_outcome")
    data = read_table(settings, release, "visits")
    qi = qi_columns(dimensions(contract))
    assert set(SHARED_NEW) <= set(qi)
    sizes = Counter(tuple(r[c] for c in qi) for r in data.select(qi).to_pylist())
    assert min(sizes.values()) >= contract.disclosure.k_anonymity


def test_v1_and_v2_visits_coexist_in_one_release(settings, contracts):
    events = _simulate(settings, contracts, seed=21, share=0.5)
    visits = [e.payload for e in events if e.dataset == "visit_outcome"]
    v2 = [v for v in visits if v["schema_version"] == 2]
    assert 0.4 < len(v2) / len(visits) < 0.6 and sum("preferred_language" in v for v in v2) > 50
    # A v1 event carrying a v2 field, and an event of a version with no contract.
    odd = [
        {**visits[0], "event_id": "5f0c4e0e-0000-4000-8000-000000000001", "interpreter_used": True},
        {**visits[1], "event_id": "5f0c4e0e-0000-4000-8000-000000000002", "schema_version": 3},
    ]
    _land(settings, contracts, events)
    land_values(settings, settings.topic("visits.outcomes.v1"), odd)
    for dataset in CORE_DATASETS:
        validate(settings, dataset)

    # The validated zone (police only): each row as its event said, in the latest schema.
    valid = read_curated(settings, "visit_outcome", "validated")
    rows = {r["event_id"]: r for r in valid.to_pylist()}
    assert len(rows) == len(visits)
    for v in visits:
        row = rows[v["event_id"]]
        assert row["schema_version"] == v["schema_version"]
        for name in NEW:
            assert row[name] == v.get(name)  # v1 rows: null
    quarantine = read_curated(settings, "visit_outcome", "quarantine").to_pylist()
    assert sorted(r["reasons"] for r in quarantine) == [
        ["unknown_field"],
        ["wrong_schema_version:schema_version"],
    ]

    published = publish(settings)
    assert published is not None and published.report.result == "passed"
    release = get_release(settings, published.release_id)
    data = read_table(settings, release, "visits")
    assert set(SHARED_NEW) <= set(data.column_names)
    shown = data.select(list(SHARED_NEW)).to_pylist()
    languages = {r["preferred_language"] for r in shown} - {None}
    categories = {r["preferred_language_category"] for r in shown} - {None}
    # Generalized as the contract says: the language, Japanese or another language, or nothing.
    assert languages and languages <= set(contracts.get("visit_outcome").field(NEW[0]).enum)
    assert categories <= {"ja", "other_language"} and categories
    with_language = sum(r["preferred_language_category"] is not None for r in shown)
    assert 0 < with_language <= sum("preferred_language" in v for v in v2)
    assert sum(r["preferred_language_category"] is None for r in shown) > len(v2) / 2
    _check_k(settings, contracts, release)
    # Partners see the new columns: Delta Sharing's metadata and a pull.
    spec = shared.table(settings, "visits")
    schema = sharing.metadata(settings, spec, release)["schemaString"]
    assert all(f'"{c}"' in schema for c in SHARED_NEW)
    _, files = pull(settings, "shinjuku", release.id, "parquet", settings.var / "exports")
    assert set(SHARED_NEW) <= set(pq.read_schema(files["visits"][0]).names)


# Regression: the rows release 1 decided have no level for v2's quasi-identifiers (their ledger
# predates them): read as null, they were cast to garbage levels with a RuntimeWarning.
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_release_made_before_v2_still_reads(tmp_path, isolated_env):
    before = Settings(contracts_dir=_v1_only(tmp_path))
    old_registry = ContractRegistry.load(before.contracts_dir)
    assert [c.id for c in old_registry.versions("visit_outcome")] == ["visit_outcome.v1"]
    events = _simulate(before, old_registry, seed=31, share=0.0)
    _land(before, old_registry, events)
    for dataset in CORE_DATASETS:
        validate(before, dataset)
    first = publish(before)
    assert first is not None
    # Landed before v2 reached landing, validated after: a v2 event among v1 ones (a newer
    # producer ahead of the pipeline's contracts). Landing decoded only v1's fields of it.
    registry = ContractRegistry.load(REPO_ROOT / "schemas")
    late = _simulate(before, registry, seed=32, share=1.0, days=1)
    late_v2 = next(
        e.payload
        for e in late
        if e.dataset == "visit_outcome" and "preferred_language" in e.payload
    )
    land_values(before, before.topic("visits.outcomes.v1"), [late_v2])
    old_raw = [p for p in (before.lake / "raw").rglob("*.parquet") if "visits.outcomes" in str(p)]
    assert all("preferred_language" not in pq.read_schema(p).names for p in old_raw)

    # The contracts now hold v2: v1 and v2 visits land, validate and publish together.
    after = Settings(contracts_dir=REPO_ROOT / "schemas")
    mixed = _simulate(after, registry, seed=33, share=0.5)
    _land(after, registry, mixed)
    for dataset in CORE_DATASETS:
        validate(after, dataset)
    valid = {
        r["event_id"]: r for r in read_curated(after, "visit_outcome", "validated").to_pylist()
    }
    # The late v2 event kept its new fields (decoded again from its bytes), old v1 rows read
    # as null in the new columns, the new rows as they were sent.
    assert valid[late_v2["event_id"]]["preferred_language"] == late_v2["preferred_language"]
    for e in events + [e for e in mixed if e.dataset == "visit_outcome"]:
        if e.dataset == "visit_outcome":
            for name in NEW:
                assert valid[e.payload["event_id"]][name] == e.payload.get(name)
    second = publish(after)
    assert second is not None and second.release_id == first.release_id + 1
    assert second.report.result == "passed"

    # The old release reads as it was: its snapshot's schema, without the new columns.
    old, new = get_release(after, first.release_id), get_release(after, second.release_id)
    old_visits, new_visits = read_table(after, old, "visits"), read_table(after, new, "visits")
    assert not set(SHARED_NEW) & set(old_visits.column_names)
    assert old_visits.num_rows == old.tables["visits"]["rows"] > 0
    assert set(SHARED_NEW) <= set(new_visits.column_names)
    assert new_visits.num_rows == new.tables["visits"]["rows"] > old_visits.num_rows
    spec = shared.table(after, "visits")
    assert "preferred_language" not in sharing.metadata(after, spec, old)["schemaString"]
    assert "preferred_language" in sharing.metadata(after, spec, new)["schemaString"]
    _, files = pull(after, "shinjuku", first.release_id, "parquet", after.var / "exports")
    assert not set(SHARED_NEW) & set(pq.read_schema(files["visits"][0]).names)
    _check_k(after, registry, new)
    # A new contract set: the second release is a full one.
    assert new.full and set(new.contracts) == set(old.contracts) - {"visit_outcome.v1"} | {
        "visit_outcome.v2"
    }
