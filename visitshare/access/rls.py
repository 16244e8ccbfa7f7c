"""`visitshare db apply`: the project's tables, the shared SQL tables, and partner access.

On PostgreSQL: one role per partner (infra/partners.yaml), the GRANTs its access level
allows, the partner scopes, and the row-level-security policies of infra/sql/shared_rls.sql.
On SQLite (embedded default) there are no roles: the tables are created and partners read
through `visitshare pull`, which applies the same scopes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from visitshare.access.partners import Partner, load_partners
from visitshare.db import engine_for
from visitshare.db.tables import partner_scopes
from visitshare.release import shared
from visitshare.release.build import output_schemas
from visitshare.settings import Settings


@dataclass
class ApplyReport:
    dialect: str
    tables: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    policies_file: str | None = None


def _grants(settings: Settings, p: Partner) -> list[str]:
    tables = [t.sql for t in shared.tables(settings) if t.sql and p.can_read(t)]
    return [*tables, "releases", partner_scopes.name]


def apply(settings: Settings) -> ApplyReport:
    """Create or update everything; idempotent."""
    partners = load_partners(settings)
    engine = engine_for(settings)
    report = ApplyReport(engine.dialect.name)
    schemas = output_schemas(settings)
    with engine.begin() as conn:
        for spec in shared.tables(settings):
            if spec.sql:
                shared.ensure_sql_table(conn, spec.sql, schemas[spec.name])
                report.tables.append(spec.sql)
        conn.execute(partner_scopes.delete())
        conn.execute(
            partner_scopes.insert(),
            [
                {"role_name": p.role, "municipality_code": p.municipality_code or "*"}
                for p in partners.partners
            ],
        )
        if engine.dialect.name != "postgresql":
            return report
        prep = conn.dialect.identifier_preparer
        for p in partners.partners:
            role = prep.quote(p.role)
            # Partners log in with credentials managed outside the project (no password here).
            conn.exec_driver_sql(
                f"DO $$ BEGIN CREATE ROLE {role} LOGIN; "
                "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            )
            schema = conn.exec_driver_sql("select current_schema()").scalar_one()
            conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {prep.quote(schema)} TO {role}")
            for spec in shared.tables(settings):
                if spec.sql and not p.can_read(spec):
                    conn.exec_driver_sql(f"REVOKE ALL ON {prep.quote(spec.sql)} FROM {role}")
            for table in _grants(settings, p):
                conn.exec_driver_sql(f"GRANT SELECT ON {prep.quote(table)} TO {role}")
            report.roles.append(p.role)
        sql_file = settings.infra_dir / "sql" / "shared_rls.sql"
        conn.exec_driver_sql(sql_file.read_text(encoding="utf-8"))
        report.policies_file = str(sql_file)
    return report
