"""`relink run`: one command starts everything, says where it is, and Ctrl-C stops every
process it started (a real Prefect server, the sandbox, the web pages, `serve`)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from relink_dev.runner import READY

ROOT = Path(__file__).resolve().parents[2]
RELINK = [sys.executable, "-c", "from relink.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELINK_", "PREFECT_"))}
    env.update(RELINK_DATA_DIR=str(tmp_path / "data"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def readme_first_screen() -> list[str]:
    """The lines of the README's block showing what `make run` prints once ready."""
    text = (ROOT / "README.md").read_text()
    block = text.split("What `make run` prints once it is ready", 1)[1].split("```", 2)[1]
    return [line for line in block.splitlines() if line.strip()]


def label(line: str) -> str:
    """'  web pages    http://...' -> 'web pages' (the labels' column is 12 wide)."""
    return line[2:14].strip() if line.startswith("  ") else line.strip()


def test_relink_run_starts_everything_and_ctrl_c_stops_every_child(tmp_path):
    web, prefect_port, sandbox = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [
            *RELINK,
            *("run", "--web-port", str(web), "--prefect-port", str(prefect_port)),
            *("--sandbox-port", str(sandbox)),
        ],
        cwd=ROOT,
        env=run_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C stops everything"):
                break
        output = "".join(lines)
        assert READY in output, output
        pids = [int(p) for p in re.findall(r"pid=(\d+)", output)]
        assert len(pids) == 4, output
        assert f"http://127.0.0.1:{web}" in output and f"http://127.0.0.1:{prefect_port}" in output
        assert "ada@demo.relink.test" in output and "password relink-demo-password" in output
        # what fixes the demo's broken Finance connection from its page
        assert "'Finance (MariaDB)': Reconnect on its page with username root and the " in output
        # the demo shows each outcome: two healthy-by-design sources fail as designed
        assert "first check  5 connection(s): 3 ok, 2 auth_failed" in output, output
        # the demo's Support, broken for 26 hours, gets its one email at start-up, and
        # Sales, whose credentials expire in 5 days, its heads-up
        assert (
            "first emails 1 disconnection email(s): 1 outbox; 1 expiry heads-up(s): 1 outbox"
            in output
        ), output
        assert list((tmp_path / "data" / "outbox").glob("disconnection-*.eml")), output
        assert list((tmp_path / "data" / "outbox").glob("heads-up-*.eml")), output

        # the README's first screen shows these lines, label by label and in this order
        labels = [label(line) for line in readme_first_screen()]
        printed = output.splitlines()
        at = printed.index(f"{READY}:")
        assert [label(line) for line in printed[at : at + len(labels)]] == labels, output

        assert get(f"http://127.0.0.1:{web}/login") == 200
        # the sandbox's printed URL answers with a page saying what it is
        assert f"http://127.0.0.1:{sandbox} (the demo's OAuth provider)" in output
        with urllib.request.urlopen(f"http://127.0.0.1:{sandbox}/", timeout=5) as root:
            assert "sandbox OAuth 2.0 provider" in root.read().decode()
        assert get(f"http://127.0.0.1:{prefect_port}/api/health") == 200
        # the printed line points the Prefect CLI at this server, where the deployments are
        api_url = re.search(r"export PREFECT_API_URL=(\S+)", output)
        assert api_url is not None, output
        assert api_url.group(1) == f"http://127.0.0.1:{prefect_port}/api"
        request = urllib.request.Request(
            f"{api_url.group(1)}/deployments/filter",
            data=b"{}",
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            deployments = {d["name"]: d for d in json.loads(response.read())}
        # and the Prefect CLI in another terminal, given that line, lists them
        listed = subprocess.run(
            [sys.executable, "-m", "prefect", "deployment", "ls"],
            env={**run_env(tmp_path), "PREFECT_API_URL": api_url.group(1)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "send-disconnection-emails" in listed.stdout, listed.stdout + listed.stderr
        assert set(deployments) == {
            "check-connections",
            "check-connections-shard",
            "send-disconnection-emails",
            "reconnect-connection",
            "refresh-datasets",
        }
        email_schedule = deployments["send-disconnection-emails"]["schedules"][0]["schedule"]
        assert email_schedule["timezone"] == "America/Phoenix"
        # the first check's and the first email run's events are in Prefect's event feed
        assert "/events (Relink's relink.* events" in output, output
        wanted = {"relink.connection.disconnected", "relink.email.sent"}
        deadline, found = time.monotonic() + 30, set()
        while not wanted <= found and time.monotonic() < deadline:
            request = urllib.request.Request(
                f"{api_url.group(1)}/events/filter",
                data=json.dumps(
                    {"filter": {"event": {"prefix": ["relink."]}}, "limit": 50}
                ).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                found = {e["event"] for e in json.loads(response.read())["events"]}
            time.sleep(0.5)
        assert wanted <= found, found

        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert "all stopped" in rest
        assert not [p for p in pids if group_alive(p)], "children left running"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in [int(p) for p in re.findall(r"pid=(\d+)", "".join(lines))]:
            if group_alive(pid):
                os.killpg(pid, signal.SIGKILL)


def test_a_busy_port_is_one_clear_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*RELINK, "run", "--web-port", str(port)],
            cwd=ROOT,
            env=run_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: port {port} (web pages) on 127.0.0.1 is already in use; "
        "stop what uses it or choose another with --web-port"
    )
    assert not (tmp_path / "data" / "relink.db").exists()


@pytest.mark.parametrize("revoked", [False, True])
def test_the_sandbox_learns_the_demo_tokens(tmp_path, revoked):
    from relink_dev.runner import write_sandbox_state
    from relink_dev.sandbox import SandboxProvider

    state = tmp_path / "sandbox.json"
    token = {"access_token": "a" * 20, "refresh_token": "r" * 20, "revoked": revoked}
    write_sandbox_state(state, [token])
    write_sandbox_state(state, [token])  # idempotent
    provider = SandboxProvider(state_file=state)
    known = provider.find_token("a" * 20)
    assert (known is None) if revoked else (known is not None and not known.is_dead())
