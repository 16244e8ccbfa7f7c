"""Releases on real stores: Iceberg (pyiceberg SQL catalog on SQLite), SQL tables, the lake.

Input is a simulated validated zone (landing's and validation's own code, no broker);
the notice test uses the real broker.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from consumers.partner_reader import PartnerReader
from tests.helpers import first_landed_schema, personal_values, read_topic, validated_zone
from visitshare.access.errors import PartnerError
from visitshare.access.export import pull
from visitshare.db import engine_for
from visitshare.db.tables import release_files
from visitshare.db.tables import releases as release_table
from visitshare.release import shared
from visitshare.release.build import build_shard
from visitshare.release.errors import PseudonymKeyError, ReleaseError
from visitshare.release.hierarchy import dimensions
from visitshare.release.plan import plan as plan_release
from visitshare.release.publish import finalize, publish
from visitshare.release.recode import qi_columns
from visitshare.release.releases import get_release, read_table
from visitshare.release.retention import expire_releases
from visitshare.settings import Settings


@pytest.fixture(autouse=True)
def _one_publish_process(monkeypatch):
    """Shards built in-process (the process pool is exercised by `make run` and its e2e test)."""
    monkeypatch.setenv("VISITSHARE_PUBLISH_WORKERS", "1")


def _sql_rows(settings: Settings, table: str, release_id: int | None = None) -> int:
    with engine_for(settings).connect() as conn:
        q = f"select count(*) from {table}"
        if release_id is not None:  # the rows release N shows
            n = int(release_id)
            q += f" where release_id <= {n} and (superseded_by is null or superseded_by > {n})"
        return conn.exec_driver_sql(q).scalar()


def _texts_under(path) -> dict[str, str]:
    """Every file under `path` as text; Parquet files as the text of all their values."""
    out = {}
    for f in path.rglob("*"):
        if not f.is_file():
            continue
        if f.suffix == ".parquet":
            out[str(f)] = json.dumps(pq.read_table(f).to_pylist(), ensure_ascii=False, default=str)
        else:
            out[str(f)] = f.read_bytes().decode("utf-8", errors="ignore")
    return out


def test_release_has_no_personal_data_and_is_k_anonymous(settings, contracts):
    events = validated_zone(settings, contracts, days=4, seed=11)
    secret = personal_values(events, contracts)
    assert len(secret) > 1000
    published = publish(settings)
    assert published is not None and published.release_id == 1
    assert published.report.result == "passed"
    pulled = {
        p: pull(settings, p, "latest", "csv", settings.var / "exports")
        for p in ("police", "shinjuku")
    }
    assert pulled["police"][0] == 1

    texts = _texts_under(settings.lake / "shared")  # Iceberg data and metadata files
    texts |= _texts_under(settings.reports_dir / "releases")
    texts |= _texts_under(settings.var / "exports")
    with engine_for(settings).connect() as conn:
        for spec in shared.tables(settings):
            rows = conn.execute(sa.text(f"select * from {spec.sql}")) if spec.sql else []
            texts[f"sql:{spec.sql}"] = json.dumps(
                [list(r) for r in rows], ensure_ascii=False, default=str
            )
        texts["releases"] = json.dumps(
            [list(r) for r in conn.execute(sa.select(release_table))], default=str
        )
    assert any("/data/" in p and p.endswith(".parquet") for p in texts)
    leaks = [(p, s) for p, text in texts.items() for s in secret if s in text]
    assert leaks == []

    # k recomputed from the published Iceberg tables (pyiceberg, the release's snapshot)
    rel = get_release(settings, "latest")
    for name, dataset in (("visits", "visit_outcome"), ("incidents", "incident_report")):
        contract = contracts.get(dataset)
        data = read_table(settings, rel, name)
        assert data.num_rows == rel.tables[name]["rows"] > 0
        qi = qi_columns(dimensions(contract))
        sizes = Counter(tuple(r[c] for c in qi) for r in data.select(qi).to_pylist())
        assert min(sizes.values()) >= contract.disclosure.k_anonymity
    # sensitive crimes never carry a town in shared data
    incidents = read_table(settings, rel, "incidents").to_pylist()
    sensitive = set(contracts.get("incident_report").field("crime_type").sensitive_values)
    assert [r for r in incidents if r["crime_type"] in sensitive and r["town"] is not None] == []


def test_parquet_reads_with_duckdb_and_partners_see_their_scope(settings, contracts):
    validated_zone(settings, contracts, days=3, seed=12)
    published = publish(settings)
    rel = get_release(settings, published.release_id)
    # Iceberg data files of the release's snapshot, read by another engine
    tbl = shared.catalog(settings).load_table("shared.visits")
    files = [
        t.file.file_path.removeprefix("file://")
        for t in tbl.scan(snapshot_id=rel.tables["visits"]["snapshot_id"]).plan_files()
    ]
    assert len(files) > 1  # partitioned by municipality and month
    n = duckdb.sql(f"select count(*) from read_parquet({files!r})").fetchall()[0][0]
    assert n == rel.tables["visits"]["rows"]

    rid, ward = pull(settings, "shinjuku", "latest", "parquet", settings.var / "exports")
    _, police = pull(settings, "police", rid, "parquet", settings.var / "exports")
    assert "repeat_victimization" not in ward and "repeat_victimization" in police
    for name in ("visits", "incidents", "outcomes_town_month", "before_after_town"):
        codes = duckdb.sql(
            f"select distinct municipality_code from read_parquet('{ward[name][0]}')"
        ).fetchall()
        # (a few days of incidents can be all suppressed by k-anonymity: then none)
        assert codes == [("13104",)] or (name == "incidents" and codes == []), name
        all_codes = duckdb.sql(
            f"select count(distinct municipality_code) from read_parquet('{police[name][0]}')"
        ).fetchall()[0][0]
        assert all_codes == (3 if name != "incidents" else all_codes), name
        assert police[name][1] >= ward[name][1]
    muni = duckdb.sql(
        f"select count(distinct municipality_code) from read_parquet('{ward['outcomes_municipality_month'][0]}')"
    ).fetchall()[0][0]
    assert muni == 3
    with pytest.raises(PartnerError, match="no partner 'atlantis'"):
        pull(settings, "atlantis", "latest", "csv", settings.var / "exports")
    with pytest.raises(ReleaseError, match="release 42 does not exist"):
        pull(settings, "shinjuku", "42", "csv", settings.var / "exports")


def test_rerun_does_not_duplicate_and_reader_keeps_its_release(settings, contracts, monkeypatch):
    validated_zone(settings, contracts, days=3, seed=13)
    first = publish(settings)
    assert publish(settings) is None  # same validated input: no new release, no new rows
    assert (
        _sql_rows(settings, "shared_outcomes_town_month")
        == first.tables["outcomes_town_month"]["rows"]
    )

    held = get_release(settings, "latest")
    before = {n: read_table(settings, held, n) for n in ("visits", "outcomes_town_month")}
    seen_during = []
    real_write = shared.write_partitions

    def write_then_read(cat, spec, *args):
        # After each Iceberg write of release N+1 (its releases row not committed yet), a
        # reader asking for "latest" still gets N, and N's data is unchanged.
        snap = real_write(cat, spec, *args)
        now = get_release(settings, "latest")
        seen_during.append(now.id)
        assert read_table(settings, now, "visits").equals(before["visits"])
        return snap

    monkeypatch.setattr(shared, "write_partitions", write_then_read)
    second = publish(settings, force=True, full=True)
    assert second.release_id == held.id + 1
    assert seen_during == [held.id] * len(shared.tables(settings))
    for name, data in before.items():  # time travel: release N as it was
        assert read_table(settings, get_release(settings, held.id), name).equals(data)
    assert _sql_rows(settings, "shared_outcomes_town_month", held.id) == _sql_rows(
        settings, "shared_outcomes_town_month", second.release_id
    )


def test_a_retried_finalize_returns_its_release_instead_of_a_second(settings, contracts):
    validated_zone(settings, contracts, days=2, seed=19)
    plan = plan_release(settings)
    results = [build_shard(settings, plan, s.index) for s in plan.shards]
    first = finalize(settings, plan, results)
    again = finalize(settings, plan, results)  # e.g. Airflow retrying the task
    assert again.release_id == first.release_id == 1
    assert (
        _sql_rows(settings, "shared_outcomes_town_month")
        == first.tables["outcomes_town_month"]["rows"]
    )
    with engine_for(settings).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(release_table)).scalar() == 1


def test_retention_expires_old_releases_but_never_the_latest(settings, contracts):
    validated_zone(settings, contracts, days=2, seed=14)
    publish(settings)
    publish(settings, force=True, full=True)  # replaces every row and file of release 1
    shown_by_2 = _sql_rows(settings, "shared_outcomes_town_month", 2)
    assert _sql_rows(settings, "shared_outcomes_town_month") == 2 * shown_by_2
    later = datetime.now(UTC) + timedelta(days=settings.release_retention_days + 1)
    assert expire_releases(settings, later) == [1]
    with pytest.raises(ReleaseError, match="release 1 expired"):
        get_release(settings, 1)
    # what only release 1 showed is gone; what release 2 shows stays
    assert _sql_rows(settings, "shared_outcomes_town_month") == shown_by_2
    with engine_for(settings).connect() as conn:
        left = conn.execute(
            sa.select(release_files.c.release_from, release_files.c.release_to)
        ).all()
    assert left and all(r.release_from == 2 and r.release_to is None for r in left)
    assert read_table(settings, get_release(settings, 2), "visits").num_rows > 0
    tbl = shared.catalog(settings).load_table("shared.visits")
    assert "release-1" not in tbl.refs() and "release-2" in tbl.refs()


def test_bad_input_publishes_nothing(settings, contracts, monkeypatch):
    with pytest.raises(ReleaseError, match="nothing validated yet"):
        publish(settings)
    validated_zone(settings, contracts, days=2, seed=15)
    prod = Settings(home=settings.home, environment="production")
    with pytest.raises(PseudonymKeyError, match="production needs"):
        publish(prod)
    with pytest.raises(PseudonymKeyError, match="at least 32"):
        publish(Settings(home=settings.home, pseudonym_key="short"))
    publish(settings)  # the generated local key
    other = Settings(home=settings.home, pseudonym_key="x" * 40)
    with pytest.raises(ReleaseError, match="pseudonym key differs"):
        publish(other, force=True)
    # a shard that fails (a validated file gone) leaves release 1 the latest, nothing staged
    with engine_for(settings).connect() as conn:
        path = conn.exec_driver_sql(
            "select path from curated_files where zone = 'validated' limit 1"
        ).scalar()
    (settings.lake / path).unlink()
    with pytest.raises(FileNotFoundError):
        publish(settings, force=True)
    assert get_release(settings, "latest").id == 1
    assert not any((settings.lake / "staging").glob("*/*"))
    with engine_for(settings).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(release_table)).scalar() == 1


def test_notice_on_releases_topic_and_partner_reader_pulls_once(kafka_settings, contracts):
    validated_zone(kafka_settings, contracts, days=2, seed=16)
    published = publish(kafka_settings)
    assert published.notice_sent
    out = kafka_settings.var / "partner"
    report = PartnerReader(kafka_settings, "setagaya", out, "csv").run(once=True)
    assert report.pulled == [published.release_id]
    marker = out / "setagaya" / f"release-{published.release_id}" / "RELEASE.txt"
    assert marker.exists()
    again = PartnerReader(kafka_settings, "setagaya", out, "csv").run(once=True)
    assert again.pulled == [] and again.already == []  # offsets committed: nothing re-read
    other = PartnerReader(kafka_settings, "nerima", out, "parquet").run(once=True)
    assert other.pulled == [published.release_id]  # every partner gets every notice
    (record,) = read_topic(kafka_settings, kafka_settings.topic("releases.v1"), expected=1)
    published_at = datetime.fromisoformat(json.loads(record.value)["published_at"])
    assert published_at.utcoffset() is not None  # regression: SQLite gave naive times back


def test_a_ward_without_rows_pulls_header_only_csv(settings, contracts):
    """Regression: `pull --format csv` crashed for every ward with no rows in a table
    (binary_join has no kernel for the large lists an empty Iceberg read returns)."""
    validated_zone(settings, contracts, days=2, seed=3, municipalities=("13104",))
    rid = publish(settings).release_id
    _, written = pull(settings, "chiyoda", rid, "csv", settings.var / "exports")
    path, rows = written["visits"]
    assert rows == 0
    header = path.read_text(encoding="utf-8-sig").splitlines()
    assert len(header) == 1 and "vulnerabilities" in header[0].split(",")


def test_publishing_on_postgres_with_row_level_security(settings, contracts, pg_url):
    from visitshare.access.rls import apply

    pg = Settings(home=settings.home, database_url=pg_url)
    validated_zone(pg, contracts, days=2, seed=17)
    published = publish(pg)
    report = apply(pg)
    assert "vs_shinjuku" in report.roles
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("set role vs_shinjuku")
            codes = (
                conn.exec_driver_sql(
                    "select distinct municipality_code from shared_outcomes_town_month"
                )
                .scalars()
                .all()
            )
            assert codes == ["13104"]
            n = conn.exec_driver_sql(
                "select count(distinct municipality_code) from shared_outcomes_municipality_month"
            ).scalar()
            assert n == 3
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.exec_driver_sql("select count(*) from police_repeat_victimization")
        with engine.connect() as conn:
            conn.exec_driver_sql("set role vs_police")
            n = conn.exec_driver_sql(
                "select count(distinct municipality_code) from shared_outcomes_town_month"
            ).scalar()
            assert n == 3
            assert (
                conn.exec_driver_sql("select count(*) from police_repeat_victimization").scalar()
                == (published.tables["repeat_victimization"]["rows"])
            )
    finally:
        engine.dispose()


def test_concurrent_reader_thread_sees_whole_releases(settings, contracts):
    """A reader polling 'latest' during two publishes sees release 1 or 2 whole, never a mix."""
    validated_zone(settings, contracts, days=2, seed=18)
    publish(settings)
    expected = {1: read_table(settings, get_release(settings, 1), "outcomes_town_month").num_rows}
    stop, seen, errors = threading.Event(), [], []

    def reader():
        while not stop.is_set():
            try:
                r = get_release(settings, "latest")
                rows = read_table(settings, r, "outcomes_town_month").num_rows
                seen.append((r.id, rows, r.tables["outcomes_town_month"]["rows"]))
            except Exception as exc:
                errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    try:
        publish(settings, force=True)
    finally:
        stop.set()
        t.join()
    assert errors == []
    assert {rid for rid, _, _ in seen} <= {1, 2} and seen
    assert all(rows == declared for _, rows, declared in seen)
    assert all(rows == expected[1] for rid, rows, _ in seen if rid == 1)


def test_a_database_of_the_first_landed_version_is_upgraded_and_publishes(settings, contracts):
    """Regression (schema drift): an old database without `releases.plan_token` used to break
    `finalize`; opening it now migrates it, and publishing and retrying work."""
    settings.var.mkdir(parents=True, exist_ok=True)
    old = sa.create_engine(settings.db_url)
    first_landed_schema(old)
    with old.connect() as conn:
        assert "plan_token" not in {c["name"] for c in sa.inspect(conn).get_columns("releases")}
    old.dispose()
    validated_zone(settings, contracts, days=2, seed=4)
    published = publish(settings)
    assert published is not None and published.release_id == 1
    assert publish(settings) is None  # nothing new: the fingerprint in the new schema holds
    with engine_for(settings).connect() as conn:
        token = conn.execute(sa.select(release_table.c.plan_token)).scalar()
    assert token
