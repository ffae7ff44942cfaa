"""`relink reconnect`, `relink datasets refresh` and `relink audit` on a real database and
the real loopback PostgreSQL (password checks on)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from relink.sweep.run import sweep
from tests.support.reconnect import (
    FAST_CHECKS,
    OUTSIDER,
    OWNER,
    SHARED,
    T0,
    Cli,
    add_broken_pg_connection,
    add_people,
    add_pg_connection,
    connection_view,
    failed_attempts_only,
    pg_settings,
    snapshot,
    warehouse_rows,
)
from tests.support.terminal import Terminal

if TYPE_CHECKING:
    from tests.integration.conftest import PgAdmin

NEW_PASSWORD = "cli-new-pw-marker"


@pytest.fixture
def cli(relink_app, settings) -> Cli:
    return Cli(settings)


@pytest.fixture
def broken(relink_app, pg_admin: PgAdmin):
    return add_broken_pg_connection(relink_app, pg_admin, new_password=NEW_PASSWORD)


def test_reconnect_reads_the_new_password_from_stdin_and_refreshes(relink_app, cli, broken):
    world, _ = broken
    result = cli.ok("reconnect", world.connection_id, "--as", SHARED, input=NEW_PASSWORD + "\n")

    assert f"reconnected by {SHARED}" in result.stdout
    assert f"Created By is now {SHARED} (was {OWNER})" in result.stdout
    assert "Refreshed 1 of 1 dataset(s)" in result.stdout
    assert NEW_PASSWORD not in result.stdout + result.stderr
    assert connection_view(relink_app, world.connection_id)["status"] == "connected"
    assert len(warehouse_rows(relink_app, f"ds_{world.dataset_ids[0]}")) == 3

    trail = json.loads(cli.ok("audit", "--connection", world.connection_id, "--json").stdout)
    actions = [e["action"] for e in trail]
    assert actions[-4:] == [
        "connection.status_changed",
        "connection.shared",  # with the previous owner, who keeps seeing it
        "connection.reconnected",
        "dataset.refreshed",
    ]
    assert trail[-2]["actor"] == SHARED and trail[-2]["details"]["previous_owner"] == OWNER
    assert NEW_PASSWORD not in json.dumps(trail)


def test_every_bad_input_exits_1_with_one_line_and_writes_nothing(relink_app, cli, broken):
    world, _ = broken
    cid = world.connection_id
    before = snapshot(relink_app)
    cases = [
        (("reconnect", cid, "--as", "nobody@acme.test"), "", "unknown user"),
        (("reconnect", 999, "--as", SHARED), "", "no connection 999 visible to you"),
        (("reconnect", cid, "--as", OUTSIDER), "", f"no connection {cid} visible to you"),
        (("reconnect", cid, "--as", SHARED), "", "no value for 'password' on stdin"),
        (("reconnect", cid, "--as", SHARED), "\n", "'password' may not be empty"),
        (("reconnect", cid, "--as", SHARED), "wrong\n", "the source refused the new credentials"),
        (("reconnect", cid, "--as", SHARED, "--code-url", "x"), "", "are for OAuth connections"),
        (("reconnect", cid, "--as", OUTSIDER, "--check-only"), "", "visible to you"),
        (("datasets", "refresh"), "", "give --connection ID or one or more DATASET_IDs"),
        (("datasets", "refresh", 999), "", "unknown dataset 999"),
        (("datasets", "refresh", "--connection", 999), "", "unknown connection 999"),
        (("audit", "--connection", 999), "", "unknown connection 999"),
        (("audit", "--connection", cid, "--as", OUTSIDER), "", "visible to you"),
    ]
    for args, stdin, expected in cases:
        line = cli.fails(*args, input=stdin)
        assert expected in line, (args, line)
        assert "wrong" not in line.replace("wrong password", "")
    (refused,) = failed_attempts_only(before, snapshot(relink_app))  # only the refused password
    assert refused["details"]["code"] == "28P01"


def test_check_only_gives_the_link_while_broken_and_refreshes_once_fixed_at_the_source(
    relink_app, cli, pg_admin, broken
):
    world, role = broken
    cid = world.connection_id
    line = cli.fails("reconnect", cid, "--as", OWNER, "--check-only")
    assert "is still disconnected" in line
    assert f"reconnects it at http://relink.test/connections/{cid}" in line

    pg_admin.set_password(role.name, role.password)  # fixed at the source
    result = cli.ok("reconnect", cid, "--as", OWNER, "--check-only")
    assert "the stored credentials work; the disconnection is closed" in result.stdout
    assert "Refreshed 1 of 1 dataset(s)" in result.stdout
    assert connection_view(relink_app, cid)["created_by"] == "Bob Owner"


def test_datasets_refresh_and_audit_visibility(relink_app, cli, broken, postgres_url):
    world, _ = broken
    good = add_pg_connection(
        relink_app,
        name="Trusted",
        settings=pg_settings(postgres_url, "postgres"),
        password="trusted",
        queries=[("Answer", "SELECT 42 AS answer")],
        metric=False,
    )
    refreshed = json.loads(
        cli.ok("datasets", "refresh", "--connection", good.connection_id, "--json").stdout
    )
    assert (refreshed["ok"], refreshed["results"][0]["row_count"]) == (1, 1)

    skipped = cli("datasets", "refresh", *world.dataset_ids, *good.dataset_ids)
    assert skipped.exit_code == 0  # a broken connection's dataset is skipped, not failed
    assert "skipped" in skipped.stdout

    seen_by_outsider = json.loads(cli.ok("audit", "--as", OUTSIDER, "--json").stdout)
    assert seen_by_outsider == []  # Dan owns nothing and nothing is shared with him
    seen_by_owner = json.loads(cli.ok("audit", "--as", OWNER, "--json").stdout)
    assert {e["connection_id"] for e in seen_by_owner} == {world.connection_id, good.connection_id}


# --- changing settings ----------------------------------------------------------------------


@pytest.fixture
def wrong_user(relink_app, pg_admin: PgAdmin):
    """A connection that names a role that does not exist; the right one exists."""
    role = pg_admin.create_role()
    schema = pg_admin.create_schema(role.name)
    add_people(relink_app)
    world = add_pg_connection(
        relink_app,
        settings=pg_settings(pg_admin.url, "relink_no_such_role"),
        password="old",
        queries=[("Items", f'SELECT id, name FROM "{schema}".items ORDER BY id')],
    )
    asyncio.run(sweep(relink_app, now=T0 + timedelta(hours=1), policy=FAST_CHECKS))
    return world, role


def test_reconnect_changes_a_setting_given_with_set(relink_app, cli, wrong_user):
    world, role = wrong_user
    cid = world.connection_id
    before = snapshot(relink_app)
    for args, refusal in [
        (("--set", "sslmode=require"), "cannot change 'sslmode'; it may change: host, port"),
        (("--set", "username"), "--set 'username': expected key=value"),
        (("--set", "username=x", "--check-only"), "they do not go with --check-only"),
        (("--secret-env", "password=RELINK_TEST_UNSET"), "RELINK_TEST_UNSET is not set"),
    ]:
        assert refusal in cli.fails("reconnect", cid, "--as", SHARED, *args, input="pw\n")
    assert snapshot(relink_app) == before

    result = cli.ok(
        "reconnect", cid, "--as", SHARED, "--set", f"username={role.name}", input=role.password
    )

    assert "changed: username" in result.stdout and "Refreshed 1 of 1" in result.stdout
    view = connection_view(relink_app, cid)
    assert view["status"] == "connected" and view["settings"]["username"] == role.name


def test_a_terminal_is_guided_through_prompts_with_the_current_values(
    relink_app, settings, wrong_user
):
    world, role = wrong_user
    current = connection_view(relink_app, world.connection_id)["settings"]
    relink = Path(sys.executable).with_name("relink")
    argv = [str(relink), "reconnect", str(world.connection_id), "--as", SHARED]
    with Terminal(argv, {**os.environ, **Cli(settings).env}) as terminal:
        terminal.expect("Enter keeps a value.")
        for label, name in (("Host", "host"), ("Port", "port"), ("Database", "database")):
            terminal.expect(f"{label} [{current[name]}]: ")
            terminal.type("")  # kept
        terminal.expect("Username [relink_no_such_role]: ")
        terminal.type(role.name)
        terminal.expect("New password: ")
        terminal.type(role.password)
        code, rest = terminal.finish()

    assert code == 0, rest
    assert "changed: username" in rest and role.password not in terminal.transcript
    assert connection_view(relink_app, world.connection_id)["settings"]["username"] == role.name
