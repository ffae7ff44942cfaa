"""`relink status`: connections by status, open disconnections, installation problems,
emails due at the next 07:00 MST run (the notify rule at that instant), and the last
sweep."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from relink import demo
from relink.cli.status import collect
from relink.directory import add_account, add_user
from relink.models import Connection, Disconnection
from relink.sweep.record import record_sweep
from relink_dev.sandbox import SandboxProvider, SandboxServer
from tests.integration.oauth_fixtures import add_app_connections
from tests.support.reconnect import Cli

pytestmark = (
    pytest.mark.both_backends
)  # status counts and times come from SQL aggregates and timestamp types

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)  # 05:00 MST: the next run is 14:00 UTC today


def break_connection(session, name: str, started_at: datetime, *, ended: bool = False) -> None:
    conn = session.scalar(sa.select(Connection).where(Connection.name == name))
    conn.status = "connected" if ended else "disconnected"
    session.add(
        Disconnection(
            connection_id=conn.id,
            started_at=started_at,
            reason_code="invalid_grant",
            ended_at=started_at + timedelta(hours=1) if ended else None,
        )
    )


@pytest.fixture
def seeded(relink_app):
    with relink_app.transaction() as session:
        # the demo's own: "Support", broken for 26 h when the demo was loaded: due
        demo.seed(session, relink_app.vault, now=NOW - timedelta(days=3))
        # open for 25 h at the 14:00 run: due
        break_connection(session, "Finance (MariaDB)", datetime(2026, 1, 9, 13, 0, tzinfo=UTC))
        # open for 23 h at the run: not yet
        break_connection(session, demo.HEALTHY_OAUTH, datetime(2026, 1, 9, 15, 0, tzinfo=UTC))
        # closed before the run: never
        break_connection(session, "Billing API", datetime(2026, 1, 8, 9, 0, tzinfo=UTC), ended=True)
    return relink_app


def test_status_counts_and_emails_due_at_the_next_run(seeded):
    with seeded.sessions() as session:
        data = collect(session, NOW)
    assert data["connections"]["total"] == 5
    assert data["connections"]["by_status"]["disconnected"] == 3
    assert data["open_disconnections"] == 3
    assert data["emails"] == {
        "next_run": "2026-01-10T14:00:00+00:00",
        "due": 2,
        "heads_ups_due": 0,
    }
    assert data["last_sweep"] is None


def test_status_shows_the_last_sweep_and_its_outcome(seeded, settings):
    with seeded.transaction() as session:
        record_sweep(
            session, {"checked": 3, "outcomes": {"ok": 3}}, now=NOW, source="x", outcome="ok"
        )
        record_sweep(
            session,
            {"checked": 5, "outcomes": {"ok": 3, "auth_failed": 2}, "opened": 2, "closed": 0},
            now=NOW + timedelta(minutes=15),
            source="check-connections",
            outcome="completed",
        )
    cli = Cli(settings)
    result = cli("status", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["last_sweep"]["source"] == "check-connections"
    assert data["last_sweep"]["summary"]["outcomes"] == {"ok": 3, "auth_failed": 2}
    text = cli("status")
    assert text.exit_code == 0, text.output
    assert "open disconnections: 3" in text.stdout
    assert "last sweep:" in text.stdout and "check-connections, completed: 5 checked" in text.stdout
    swept = NOW + timedelta(minutes=15)
    assert f"last sweep: {swept:%Y-%m-%d %H:%M} UTC by" in text.stdout  # to the minute
    assert re.search(r"next run \(\d{4}-\d\d-\d\d 14:00 UTC, 07:00 MST\): 3 disconn", text.stdout)
    assert not re.search(r"\d\d:\d\d:\d\d", text.stdout)  # no seconds, no microseconds
    assert "2 auth_failed" in text.stdout


def test_relink_check_records_its_sweep(relink_app, settings):
    cli = Cli(settings)
    assert cli("check", "--json").exit_code == 0
    data = json.loads(cli("status", "--json").stdout)
    assert data["last_sweep"]["source"] == "relink check"
    assert data["last_sweep"]["summary"]["checked"] == 0
    assert data["connections"]["total"] == 0


def test_an_installation_problem_is_listed_with_its_fix_and_breaks_nothing(relink_app, settings):
    """The Salesforce app's secret was rotated at the provider and RELINK_OAUTH__SALESFORCE__
    CLIENT_SECRET still holds the old one: `relink check` and `relink status` say which
    provider fails and which settings an admin fixes; no connection is disconnected and
    no email is due."""
    app_id, old_secret = "relink-salesforce-app", "the-old-app-secret"
    provider = SandboxProvider()
    provider.register_client(app_id, "the-rotated-app-secret", ["http://127.0.0.1:9/cb"])
    with SandboxServer(provider) as sandbox:
        with relink_app.transaction() as session:
            add_account(session, "Acme", now=NOW)
            add_user(session, email="o@acme.test", name="O", role="member", account="Acme", now=NOW)
        add_app_connections(
            relink_app,
            provider,
            sandbox.url,
            app_id=app_id,
            owner="o@acme.test",
            names=["Sales 0", "Sales 1", "Sales 2"],
            now=NOW,
        )
        cli = Cli(settings)
        cli.env["RELINK_OAUTH__SALESFORCE__CLIENT_ID"] = app_id
        cli.env["RELINK_OAUTH__SALESFORCE__CLIENT_SECRET"] = old_secret
        checked = cli.ok("check", "--json").stdout

    swept = json.loads(checked)
    assert swept["outcomes"]["misconfigured"] == 3 and swept["opened"] == 0
    (problem,) = swept["installation_problems"]
    assert (problem["provider"], problem["code"], problem["connections"]) == (
        "salesforce",
        "invalid_client",
        3,
    )
    assert "RELINK_OAUTH__SALESFORCE__CLIENT_SECRET" in problem["fix"]
    data = json.loads(cli.ok("status", "--json").stdout)
    assert data["installation_problems"] == [problem]
    assert data["connections"]["by_status"]["misconfigured"] == 3
    assert data["open_disconnections"] == 0 and data["emails"]["due"] == 0
    text = cli.ok("status").stdout
    assert "installation problems" in text
    assert "salesforce: 3 connection(s), invalid_client:" in text
    assert "RELINK_OAUTH__SALESFORCE__CLIENT_ID" in text
    assert old_secret not in text + checked


def test_without_installation_problems_status_says_so(relink_app, settings):
    assert "installation problems: none" in Cli(settings).ok("status").stdout
