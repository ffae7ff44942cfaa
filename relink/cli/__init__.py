"""`relink`: the command line of Relink. The top-level listing (`relink`, `relink --help`)
is printed from `COMMANDS` without importing a single command, so it answers at once; a
command's module (and with it SQLAlchemy, the ORM, the connectors ...) is imported when
that command runs or shows its own help. tests/integration/test_cli.py keeps `COMMANDS`
equal to what the modules register."""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    # name: (the modules of relink/cli that register it, the first sentence of its help)
    "run": (
        ("run",),
        "Run Relink locally: migrate, load the demo, start the sandbox provider, a Prefect "
        "server with its UI, the served deployments and the web pages; check once; print the "
        "URLs and demo sign-ins.",
    ),
    "status": (
        ("status",),
        "Connections by status, open disconnections, provider incidents (most connections "
        "of a provider failing alike: likely an outage), installation problems (what only an "
        "admin can fix, and how), emails due at the next 07:00 MST run, and the last check "
        "sweep.",
    ),
    "check": (
        ("checks",),
        "Check connections' credentials now and record what broke (the check-connections "
        "flow's sweep, run here without Prefect).",
    ),
    "notify": (
        ("emails",),
        "Email every disconnection open for 24 hours that was never emailed, and every "
        "owner whose credentials expire for good within RELINK_HEADS_UP_DAYS their one "
        "heads-up (the send-disconnection-emails flow's run, here without Prefect).",
    ),
    "outbox": (
        ("emails",),
        "Every disconnection email's record (sent, outbox, unknown, ...): list, show, "
        "release; and the expiry heads-ups' (heads-ups).",
    ),
    "reconnect": (
        ("reconnect",),
        "Reconnect a connection with new credentials, validated together with any changed "
        "settings before they replace the old ones; a refused attempt changes nothing and is "
        "kept in the audit trail.",
    ),
    "connections": (("connections",), "Data connections."),
    "datasets": (("connections", "reconnect"), "Datasets built on a connection."),
    "metrics": (("connections",), "Metrics and the datasets they use."),
    "connectors": (("connections",), "The kinds of source Relink can check."),
    "audit": (("reconnect",), "The audit trail: who changed what and when (oldest first)."),
    "users": (("admin", "web"), "Users of an account."),
    "accounts": (("admin",), "Accounts (organisations)."),
    "keys": (("admin",), "Encryption keys of the credential vault."),
    "config": (("admin",), "Effective settings."),
    "db": (("admin",), "The app database: migrations."),
    "demo": (("demo",), "The demo account."),
    "sandbox": (
        ("run",),
        "Run the local sandbox OAuth 2.0 provider and demo API (for the demo and tests).",
    ),
    "web": (("web",), "Serve the web pages and the JSON API (docs at /docs) with uvicorn."),
}

_registered = typer.Typer(rich_markup_mode="markdown")  # every command module registered once
_registered.callback()(lambda: None)  # a group, even with one command
_modules: set[str] = set()


def registered(modules: tuple[str, ...] = ()) -> dict[str, Any]:
    """The click commands of these modules of relink/cli (all of them when empty)."""
    for name in modules or sorted({m for mods, _ in COMMANDS.values() for m in mods}):
        if name not in _modules:
            importlib.import_module(f"relink.cli.{name}").register(_registered)
            _modules.add(name)
    return dict(typer.main.get_command(_registered).commands)  # type: ignore[attr-defined]


class LazyGroup(TyperGroup):
    """Lists `COMMANDS` from the table; loads a command when it is looked up to run."""

    _listing = False

    @property  # type: ignore[override]
    def commands(self) -> dict[str, Any]:
        """The whole tree (suggestions for a typo, tools that walk the commands)."""
        loaded = registered()
        return {name: loaded[name] for name in COMMANDS}

    @commands.setter
    def commands(self, _value: Any) -> None:
        pass  # TyperGroup's constructor sets an empty dict: the table is the source

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        modules, summary = COMMANDS[cmd_name]
        if self._listing:
            return TyperCommand(cmd_name, help=summary)
        return registered(modules)[cmd_name]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    cls=LazyGroup,
    name="relink",
    help="Relink keeps data connections alive: checks credentials, records disconnections, "
    "emails owners once, reconnects and refreshes datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",  # docstrings wrap as paragraphs
)


@app.callback()
def _relink() -> None:
    pass  # the group's own options: none; its help is the Typer's


def main() -> None:
    app()
