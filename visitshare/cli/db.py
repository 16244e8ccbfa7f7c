"""`visitshare db apply|upgrade`: the project database and partner access."""

from __future__ import annotations

import typer

from visitshare.console import console

app = typer.Typer(help="The project database and partner access (roles, row-level security).")


@app.command("apply")
def db_apply(ctx: typer.Context) -> None:
    """Create/update tables; on PostgreSQL also partner roles, grants and row-level security."""
    from visitshare.access.rls import apply

    report = apply(ctx.obj)
    console.print(f"{report.dialect}: tables {', '.join(report.tables)}")
    if report.roles:
        console.print(f"roles: {', '.join(report.roles)}")
        console.print(f"row-level security: {report.policies_file}")
    else:
        console.print(
            "no roles: row-level security needs PostgreSQL (VISITSHARE_DATABASE_URL); "
            "`visitshare pull` applies the partner scopes"
        )


@app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Bring the project database's schema up to date (every command does this on first use)."""
    from visitshare.db.migrate import upgrade_database

    before, after = upgrade_database(ctx.obj.db_url)
    if before == after:
        console.print(f"schema already at revision {after}")
    else:
        console.print(f"schema upgraded from {before or 'an unversioned database'} to {after}")
