"""`relink demo`: a small demo account to look around in."""

from __future__ import annotations

from pathlib import Path

import typer

from relink import demo
from relink.cli._common import app, console, handle_errors, transaction
from relink.timeutil import utcnow

demo_app = typer.Typer(help="The demo account.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(demo_app, name="demo")
    root.command("sandbox")(sandbox)


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


@handle_errors
def sandbox(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8765, help="TCP port."),
    state_file: Path | None = typer.Option(
        None, help="Keep clients and tokens in this JSON file across restarts."
    ),
) -> None:
    """Run the local sandbox OAuth 2.0 provider and demo API (for the demo and tests)."""
    from relink.sandbox import serve

    console.print(f"sandbox provider on http://{host}:{port} (Ctrl-C stops it)", highlight=False)
    serve(host=host, port=port, state_file=state_file, demo=True)
