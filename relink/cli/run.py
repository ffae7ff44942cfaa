"""`relink run`: everything, locally, on the embedded defaults (see relink/runner.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from relink.cli._common import handle_errors


def register(root: typer.Typer) -> None:
    root.command("run")(run)


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
    from relink.runner import RunConfig
    from relink.runner import run as run_all

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
