"""`visitshare contracts list|show|json-schema|convert`: the data contracts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from visitshare.console import console
from visitshare.contracts import ContractRegistry, json_schema, loader, odcs

app = typer.Typer(help="Data contracts in schemas/.")


@app.command("list")
def contracts_list(ctx: typer.Context) -> None:
    """Contracts (every version), their topics and field counts by PII class."""
    registry = ContractRegistry.load(ctx.obj.contracts_dir)
    table = Table(title="Data contracts", title_justify="left")
    for col in ("contract", "version", "topic", "fields", "PII classes"):
        table.add_column(col)
    for c in registry.all():
        classes: dict[str, int] = {}
        for f in c.fields:
            classes[f.pii.value] = classes.get(f.pii.value, 0) + 1
        table.add_row(
            c.id,
            c.semver,
            c.topic,
            str(len(c.fields)),
            ", ".join(f"{k} {v}" for k, v in classes.items()),
        )
    console.print(table)


@app.command("show")
def contracts_show(ctx: typer.Context, name: str) -> None:
    """Every field of a contract: type, required, PII class, disclosure, description."""
    c = ContractRegistry.load(ctx.obj.contracts_dir).get(name)
    table = Table(title=f"{c.id} → {c.topic}", title_justify="left", show_lines=False)
    for col in ("field", "type", "req", "pii", "shared as", "description"):
        table.add_column(col, overflow="fold")
    for f in c.fields:
        d = f.disclosure
        shared = "keep" if d is None else d.action + (f" {d.coarsen or d.cap or ''}".rstrip())
        table.add_row(
            f.name, f.type.value, "yes" if f.required else "", f.pii.value, shared, f.description
        )
    console.print(table)


@app.command("json-schema")
def contracts_json_schema(ctx: typer.Context, name: str) -> None:
    """Print the JSON Schema derived from a contract."""
    c = ContractRegistry.load(ctx.obj.contracts_dir).get(name)
    sys.stdout.write(json.dumps(json_schema(c), ensure_ascii=False, indent=2) + "\n")


@app.command("convert")
def contracts_convert(
    files: Annotated[list[Path], typer.Argument(help="Old-format contract files (*.vN.yaml).")],
) -> None:
    """Rewrite old-format contracts as ODCS v3 documents, in place. Each converted file is
    checked to load to the same contract first; files already in ODCS are left alone."""
    for path in files:
        done = loader.convert_file(path)
        console.print(
            f"{path}: "
            + (f"converted to ODCS {odcs.API_VERSION}" if done else "already ODCS, unchanged")
        )
