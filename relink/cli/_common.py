"""What every command shares: the app, one transaction, errors, output."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from sqlalchemy.orm import Session

from relink.app import Relink
from relink.cli import tables
from relink.errors import RelinkError

WideOpt = Annotated[
    bool,
    typer.Option(
        "--wide",
        help="Show every value in full: the table at its natural width, wider than the "
        "terminal if need be (pipe it to `less -S`). Without it a table fits the terminal "
        "and long values are cut with …",
        callback=tables.set_wide,
        expose_value=False,
    ),
]

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)

_app: Relink | None = None


def app() -> Relink:
    """The process's Relink (settings read from the environment once)."""
    global _app
    if _app is None:
        _app = Relink()
    return _app


def reset_app() -> None:
    """Forget the cached app (tests change the environment between invocations)."""
    global _app
    if _app is not None:
        _app.close()
    _app = None


@contextmanager
def transaction(*, check_schema: bool = True) -> Iterator[Session]:
    relink = app()
    if check_schema:
        relink.ensure_schema()
    with relink.transaction() as session:
        yield session


def fail(message: str) -> typer.Exit:
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(1)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Expected failures become one line on stderr and exit code 1."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except RelinkError as exc:
            raise fail(str(exc)) from None

    return wrapper


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table that fits the terminal, or one card per row (relink/cli/tables.py)."""
    tables.render(console, title, columns, rows)


def parse_pairs(values: Sequence[str], option: str) -> dict[str, str]:
    """`key=value` options into a dict; a malformed one is a clear error."""
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip():
            raise fail(f"{option} {value!r}: expected key=value")
        pairs[key.strip()] = rest
    return pairs


def secrets_from_env(refs: dict[str, str]) -> dict[str, str]:
    """`--secret-env key=ENVVAR` values; an unset variable is a clear error."""
    for key, var in refs.items():
        if var not in os.environ:
            raise fail(f"--secret-env {key}={var}: environment variable {var} is not set")
    return {key: os.environ[var] for key, var in refs.items()}
