"""`relink`: the command line of Relink."""

from __future__ import annotations

import typer

from relink.cli import admin, checks, connections, demo, emails, reconnect, status, web
from relink.cli import run as run_cmd

app = typer.Typer(
    name="relink",
    help="Relink keeps data connections alive: checks credentials, records disconnections, "
    "emails owners once, reconnects and refreshes datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",  # docstrings wrap as paragraphs
)
admin.register(app)
connections.register(app)
checks.register(app)
demo.register(app)
emails.register(app)
reconnect.register(app)
web.register(app)
run_cmd.register(app)
status.register(app)


def main() -> None:
    app()
