"""Schema migrations: every database, new or old, SQLite or PostgreSQL, ends at the same schema."""

from __future__ import annotations

import multiprocessing

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from tests.helpers import first_landed_schema
from visitshare.db import dispose_all, engine_for
from visitshare.db.migrate import HEAD, MIGRATIONS, _config, current_revision, upgrade
from visitshare.db.tables import metadata, releases
from visitshare.settings import Settings


def _differences(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    # SQLite reports no names for the unique constraints of `unique=True` columns.
    return [d for d in diffs if d[0] not in ("add_constraint", "remove_constraint")]


def test_head_constant_is_the_newest_revision():
    with sa.create_engine("sqlite://").connect() as conn:
        script = ScriptDirectory.from_config(_config(conn))
    assert script.get_current_head() == HEAD


def test_migrations_build_exactly_the_declared_tables(any_db, settings):
    engine = engine_for(settings)
    with engine.connect() as conn:
        assert current_revision(conn) == HEAD
    assert _differences(engine) == []


def test_an_old_database_is_upgraded_in_place(any_db, settings):
    settings.var.mkdir(parents=True, exist_ok=True)
    raw = sa.create_engine(settings.db_url)
    first_landed_schema(raw)
    with raw.begin() as conn:
        conn.execute(
            sa.text(
                "insert into releases (id, published_at, status, input_fingerprint, "
                "key_fingerprint, validated_upto, contracts, tables, disclosure, notice_sent) "
                "values (1, '2026-01-01T00:00:00+00:00', 'published', 'f', 'k', 1, '{}', '{}', "
                "'{}', true)"
            )
        )
    raw.dispose()
    engine = engine_for(settings)  # every command's first step
    with engine.connect() as conn:
        assert current_revision(conn) == HEAD
        row = conn.execute(sa.select(releases)).one()
    assert row.id == 1 and row.plan_token is None  # kept, and the new column is there
    assert _differences(engine) == []


def _open(home: str, barrier) -> str:
    barrier.wait()
    engine = engine_for(Settings(home=home))
    with engine.connect() as conn:
        return current_revision(conn)


def test_many_processes_open_a_brand_new_database_at_once(settings):
    """Regression (concurrent first use): WAL set and schema migrated once, none fails."""
    dispose_all()
    ctx = multiprocessing.get_context("spawn")
    n = 6
    barrier = ctx.Manager().Barrier(n)
    with ctx.Pool(n) as pool:
        results = pool.starmap(_open, [(str(settings.home), barrier)] * n)
    assert results == [HEAD] * n
    with engine_for(settings).connect() as conn:
        assert conn.exec_driver_sql("pragma journal_mode").scalar() == "wal"


def test_upgrade_is_idempotent(settings):
    engine = engine_for(settings)
    assert upgrade(engine) == HEAD
    assert upgrade(engine) == HEAD


@pytest.mark.parametrize("revision", ["0001"])
def test_a_partial_upgrade_stops_at_its_revision(tmp_path, revision):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    assert upgrade(engine, revision) == revision
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("releases")}
    assert "plan_token" not in columns
    assert str(MIGRATIONS).endswith("migrations")
