"""`relink web` (the pages and JSON API on uvicorn) and `relink users set-password`."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from relink.cli import admin
from relink.cli._common import app, console, fail, handle_errors, transaction
from relink.passwords import check_strength, set_password
from relink.timeutil import utcnow


def register(root: typer.Typer) -> None:
    root.command("web")(web)
    admin.users_app.command("set-password")(users_set_password)


@handle_errors
def web(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Serve the web pages and the JSON API (docs at /docs) with uvicorn.

    Links in emails and the OAuth callback use RELINK_BASE_URL: keep it pointing here.
    """
    import uvicorn

    from relink.web import create_app

    relink = app()
    relink.ensure_schema()
    use_one_prefect_api(relink.settings.effective_prefect_api_url)
    configure_request_log()
    console.print(
        f"Relink web on http://{host}:{port} (RELINK_BASE_URL={relink.settings.base_url}); "
        "Ctrl-C stops it",
        highlight=False,
    )
    # access_log=False: uvicorn's access log prints query strings, and the OAuth callback's
    # carries an authorization code. relink.web logs method, path and status instead.
    uvicorn.run(create_app(relink), host=host, port=port, access_log=False, server_header=False)


def use_one_prefect_api(api_url: str) -> None:
    """The web process's Prefect API is the one its follow-ups use (RELINK_PREFECT_API_URL,
    else PREFECT_API_URL): its events (a reconnect, a Check again) go there too. Set before
    Prefect is imported, which reads PREFECT_API_URL once."""
    if api_url:
        os.environ["PREFECT_API_URL"] = api_url


def configure_request_log() -> None:
    logger = logging.getLogger("relink.web")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@handle_errors
def users_set_password(
    email: Annotated[str, typer.Argument(help="The user's email (their sign-in).")],
) -> None:
    """Set a user's web sign-in password, read from a prompt (no echo) or from stdin.

    Their existing web sessions end.
    """
    password = _read_password()
    check_strength(password)
    with transaction() as session:
        user = set_password(session, email, password, now=utcnow())
    console.print(f"password set for {user.email}", highlight=False)


def _read_password() -> str:
    if sys.stdin.isatty():
        password = typer.prompt("Password", hide_input=True)
        if typer.prompt("Repeat password", hide_input=True) != password:
            raise fail("the two passwords differ; nothing was changed")
        return password
    line = sys.stdin.readline()
    if not line:
        raise fail("no password on stdin (one line)")
    return line.rstrip("\r\n")
