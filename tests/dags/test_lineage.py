"""OpenLineage: `lineage_env` per transport, and the events of one run of every DAG (checked
by `check_every_task_names_what_it_read_and_wrote`, on the runs of test_ingest_events.py)."""

import json
import sqlite3
from collections import defaultdict

import pytest
import yaml

from visitshare.contracts.model import PiiClass
from visitshare.landing import zones
from visitshare.orchestration import lineage
from visitshare.orchestration.airflow_env import airflow_env, airflow_home
from visitshare.producing.topics import dataset_topics
from visitshare.quality.validate import read_curated
from visitshare.release.releases import get_release
from visitshare.settings import REPO_ROOT, Settings


def test_file_transport_appends_to_one_file_under_var(settings):
    env = lineage.lineage_env(settings)
    transport = json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    path = settings.var / "lineage" / "events.jsonl"
    assert transport == {"type": "file", "log_file_path": str(path), "append": True}
    assert path.parent.is_dir()  # the transport creates no directory
    assert env["AIRFLOW__OPENLINEAGE__NAMESPACE"] == "visit-share"
    assert env["AIRFLOW__OPENLINEAGE__EXTRACTORS"] == lineage.EXTRACTOR
    assert airflow_env(settings)["AIRFLOW__OPENLINEAGE__TRANSPORT"] == json.dumps(transport)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://marquez:5000", {"type": "http", "url": "http://marquez:5000"}),
        (
            "https://lineage.example.org/api/v1/lineage",
            {"type": "http", "url": "https://lineage.example.org", "endpoint": "api/v1/lineage"},
        ),
    ],
)
def test_http_transport_posts_to_the_url(monkeypatch, url, expected):
    monkeypatch.setenv("VISITSHARE_LINEAGE_TRANSPORT", "http")
    monkeypatch.setenv("VISITSHARE_LINEAGE_URL", url)
    env = lineage.lineage_env(Settings())
    assert json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"]) == expected
    assert env["AIRFLOW__OPENLINEAGE__NAMESPACE"] == "visit-share"


def test_http_transport_without_url_is_refused(monkeypatch):
    monkeypatch.setenv("VISITSHARE_LINEAGE_TRANSPORT", "http")
    with pytest.raises(ValueError, match="VISITSHARE_LINEAGE_URL"):
        lineage.lineage_env(Settings())


def test_none_disables_the_provider(monkeypatch):
    monkeypatch.setenv("VISITSHARE_LINEAGE_TRANSPORT", "none")
    settings = Settings()
    assert lineage.lineage_env(settings) == {"AIRFLOW__OPENLINEAGE__DISABLED": "True"}
    assert not (settings.var / "lineage").exists()


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "infra/deploy/helm").glob("*.yaml")))
def test_the_helm_values_configure_what_lineage_env_does(monkeypatch, path):
    monkeypatch.setenv("VISITSHARE_LINEAGE_TRANSPORT", "http")
    monkeypatch.setenv("VISITSHARE_LINEAGE_URL", "http://marquez.lineage.svc:5000")
    env = lineage.lineage_env(Settings())
    config = yaml.safe_load(path.read_text(encoding="utf-8"))["config"]["openlineage"]
    assert {f"AIRFLOW__OPENLINEAGE__{k.upper()}": v for k, v in config.items()} == env


