"""`relink run` and `relink sandbox`: the development tools of relink_dev/ (the local
supervisor and the sandbox OAuth provider), imported only when one of them runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer

from relink.cli._common import console, handle_errors
from relink.errors import RelinkError


def register(root: typer.Typer) -> None:
    root.command("run")(run)
    root.command("sandbox")(sandbox)


def require_sandbox_extra(command: str) -> None:
    """One line instead of a traceback when the development tools' Flask is missing."""
    if importlib.util.find_spec("flask") is None:
        raise RelinkError(
            f"relink {command} is a development tool and needs the sandbox extra: "
            "pip install 'relink[sandbox]' (make setup installs it)"
        )


@handle_errors
def run(
    host: Annotated[str, typer.Option(help="Interface every part listens on.")] = "127.0.0.1",
    web_port: Annotated[int, typer.Option(help="Port of the web pages.")] = 8000,
    prefect_port: Annotated[int, typer.Option(help="Port of the Prefect server and UI.")] = 4200,
    sandbox_port: Annotated[int, typer.Option(help="Port of the sandbox OAuth provider.")] = 8765,
    first_sweep: Annotated[
        bool,
        typer.Option(
            help="Check the connections once at start, then run the email run once, before "
            "printing ready."
        ),
    ] = True,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Start everything, check the pages, the Prefect API and the served "
            "deployments, stop everything; exit 0 when all answered.",
        ),
    ] = False,
) -> None:
    """Run Relink locally: migrate, load the demo, start the sandbox provider, a Prefect
    server with its UI, the served deployments and the web pages; check once; print the
    URLs and demo sign-ins. Ctrl-C stops every process it started."""
    require_sandbox_extra("run")
    from relink_dev.runner import RunConfig
    from relink_dev.runner import run as run_all

    config = RunConfig(
        host=host,
        web_port=web_port,
        prefect_port=prefect_port,
        sandbox_port=sandbox_port,
        first_sweep=first_sweep,
    )
    code = run_all(config, check=check)
    if code:
        raise typer.Exit(code)


@handle_errors
def sandbox(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8765, help="TCP port."),
    state_file: Path | None = typer.Option(
        None, help="Keep clients and tokens in this JSON file across restarts."
    ),
) -> None:
    """Run the local sandbox OAuth 2.0 provider and demo API (for the demo and tests)."""
    require_sandbox_extra("sandbox")
    from relink_dev.sandbox import serve

    console.print(f"sandbox provider on http://{host}:{port} (Ctrl-C stops it)", highlight=False)
    serve(host=host, port=port, state_file=state_file, demo=True)
