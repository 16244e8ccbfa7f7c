"""`bench freshness --history-days`: the history it releases on top of, copied, never changed."""

import hashlib
import json

import pytest
import sqlalchemy as sa

from visitshare.bench.freshness import history_home
from visitshare.db import engine_for
from visitshare.db.tables import curated_files
from visitshare.landing import manifest
from visitshare.release.releases import latest_release


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_history_is_a_copy_of_the_validated_zone(settings):
    work = history_home(settings, 1, say=lambda _: None)
    source = settings.var / "bench" / "publish-work"
    assert work.var == settings.var / "bench" / "freshness-work"
    assert work.topic_prefix == "" and work.lake == work.var / "lake"
    ports = json.loads((work.var / "ports.json").read_text())
    assert (work.broker_port, work.airflow_api_port) == (
        ports["broker_port"],
        ports["airflow_api_port"],
    )
    # Lake files are shared (hard links), databases copied from the pristine ones.
    engine = engine_for(work)
    raw = manifest.files(engine)
    assert raw and all(
        (work.lake / f.path).stat().st_ino == (source / "lake" / f.path).stat().st_ino for f in raw
    )
    with engine.connect() as conn:
        zones = set(conn.execute(sa.select(curated_files.c.zone)).scalars())
        assert {"validated", "seen"} <= zones
        assert latest_release(conn) is None  # the history is released by the benchmark
    pristine = digest(source / "pristine" / "visitshare.db")
    with engine.begin() as conn:
        conn.execute(sa.delete(curated_files))
    assert digest(source / "pristine" / "visitshare.db") == pristine
    # A second run starts again from the source (the validated zone is reused, not rebuilt).
    again = history_home(settings, 1, say=lambda _: None)
    with engine_for(again).connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(curated_files)).scalar()


def test_a_source_missing_files_is_refused(settings):
    history_home(settings, 1, say=lambda _: None)
    source = settings.var / "bench" / "publish-work"
    seen = next((source / "lake" / "state" / "seen").rglob("*.parquet"))
    seen.unlink()
    with pytest.raises(RuntimeError, match="lacks 1 file"):
        history_home(settings, 1, say=lambda _: None)


def test_history_needs_the_embedded_stores(settings, monkeypatch):
    with pytest.raises(RuntimeError, match="VISITSHARE_DATABASE_URL"):
        history_home(
            settings.model_copy(update={"database_url": "sqlite:///x.db"}), 1, lambda _: None
        )