def test_dataset_names_carry_no_credentials(monkeypatch):
    monkeypatch.setenv("VISITSHARE_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("VISITSHARE_LAKE_URL", "s3://visitshare/lake/")
    monkeypatch.setenv("VISITSHARE_DATABASE_URL", "postgresql+psycopg://u:secret@pg:5433/vs?x=1")
    monkeypatch.setenv("VISITSHARE_CATALOG_URL", "postgresql+psycopg://u:secret@pg/cat")
    s = Settings()
    assert lineage.topic(s, "visits.outcomes.v1") == ("kafka://kafka-1:9092", "visits.outcomes.v1")
    assert lineage.lake(s, zones.raw_dir("t")) == ("s3://visitshare", "lake/raw/t")
    assert lineage.sql_table(s, "x") == ("postgres://pg:5433", "vs.public.x")
    assert lineage.iceberg_table(s, "shared.visits") == (
        "iceberg+postgres://pg:5432/cat",
        "shared.visits",
    )


def check_every_task_names_what_it_read_and_wrote(s, contracts, events, published):
    """The lineage of a run of every DAG over `events` (`published` by the Publisher): called
    by tests/dags/test_ingest_events.py after its runs of ingest_events (twice: the second
    lands nothing), curate_program_data and maintain_tables, which this checks too."""
    with_events = set(published.delivered) | {dlq for dlq, _ in published.dead_lettered}
    text = lineage.events_file(s).read_text()
    runs: dict[str, list[dict]] = defaultdict(list)  # task run id → its events
    for line in text.splitlines():
        event = json.loads(line)
        if event["job"]["facets"]["jobType"]["jobType"] == "TASK":
            runs[event["run"]["runId"]].append(event)

    # Every task instance that ran: a START and a COMPLETE of the same run, in that order.
    db = sqlite3.connect(airflow_home(s) / "airflow.db")
    ran = db.execute(
        "select dag_id || '.' || task_id, count(*) from task_instance "
        "where state = 'success' group by 1"
    ).fetchall()
    jobs: dict[str, int] = defaultdict(int)
    for run in runs.values():
        assert [e["eventType"] for e in run] == ["START", "COMPLETE"]
        assert run[0]["inputs"] == run[0]["outputs"] == []  # nothing read yet
        jobs[run[0]["job"]["name"]] += 1
    assert dict(jobs) == dict(ran)
    done: dict[str, dict] = {}  # each job's first COMPLETE (a later ingest run landed nothing)
    for run in runs.values():
        done.setdefault(run[1]["job"]["name"], run[1])

    def names(event, key):
        return {(d["namespace"], d["name"]) for d in event[key]}

    def lake(path):
        return tuple(lineage.lake(s, path))

    for dataset in contracts.names():
        topics = [t for t in dataset_topics(s, contracts.get(dataset)) if t in with_events]
        land = done[f"ingest_events.land_{dataset}"]
        assert names(land, "inputs") == {tuple(lineage.topic(s, t)) for t in topics}
        assert names(land, "outputs") == {lake(zones.raw_dir(t)) for t in topics}
        validate = done[f"curate_program_data.validate_{dataset}"]
        assert names(validate, "inputs") == {lake(zones.raw_dir(t)) for t in topics}
        written = {
            lake(where(dataset))
            for zone, where in (
                ("validated", zones.validated_dir),
                ("quarantine", zones.quarantine_dir),
            )
            if read_curated(s, dataset, zone) is not None
        }
        assert names(validate, "outputs") == written
    assert names(done["curate_program_data.validate_visit_outcome"], "outputs") == {
        lake(zones.validated_dir("visit_outcome")),
        lake(zones.quarantine_dir("visit_outcome")),
    }

    release = get_release(s, "latest")
    iceberg = {tuple(lineage.iceberg_table(s, t["iceberg"])) for t in release.tables.values()}
    publish = done["curate_program_data.finalize_release"]
    assert names(publish, "outputs") >= iceberg
    assert lineage.sql_table(s, "shared_outcomes_town_month").namespace in {
        d["namespace"] for d in publish["outputs"]
    }
    staged = names(done["curate_program_data.build_release_shard"], "outputs")
    assert staged == names(publish, "inputs")
    assert all(name.startswith(f"{s.lake}/{zones.Zone.STAGING}/") for _, name in staged)

    maintained = names(done["maintain_tables.maintain"], "inputs")
    assert maintained >= iceberg | {lake(zones.validated_dir("visit_outcome"))}

    # Names only: no value of an identifying or free-text field of any event.
    personal = {
        str(e.payload.get(f.name))
        for e in events
        if isinstance(e.payload, dict)
        for f in contracts.get(e.dataset).fields_by_pii(
            PiiClass.DIRECT_IDENTIFIER, PiiClass.FREE_TEXT
        )
        if isinstance(e.payload.get(f.name), str) and len(e.payload[f.name]) >= 5
    }
    assert len(personal) > 100
    assert not [v for v in personal if v in text]
