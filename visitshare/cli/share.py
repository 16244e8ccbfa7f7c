"""`visitshare share ...`: the Delta Sharing server, its tokens and its access log."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from visitshare.console import console
from visitshare.settings import Settings

app = typer.Typer(help="Partners read their share over Delta Sharing: server, tokens, access log.")
token_app = typer.Typer(help="Bearer tokens: one profile file per partner, stored hashed.")
app.add_typer(token_app, name="token")


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address (default VISITSHARE_SHARE_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default VISITSHARE_SHARE_PORT).")] = None,
    certfile: Annotated[
        Path | None, typer.Option(help="TLS certificate (PEM): serve https.")
    ] = None,
    keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
) -> None:
    """Serve every partner's share until interrupted (Ctrl-C)."""
    from visitshare.access.server import PREFIX
    from visitshare.access.server import serve as run

    settings: Settings = ctx.obj
    if (certfile is None) != (keyfile is None):
        raise typer.BadParameter("--certfile and --keyfile go together")
    host, port = host or settings.share_host, port or settings.share_port
    scheme = "https" if certfile else "http"
    console.print(f"Delta Sharing server on {scheme}://{host}:{port}{PREFIX} (Ctrl-C stops it)")
    run(
        settings, host, port, str(certfile) if certfile else None, str(keyfile) if keyfile else None
    )


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    partner: Annotated[str, typer.Option(help="Partner id (infra/partners.yaml).")],
    out: Annotated[Path, typer.Option(help="The profile file to write (give it to the partner).")],
    expires: Annotated[str, typer.Option(help="Lifetime: 90d, 12h, 2w.")] = "90d",
    comment: Annotated[str | None, typer.Option(help="Who it is for, why.")] = None,
) -> None:
    """Issue a token and write the partner's profile file (the only copy of the token)."""
    from visitshare.access import tokens

    settings: Settings = ctx.obj
    issued = tokens.create(settings, partner, expires, comment)
    path = tokens.write_profile(settings, issued, out)
    console.print(
        f"token {issued.id} for {issued.partner.id} ({issued.partner.name}), expires "
        f"{issued.expires_at:%Y-%m-%d %H:%M} UTC; profile written to {path} (mode 600)"
    )


@token_app.command("list")
def token_list(
    ctx: typer.Context,
    partner: Annotated[str | None, typer.Option(help="Only this partner's tokens.")] = None,
) -> None:
    """Every token with its state (never a secret)."""
    from visitshare.access import tokens

    table = Table(title="Sharing tokens", title_justify="left")
    for col in ("id", "partner", "state", "created", "expires", "revoked", "comment"):
        table.add_column(col, no_wrap=col in ("id", "partner", "state"))
    for t in tokens.listing(ctx.obj, partner):
        table.add_row(
            t["id"],
            t["partner"],
            t["state"],
            f"{t['created_at']:%Y-%m-%d %H:%M}",
            f"{t['expires_at']:%Y-%m-%d %H:%M}",
            f"{t['revoked_at']:%Y-%m-%d %H:%M}" if t["revoked_at"] else "",
            t["comment"] or "",
        )
    console.print(table)


@token_app.command("revoke")
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[str | None, typer.Argument(help="The token's id (token list).")] = None,
    partner: Annotated[str | None, typer.Option(help="Revoke every token of a partner.")] = None,
) -> None:
    """Revoke a token (or all of a partner's): its requests and file URLs get refused at once."""
    from visitshare.access import tokens

    ids = tokens.revoke(ctx.obj, token_id, partner)
    console.print(f"revoked {', '.join(ids)}" if ids else "no live token to revoke")


def _since(text: str | None, settings: Settings) -> datetime | None:
    if text is None:
        return None
    from visitshare.access.tokens import parse_duration

    try:
        return settings.clock.now() - parse_duration(text, 36500)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"--since takes 7d, 12h or an ISO time, not {text!r}") from None
    if value.tzinfo is None:
        raise typer.BadParameter("--since needs a time with its offset (e.g. +09:00)")
    return value


@app.command("log")
def log(
    ctx: typer.Context,
    partner: Annotated[str | None, typer.Option(help="Only this partner's requests.")] = None,
    since: Annotated[str | None, typer.Option(help="7d, 12h or an ISO time with offset.")] = None,
    html: Annotated[Path | None, typer.Option(help="Also write it as a page for auditors.")] = None,
) -> None:
    """The access log: who read what, how much, allowed or refused."""
    from visitshare.access import accesslog

    settings: Settings = ctx.obj
    rows = accesslog.entries(settings, partner, _since(since, settings))
    table = Table(title=f"Sharing access log ({len(rows)} requests)", title_justify="left")
    for col in (
        "at",
        "partner",
        "token",
        "endpoint",
        "table",
        "release",
        "files",
        "rows",
        "bytes",
        "status",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(
            f"{r.at:%Y-%m-%d %H:%M:%S}",
            r.partner_id or "-",
            r.token_id or "-",
            f"{r.method} {r.endpoint}",
            ".".join(x for x in (r.share, r.schema_name, r.table_name) if x),
            str(r.release_id or ""),
            str(r.files if r.files is not None else ""),
            str(r.rows if r.rows is not None else ""),
            str(r.bytes if r.bytes is not None else ""),
            str(r.status),
        )
    console.print(table)
    if html is not None:
        accesslog.write_html(rows, html, "visit-share: sharing access log")
        console.print(f"written to {html}")
