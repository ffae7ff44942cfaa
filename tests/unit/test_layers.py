"""A production install runs without the development tools: the command line, the flows,
the deployments and the web pages never import relink_dev (nor its Flask), and the two
commands that need them say so in one line when the `sandbox` extra is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

PRODUCT = (
    "relink.cli",
    "relink.web.app",
    "deployments.definitions",
    "deployments.serve",
    "flows.check_connections",
    "flows.check_connections_shard",
    "flows.send_disconnection_emails",
    "flows.reconnect_connection",
    "flows.refresh_datasets",
    "tasks.checks",
    "tasks.emails",
    "tasks.refresh",
)


def python(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )


def test_the_product_and_relink_help_import_neither_flask_nor_the_dev_tools():
    script = (
        "import importlib, sys\n"
        f"for name in {PRODUCT!r}:\n    importlib.import_module(name)\n"
        "from relink.cli import main\n"
        "sys.argv = ['relink', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "dev = sorted(m for m in sys.modules if m.split('.')[0] in {'flask', 'relink_dev'})\n"
        "print('IMPORTED', dev)"
    )
    shown = python(script)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.rstrip().endswith("IMPORTED []"), shown.stdout[-400:]


@pytest.mark.parametrize("command", ["run", "sandbox"])
def test_a_dev_command_without_the_sandbox_extra_is_one_clear_line(command):
    # sys.modules["flask"] = None is how Python marks a module as not importable
    script = (
        "import sys; sys.modules['flask'] = None\n"
        f"sys.argv = ['relink', {command!r}]\n"
        "from relink.cli import main\n"
        "main()"
    )
    ended = python(script)
    assert ended.returncode == 1, ended.stderr[-2000:]
    assert ended.stdout == ""
    assert ended.stderr.splitlines() == [
        f"error: relink {command} is a development tool and needs the sandbox extra: "
        "pip install 'relink[sandbox]' (make setup installs it)"
    ]
