"""A known-broken connection always looks broken: a connection whose password was changed
at the source, then whose source went down, stays Disconnected on its page, in the JSON
API, in the list's Disconnected filter, in `relink connections list --status
disconnected` and in `relink status`, with "the source is also unreachable right now" as
a second fact. Real PostgreSQL behind a loopback proxy that can refuse connections; the
app database on SQLite and PostgreSQL. The SQL form of "broken" agrees with the pure one
(relink/domain/broken.py) on generated rows."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from relink.app import Relink
from relink.connections import list_visible, listed_counts
from relink.directory import get_user, viewer_of
from relink.domain.broken import is_broken, listed_under
from relink.domain.words import Status
from relink.models import AuditEvent, Connection, Disconnection
from relink.sweep.run import sweep
from relink.web import create_app
from tests.support.faulty_sources import PASS, REFUSE, FaultySources
from tests.support.reconnect import FAST_CHECKS, Cli, pg_settings
from tests.support.web import EMAILS, T0, build_world, client_for

if TYPE_CHECKING:
    from tests.integration.conftest import PgAdmin

H = timedelta(hours=1)


# the SQL form of the rule (filters, counts) must agree with the pure one on each backend
pytestmark = pytest.mark.both_backends


@pytest.fixture
def outage(relink_app: Relink, pg_admin: PgAdmin):
    """The "Owned DB" of tests/support/web.py (a real PostgreSQL role, through a proxy):
    checked ok at T0+1h, broken by a password change at the source at T0+2h, unreachable
    (the proxy refuses) at T0+3h. Yields its id, a check at a time, and the fix."""
    role = pg_admin.create_role()
    server = sa.make_url(pg_admin.url)
    with FaultySources() as sources:
        proxy = sources.add("127.0.0.1", server.port or 5432, PASS)
        through = server.set(host="127.0.0.1", port=proxy.port)
        settings = pg_settings(through.render_as_string(hide_password=False), role.name)
        world = build_world(relink_app, db_settings=settings, db_password=role.password)
        owned = world.ids["Owned DB"]

        def check(at):
            asyncio.run(sweep(relink_app, now=at, policy=FAST_CHECKS, connection_ids=[owned]))

        check(T0 + H)
        pg_admin.set_password(role.name, "changed-at-the-source")
        check(T0 + 2 * H)
        proxy.set(REFUSE)
        check(T0 + 3 * H)
        yield (
            owned,
            check,
            lambda: (proxy.set(PASS), pg_admin.set_password(role.name, role.password)),
        )


def test_an_outage_after_a_disconnection_leaves_it_disconnected_everywhere(
    relink_app, settings, outage
):
    owned, _, _ = outage
    with client_for(create_app(relink_app), "owner") as client:
        api = client.get(f"/api/connections/{owned}").json()
        assert api["status"] == "disconnected"
        assert api["broken"] is True
        assert api["last_outcome"] == "unreachable" and api["unreachable_now"] is True
        assert api["invalid_since"] == (T0 + 2 * H).isoformat()
        assert api["last_error_code"] == "28P01"  # what broke it, not the outage

        listed = client.get("/api/connections?status=disconnected").json()["connections"]
        assert [c["id"] for c in listed] == [owned]
        assert client.get("/api/connections?status=unreachable").json()["connections"] == []

        page = client.get(f"/connections/{owned}").text
        assert 'id="broken"' in page and 'id="unreachable"' not in page
        assert "The source is also unreachable right now" in page
        assert "Disconnected since 2026-11-02 04:00 MST" in page

        chips = client.get("/connections").text
        assert 'id="filter-disconnected"' in chips
        chip = chips.split('id="filter-disconnected"', 1)[1].split("</a>", 1)[0]
        assert '>Disconnected <span class="count">1</span>' in chip
        assert "Broken" not in chips
        filtered = client.get("/connections?status=disconnected").text
        assert f'data-connection-id="{owned}"' in filtered

    cli = Cli(settings)
    rows = json.loads(
        cli.ok(
            "connections", "list", "--as", EMAILS["owner"], "--status", "disconnected", "--json"
        ).stdout
    )
    assert [(r["id"], r["status"], r["unreachable_now"]) for r in rows] == [
        (owned, "disconnected", True)
    ]
    status = json.loads(cli.ok("status", "--json").stdout)
    assert status["connections"]["by_status"]["disconnected"] == 1
    assert status["connections"]["by_status"]["unreachable"] == 0
    assert status["open_disconnections"] == 1

    with relink_app.sessions() as session:
        changes = [
            (e.details["before"], e.details["after"])
            for e in session.scalars(
                sa.select(AuditEvent)
                .where(AuditEvent.action == "connection.status_changed")
                .order_by(AuditEvent.id)
            )
        ]
    assert changes == [("unchecked", "connected"), ("connected", "disconnected")]


def test_when_the_outage_ends_and_the_password_is_back_it_is_connected(relink_app, outage):
    owned, check, restore = outage
    restore()
    check(T0 + 4 * H)
    with client_for(create_app(relink_app), "owner") as client:
        api = client.get(f"/api/connections/{owned}").json()
    assert (api["status"], api["broken"], api["last_outcome"]) == ("connected", False, "ok")
    assert api["unreachable_now"] is False and api["invalid_since"] is None


def test_the_datasets_of_a_known_broken_connection_show_it_through_the_outage(relink_app, outage):
    """refresh and the page's dataset errors use the same definition."""
    from relink.datasets import add_dataset
    from relink.refreshing.run import refresh_many

    owned, _, _ = outage
    with relink_app.transaction() as session:
        ds = add_dataset(session, connection_id=owned, name="Items", query="SELECT 1", now=T0).id
    (result,) = asyncio.run(refresh_many(relink_app, [ds])).results
    assert (result.status, result.error_code) == ("skipped", "disconnected")
    with client_for(create_app(relink_app), "owner") as client:
        (dataset,) = client.get(f"/api/connections/{owned}").json()["datasets"]
    assert "is disconnected" in dataset["error"]


