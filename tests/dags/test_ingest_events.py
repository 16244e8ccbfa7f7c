"""`airflow dags test ingest_events` on a real broker: lands, emits asset events with offsets."""

import json
import os
import sqlite3
import subprocess
import sys

from producers.publisher import Outgoing, Publisher
from producers.simulator import SimConfig, Simulator
from tests.dags.test_lineage import check_every_task_names_what_it_read_and_wrote
from visitshare.db import engine_for
from visitshare.landing import manifest
from visitshare.orchestration.airflow_env import airflow_home
from visitshare.quality.validate import read_curated


def test_ingest_dag_lands_both_datasets_and_records_asset_events(kafka_settings, contracts):
    events = list(Simulator(SimConfig(days=1, seed=13, bad_rate=0.05), contracts).events())
    with Publisher(kafka_settings, contracts) as pub:
        published = pub.publish(Outgoing(e.dataset, e.payload) for e in events)

    def dags_test(dag_id="ingest_events"):
        return subprocess.run(
            [sys.executable, "-m", "visitshare.cli", "airflow", "dags", "test", dag_id],
            capture_output=True, text=True, timeout=300, env=dict(os.environ),
        )  # fmt: skip

    out = dags_test()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    landed = {}
    for f in manifest.files(engine_for(kafka_settings)):
        landed[f.topic] = landed.get(f.topic, 0) + f.row_count
    for topic, n in published.delivered.items():
        assert landed[topic] == n
    db = sqlite3.connect(airflow_home(kafka_settings) / "airflow.db")
    rows = db.execute(
        "select a.name, e.extra from asset_event e join asset a on a.id = e.asset_id order by e.id"
    ).fetchall()
    extras = {name: json.loads(extra) for name, extra in rows}
    visits_topic = kafka_settings.topic("visits.outcomes.v1")
    assert set(extras) == {f"raw_{d}" for d in contracts.names()}
    ranges = extras["raw_visit_outcome"]["offset_ranges"][visits_topic]
    assert (
        sum(last - first + 1 for first, last in ranges.values())
        == published.delivered[visits_topic]
    )

    # A second run (e.g. a retry) lands nothing twice.
    again = dags_test()
    assert again.returncode == 0
    assert sum(f.row_count for f in manifest.files(engine_for(kafka_settings))) == sum(
        landed.values()
    )

    # The curate DAG validates what landed: every landed row ends valid or quarantined.
    curate = dags_test("curate_program_data")
    assert curate.returncode == 0, curate.stdout[-3000:] + curate.stderr[-3000:]
    valid = read_curated(kafka_settings, "visit_outcome", "validated").num_rows
    quarantined = read_curated(kafka_settings, "visit_outcome", "quarantine").num_rows
    dlq = kafka_settings.topic("visits.outcomes.v1.dlq")
    assert valid + quarantined == landed[visits_topic] + landed.get(dlq, 0)
    assert valid == published.delivered[visits_topic]

    # ... and publishes a release of what it validated (mapped shards, then finalize).
    from visitshare.release.releases import get_release, read_table

    rel = get_release(kafka_settings, "latest")
    assert rel.id == 1 and rel.notice_sent
    visits = rel.disclosure["datasets"][0]
    assert visits["rows_in"] + visits["rows_held"] == valid  # closed months + open ones
    assert read_table(kafka_settings, rel, "visits").num_rows == rel.tables["visits"]["rows"]
    released = db.execute(
        "select e.extra from asset_event e join asset a on a.id = e.asset_id "
        "where a.name = 'released_shared_tables'"
    ).fetchall()
    assert [json.loads(x)["release_id"] for (x,) in released] == [1]
    mapped = db.execute(
        "select count(*) from task_instance where task_id = 'build_release_shard' "
        "and map_index >= 0 and state = 'success'"
    ).fetchone()[0]
    assert mapped >= 1

    # Every task of the three DAGs told OpenLineage what it read and wrote (names only).
    maintain = dags_test("maintain_tables")
    assert maintain.returncode == 0, maintain.stdout[-3000:] + maintain.stderr[-3000:]
    check_every_task_names_what_it_read_and_wrote(kafka_settings, contracts, events, published)
