"""The `visitshare` command line: one module per command group, each command a thin call into
the packages. Every error a person can act on is a `VisitShareError`, caught here once."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from pydantic import ValidationError

from visitshare.cli import (
    airflow,
    audit,
    bench,
    broker,
    contracts,
    db,
    deploy,
    landing,
    maintain,
    partner,
    produce,
    quality,
    release,
    share,
    stack,
    topics,
)
from visitshare.console import err_console, setup_logging
from visitshare.errors import VisitShareError
from visitshare.settings import Settings

app = typer.Typer(
    help="visit-share: privacy-safe sharing of the Tokyo home-visit programme's outcomes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# In data-flow order: producing → landing → quality → release → access, then operations.
app.add_typer(broker.app, name="broker")
app.add_typer(topics.app, name="topics")
app.add_typer(contracts.app, name="contracts")
app.command()(produce.simulate)
app.command()(produce.produce)
app.add_typer(produce.outbox_app, name="outbox")
app.command()(landing.land)
app.command()(landing.status)
app.command()(quality.validate)
app.add_typer(quality.app, name="quarantine")
app.command()(release.publish)
app.add_typer(release.app, name="releases")
app.command()(maintain.maintain)
app.add_typer(audit.app, name="audit")
app.command()(partner.pull)
app.add_typer(partner.app, name="partner")
app.add_typer(share.app, name="share")
app.add_typer(db.app, name="db")
app.command()(stack.run)
app.command()(stack.up)
app.command()(stack.down)
app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)(airflow.airflow)
app.add_typer(bench.app, name="bench")
app.add_typer(deploy.app, name="deploy")


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    setup_logging(verbose)
    ctx.obj = Settings()


def main() -> None:
    try:
        app()
    except VisitShareError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    except ValidationError as exc:  # a VISITSHARE_* variable with a bad value
        err_console.print(f"[red]error: invalid settings:[/] {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
