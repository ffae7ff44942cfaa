"""People leave: `relink users deactivate / reactivate`, `relink connections transfer`, and
a previous owner who keeps seeing a connection someone else took over (by a transfer or
by reconnecting it). Bad input is one line, exit 1, and changes nothing."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from relink.emailing.due import plan
from relink.models import AuditEvent, Connection, ConnectionShare, User
from relink.reconnecting.replace import reconnect_with_secrets
from relink.sweep.run import sweep
from tests.integration.test_cli import Cli
from tests.support import reconnect as rc
from tests.support.emaildata import ADMIN, OWNER, RUN, World

MEMBER = "cid@acme.test"
FOREIGN = "eve@other.test"


@pytest.fixture
def cli(relink_app, settings):
    return Cli(settings)


@pytest.fixture
def world(relink_app, cli):
    world = World(relink_app)  # Acme: ann (admin), bob (member, owns everything), cid
    cli.ok("accounts", "add", "Other")
    cli.ok("users", "add", FOREIGN, "--name", "Eve", "--role", "admin", "--account", "Other")
    return world


def visible_ids(cli, who):
    return [c["id"] for c in cli.json("connections", "list", "--as", who)]


def snapshot(app):
    """Everything these commands may change."""
    with app.sessions() as session:
        return (
            session.execute(sa.select(User.email, User.active).order_by(User.id)).all(),
            session.execute(sa.select(Connection.id, Connection.owner_id)).all(),
            session.execute(
                sa.select(ConnectionShare.connection_id, ConnectionShare.user_id)
            ).all(),
            session.scalar(sa.select(sa.func.count(AuditEvent.id))),
        )


def actions(app, connection_id=None):
    with app.sessions() as session:
        query = sa.select(AuditEvent).order_by(AuditEvent.id)
        if connection_id is not None:
            query = query.where(AuditEvent.connection_id == connection_id)
        return [(e.action, e.details) for e in session.scalars(query)]


def test_a_deactivated_owner_cannot_act_and_their_email_goes_to_the_admins(relink_app, cli, world):
    episode = world.broken(RUN - timedelta(hours=25))
    assert [d.recipients.to for d in plan(relink_app, now=RUN)] == [(OWNER,)]

    cli.ok("users", "deactivate", OWNER)

    refused = cli("connections", "list", "--as", OWNER)
    assert refused.exit_code == 1
    assert refused.output.strip().splitlines() == [
        f"error: {OWNER} is deactivated and cannot sign in (`relink users reactivate "
        f"{OWNER}` restores them)"
    ]
    assert cli("reconnect", "1", "--as", OWNER, "--check-only").exit_code == 1
    assert visible_ids(cli, ADMIN) == [1]  # the connection stays, owned by bob
    (due,) = plan(relink_app, now=RUN)
    assert (due.disconnection_id, due.recipients.to) == (episode, (ADMIN,))
    assert due.recipients.why == f"admins: the owner {OWNER} is inactive"
    users = {u["email"]: u["active"] for u in cli.json("users", "list")}
    assert users[OWNER] is False
    assert [a for a, _ in actions(relink_app)] == ["user.deactivated"]

    cli.ok("users", "reactivate", OWNER)
    assert visible_ids(cli, OWNER) == [1]
    assert plan(relink_app, now=RUN)[0].recipients.to == (OWNER,)


def test_a_deactivated_owners_connections_are_still_checked(relink_app, cli, world):
    connection_id = world.connection()
    with relink_app.transaction() as session:  # a port nobody listens on: refused at once
        conn = session.get(Connection, connection_id)
        conn.settings = {**conn.settings, "host": "127.0.0.1", "port": "9"}
    cli.ok("users", "deactivate", OWNER)
    summary = asyncio.run(sweep(relink_app, now=RUN, policy=rc.FAST_CHECKS))
    assert summary.checked >= 1
    with relink_app.sessions() as session:
        assert session.get(Connection, connection_id).last_checked_at is not None


def test_transfer_hands_the_connection_over_and_the_previous_owner_keeps_seeing_it(
    relink_app, cli, world
):
    world.broken(RUN - timedelta(hours=25))

    done = cli.ok("connections", "transfer", "1", "--to", MEMBER, "--as", ADMIN)

    assert done.output.strip() == f"connection 1 now belongs to {MEMBER}"
    shown = cli.json("connections", "show", "1", "--as", OWNER)  # shared with bob now
    assert (shown["created_by_email"], shown["shared_with"]) == (MEMBER, [OWNER])
    assert visible_ids(cli, MEMBER) == [1]
    assert plan(relink_app, now=RUN)[0].recipients.to == (MEMBER,)
    assert actions(relink_app, 1) == [
        ("connection.shared", {"shared_with": OWNER, "reason": "previous owner"}),
        (
            "connection.owner_changed",
            {"previous_owner": OWNER, "owner": MEMBER, "reason": "transfer"},
        ),
    ]


def test_a_deactivated_previous_owner_is_not_shared_with(relink_app, cli, world):
    world.broken(RUN - timedelta(hours=25))
    cli.ok("users", "deactivate", OWNER)
    cli.ok("connections", "transfer", "1", "--to", MEMBER, "--as", ADMIN)
    cli.ok("users", "reactivate", OWNER)
    assert visible_ids(cli, OWNER) == []
    assert [a for a, _ in actions(relink_app, 1)] == ["connection.owner_changed"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("users", "deactivate", "nobody@acme.test"), "unknown user 'nobody@acme.test'"),
        (("users", "reactivate", OWNER), f"{OWNER} is active already"),
        (("users", "deactivate", ADMIN), f"{ADMIN} is the last active admin of 'Acme'"),
        (("users", "deactivate", FOREIGN), f"{FOREIGN} is the last active admin of 'Other'"),
        (
            ("connections", "transfer", "1", "--to", FOREIGN, "--as", ADMIN),
            f"{FOREIGN} belongs to another account",
        ),
        (
            ("connections", "transfer", "1", "--to", MEMBER, "--as", OWNER),
            f"only an admin may transfer a connection; {OWNER} is not",
        ),
        (
            ("connections", "transfer", "1", "--to", MEMBER, "--as", FOREIGN),
            "no connection 1 visible to you",
        ),
        (
            ("connections", "transfer", "1", "--to", "nobody@acme.test", "--as", ADMIN),
            "unknown user 'nobody@acme.test'",
        ),
        (
            ("connections", "transfer", "1", "--to", OWNER, "--as", ADMIN),
            f"{OWNER} owns connection 1 already",
        ),
        (("connections", "transfer", "9", "--to", MEMBER, "--as", ADMIN), "no connection 9"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(relink_app, cli, world, args, message):
    world.broken(RUN - timedelta(hours=25))
    before = snapshot(relink_app)

    result = cli(*args)

    assert result.exit_code == 1, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert snapshot(relink_app) == before


def test_transfer_to_or_by_a_deactivated_user_is_refused(relink_app, cli, world):
    world.broken(RUN - timedelta(hours=25))
    cli.ok("users", "add", "dan@acme.test", "--name", "Dan", "--role", "admin", "--account", "Acme")
    cli.ok("users", "deactivate", MEMBER)
    before = snapshot(relink_app)
    to_gone = cli("connections", "transfer", "1", "--to", MEMBER, "--as", ADMIN)
    assert to_gone.exit_code == 1 and f"{MEMBER} is deactivated" in to_gone.output
    cli.ok("users", "deactivate", "dan@acme.test")  # ann is still an active admin
    by_gone = cli("connections", "transfer", "1", "--to", ADMIN, "--as", "dan@acme.test")
    assert by_gone.exit_code == 1 and "dan@acme.test is deactivated" in by_gone.output
    assert snapshot(relink_app)[1:3] == before[1:3]
    assert json.loads(cli.ok("users", "list", "--json").stdout)[0]["active"] is True


def test_someone_else_reconnecting_keeps_the_previous_owner_in(relink_app, pg_admin):
    role = pg_admin.create_role()
    rc.add_people(relink_app)
    world = rc.add_pg_connection(
        relink_app,
        settings=rc.pg_settings(pg_admin.url, role.name),
        password="not-the-password",
        queries=[("One", "SELECT 1 AS one")],
        metric=False,
    )

    done = asyncio.run(
        reconnect_with_secrets(
            relink_app,
            world.connection_id,
            actor=rc.ADMIN,
            secrets={"password": role.password},
            now=rc.T1,
            refresh=False,
        )
    )

    assert (done.previous_owner, done.owner) == (rc.OWNER, rc.ADMIN)
    view = rc.connection_view(relink_app, world.connection_id)
    assert view["created_by_email"] == rc.ADMIN and rc.OWNER in view["shared_with"]
    shared = [d for a, d in actions(relink_app, world.connection_id) if a == "connection.shared"]
    assert shared[-1] == {"shared_with": rc.OWNER, "reason": "previous owner"}