def test_a_recheck_of_a_connection_that_is_only_unreachable_hands_out_no_reconnect_link(
    relink_app, settings, closed_port
):
    """An outage is nobody's to fix: no reconnect link, a line that says so."""
    world = build_world(
        relink_app,
        db_settings={
            "host": "127.0.0.1",
            "port": str(closed_port),
            "database": "test",
            "username": "nobody",
        },
    )
    owned = world.ids["Owned DB"]
    line = Cli(settings).fails("reconnect", owned, "--as", EMAILS["owner"], "--check-only")
    assert "could not be asked" in line and "Relink keeps checking" in line
    assert "reconnects it at" not in line
    with client_for(create_app(relink_app), "owner") as client:
        api = client.get(f"/api/connections/{owned}").json()
    assert (api["status"], api["broken"], api["unreachable_now"]) == ("unreachable", False, True)


def test_an_installation_problem_counts_a_broken_connection_as_the_sweep_does(relink_app, settings):
    """The installation's Salesforce app was refused: `relink status` lists the problem for
    every connection the sweep met it on, the one broken before included (which stays
    Disconnected, the problem a second fact)."""
    from relink.directory import add_account, add_user
    from relink_dev.sandbox import SandboxProvider, SandboxServer
    from tests.integration.oauth_fixtures import add_app_connections

    provider = SandboxProvider()
    provider.register_client("sf-app", "the-rotated-secret", ["http://127.0.0.1:9/cb"])
    with relink_app.transaction() as session:
        add_account(session, "Acme", now=T0)
        add_user(session, email="o@acme.test", name="O", role="member", account="Acme", now=T0)
    with SandboxServer(provider) as sandbox:
        ids = add_app_connections(
            relink_app,
            provider,
            sandbox.url,
            app_id="sf-app",
            owner="o@acme.test",
            names=["Sales 0", "Sales 1", "Sales 2"],
            now=T0,
        )
        with relink_app.transaction() as session:  # broken before the app was refused
            conn = session.get(Connection, ids[0])
            conn.status, conn.invalid_since, conn.last_error_code = "disconnected", T0, "401"
            session.add(Disconnection(connection_id=ids[0], started_at=T0, reason_code="401"))
        cli = Cli(settings)
        cli.env["RELINK_OAUTH__SALESFORCE__CLIENT_ID"] = "sf-app"
        cli.env["RELINK_OAUTH__SALESFORCE__CLIENT_SECRET"] = "an-old-secret"
        swept = json.loads(cli.ok("check", "--json").stdout)

    (problem,) = swept["installation_problems"]
    assert problem["connections"] == 3
    status = json.loads(cli.ok("status", "--json").stdout)
    assert status["installation_problems"] == [problem]
    assert status["connections"]["by_status"]["disconnected"] == 1
    assert status["connections"]["by_status"]["misconfigured"] == 2


# --- the SQL form is the pure rule ----------------------------------------------------------


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(list(Status)), st.booleans(), st.booleans()),
        min_size=1,
        max_size=10,
    )
)
def test_the_sql_filters_and_counts_are_the_pure_rule(relink_app, rows):
    """Every status × invalid_since × an open disconnection or not, as any rule (today's
    or an earlier one) may have left them: each filter lists, and counts, exactly the
    connections `listed_under` puts under it."""
    world = _world(relink_app)
    with relink_app.transaction() as session:
        session.query(Disconnection).delete()
        session.query(Connection).delete()
        expected: dict[int, Status] = {}
        for index, (status, invalid, has_open) in enumerate(rows):
            conn = Connection(
                account_id=world["account"],
                owner_id=world["admin"],
                type="postgres",
                name=f"c{index}",
                settings={},
                credentials="x",
                status=status,
                invalid_since=T0 if invalid else None,
                created_at=T0,
                updated_at=T0,
            )
            session.add(conn)
            session.flush()
            if has_open:
                session.add(Disconnection(connection_id=conn.id, started_at=T0))
            expected[conn.id] = listed_under(status, conn.invalid_since)
            assert (expected[conn.id] is Status.DISCONNECTED) == is_broken(
                status, conn.invalid_since
            )
    with relink_app.sessions() as session:
        viewer = viewer_of(get_user(session, "admin@acme.test"))
        for status in Status:
            listed = [c.id for c in list_visible(session, viewer, status=status)]
            assert listed == sorted(i for i, s in expected.items() if s is status), status
        counts = listed_counts(session, sa.true())
        assert counts == {str(s): list(expected.values()).count(s) for s in Status}


def _world(app: Relink) -> dict[str, int]:
    from relink.directory import add_account, add_user
    from relink.models import Account

    with app.transaction() as session:
        account = session.scalar(sa.select(Account).where(Account.name == "Acme"))
        if account is None:
            account = add_account(session, "Acme", now=T0)
            add_user(
                session,
                email="admin@acme.test",
                name="Admin",
                role="admin",
                account="Acme",
                now=T0,
            )
        return {"account": account.id, "admin": get_user(session, "admin@acme.test").id}
