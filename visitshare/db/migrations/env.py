"""Alembic environment: runs on the connection `visitshare.db.migrate` hands it (no URL here)."""

from __future__ import annotations

from alembic import context

from visitshare.db.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
)
with context.begin_transaction():
    context.run_migrations()
