"""`relink demo`: a small demo account to look around in."""

from __future__ import annotations

import typer

from relink import demo
from relink.cli._common import app, console, handle_errors, transaction
from relink.timeutil import utcnow

demo_app = typer.Typer(help="The demo account.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(demo_app, name="demo")


@demo_app.command("seed")
@handle_errors
def demo_seed() -> None:
    """Load the demo account (idempotent: a second run changes nothing)."""
    relink = app()
    with transaction() as session:
        created = demo.seed(session, relink.vault, now=utcnow())
    if created:
        console.print(
            f"demo account {demo.ACCOUNT!r} loaded: admin {demo.ADMIN[0]}, "
            f"members {demo.MEMBER[0]} and {demo.OTHER[0]}",
            highlight=False,
        )
    else:
        console.print(f"demo account {demo.ACCOUNT!r} already present; nothing changed")
