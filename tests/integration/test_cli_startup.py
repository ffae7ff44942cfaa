"""The command line starts at once: `relink --help` lists every command from its table
without importing any command (nor SQLAlchemy), and the table says what the commands'
modules really register."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import typer

import relink.cli
from relink.cli import COMMANDS, app, registered

CLI = Path(relink.cli.__file__).parent


def first_sentence(text: str | None) -> str:
    flat = " ".join((text or "").split())
    found = re.match(r"(.+?\.)(\s|$)", flat)
    return found.group(1) if found else flat


def test_help_imports_no_command_and_lists_them_all():
    script = (
        "import sys; from relink.cli import main; sys.argv = ['relink', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'sqlalchemy', 'alembic', 'connectors', 'httpx', 'prefect'} "
        "or m.startswith(('relink.cli.', 'relink.models')))\n"
        "print('IMPORTED', heavy)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert shown.rstrip().endswith("IMPORTED []"), shown[-400:]
    for name in COMMANDS:
        assert re.search(rf"│ {name}\s", shown), f"{name} missing from relink --help"


def test_the_table_is_what_the_modules_register():
    """Names, the first sentence of each help, and which modules make up each command
    (read off each module's `register`: `relink NAME` imports only those)."""
    everything = registered()
    assert set(everything) == set(COMMANDS)
    for name, (_modules, summary) in COMMANDS.items():
        assert summary == first_sentence(everything[name].help), name
    assert {name: set(modules) for name, (modules, _) in COMMANDS.items()} == registrations()


def registrations() -> dict[str, set[str]]:
    """Top-level name -> the modules of relink/cli whose `register` adds to it: the one
    that registers it on the root, and any that add a subcommand to its Typer."""
    owner: dict[str, set[str]] = {}
    typer_of: dict[tuple[str, str], str] = {}  # (module, variable) -> top-level name
    crossing: list[tuple[str, tuple[str, str]]] = []  # (module, (module, variable))
    for path in sorted(CLI.glob("*.py")):
        module = path.stem
        tree_ = ast.parse(path.read_text())
        imported = {
            alias.asname or alias.name: (node.module or "", alias.name)
            for node in ast.walk(tree_)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        for func in tree_.body:
            if not (isinstance(func, ast.FunctionDef) and func.name == "register"):
                continue
            for call in ast.walk(func):
                if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
                    continue
                target, method = call.func.value, call.func.attr
                if isinstance(target, ast.Name) and target.id == "root":
                    if method == "command":
                        owner.setdefault(call.args[0].value, set()).add(module)
                    elif method == "add_typer":
                        (name,) = [k.value.value for k in call.keywords if k.arg == "name"]
                        owner.setdefault(name, set()).add(module)
                        typer_of[(module, call.args[0].id)] = name
                elif method == "command" and isinstance(target, ast.Name):
                    source, variable = imported[target.id]
                    crossing.append((module, (source.rpartition(".")[2], variable)))
                elif method == "command" and isinstance(target, ast.Attribute):
                    crossing.append((module, (target.value.id, target.attr)))
    for module, app_ in crossing:
        owner[typer_of[app_]].add(module)
    return owner


def test_a_mistyped_command_is_suggested_the_right_one():
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["chek"])
    assert result.exit_code == 2
    assert "No such command 'chek'. Did you mean 'check'?" in " ".join(result.output.split())


def test_the_click_tree_has_every_command():
    """Tools that walk the tree (the CLI fuzzer) see every command, loaded."""
    group = typer.main.get_command(app)
    assert set(group.commands) == set(COMMANDS)
    assert "refresh" in group.commands["datasets"].commands
    assert "set-password" in group.commands["users"].commands
