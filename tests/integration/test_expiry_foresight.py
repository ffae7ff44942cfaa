"""Expiry foresight (issue 19 part 1) on real parts: the expiry recorded when credentials
are stored and refreshed, and shown before it bites on the list, the connection page,
the JSON API and `relink status`; the account setting that turns heads-ups off."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from relink.app import Relink
from relink.cli import app as cli_app
from relink.cli._common import reset_app
from relink.cli.status import collect
from relink.connections import NewConnection, add_connection
from relink.models import Account, Connection
from relink.timeutil import utcnow
from relink.web import create_app
from tests.support.web import EMAILS, World, build_world, client_for, make_relink

DAY = timedelta(days=1)


@pytest.fixture
def relink(database_url: str, tmp_path) -> Iterator[Relink]:
    app = make_relink(database_url, tmp_path / "data")
    yield app
    app.close()


@pytest.fixture
def world(relink: Relink) -> World:
    return build_world(relink)


def add_oauth(relink: Relink, type_: str, name: str, **settings: str) -> int:
    with relink.transaction() as s:
        conn = add_connection(
            s,
            relink.vault,
            NewConnection(
                type=type_,
                name=name,
                owner=EMAILS["owner"],
                settings={"client_id": "app", **settings},
                secrets={"access_token": "a-token", "refresh_token": "r-token"},
            ),
            now=utcnow(),
        )
        return conn.id


def expire_in(relink: Relink, connection_id: int, span: timedelta, kind: str = "hard") -> None:
    with relink.transaction() as s:
        conn = s.get(Connection, connection_id)
        assert conn is not None
        conn.credentials_expire_at = utcnow() + span
        conn.credentials_expiry_kind = kind


def test_a_new_connection_records_its_providers_lifetime(relink: Relink, world: World) -> None:
    xero = add_oauth(relink, "xero", "Books")
    salesforce = add_oauth(relink, "salesforce", "CRM")
    testing = add_oauth(relink, "google_sheets", "Sheet", publishing_status="testing")
    with relink.sessions() as s:
        books, crm, sheet = (s.get(Connection, i) for i in (xero, salesforce, testing))
        assert books.credentials_expiry_kind == "idle"
        assert books.credentials_expire_at - utcnow() > 59 * DAY
        assert crm.credentials_expire_at is None and crm.credentials_expiry_kind is None
        assert sheet.credentials_expiry_kind == "hard"
        assert 6 * DAY < sheet.credentials_expire_at - utcnow() <= 7 * DAY
        db = s.get(Connection, world.ids["Owned DB"])
        assert db.credentials_expire_at is None  # a password has no known end


def test_a_hard_expiry_in_5_days_shows_on_the_list_the_page_and_the_api(
    relink: Relink, world: World
) -> None:
    sales = add_oauth(relink, "salesforce", "Sales")
    expire_in(relink, sales, 5 * DAY + timedelta(hours=1))
    far = add_oauth(relink, "salesforce", "Later")
    expire_in(relink, far, 30 * DAY)
    with client_for(create_app(relink), "owner") as client:
        listing = client.get("/connections").text
        row = listing.split(f'data-connection-id="{sales}"')[1].split("</tr>")[0]
        assert "expires in 5 days" in row
        later = listing.split(f'data-connection-id="{far}"')[1].split("</tr>")[0]
        assert "expires in" not in later  # outside the heads-up window: no badge
        page = client.get(f"/connections/{sales}").text
        assert 'id="expires-soon"' in page and "expire in 5 days" in page
        assert 'id="fact-credentials-expire"' in page
        api = client.get(f"/api/connections/{sales}").json()
        assert api["credentials_expiry_kind"] == "hard"
        assert api["credentials_expire_in_days"] == 5 and api["expires_soon"] is True
        assert api["credentials_expiry"] == "expires in 5 days"
        listed = {c["id"]: c for c in client.get("/api/connections").json()["connections"]}
        assert listed[far]["expires_soon"] is False
        assert listed[world.ids["Owned DB"]]["credentials_expire_at"] is None


def test_relink_status_lists_what_expires_for_good_soon(relink: Relink, world: World) -> None:
    sales = add_oauth(relink, "salesforce", "Sales")
    expire_in(relink, sales, 5 * DAY + timedelta(hours=1))
    idle = add_oauth(relink, "xero", "Books")
    expire_in(relink, idle, 2 * DAY, kind="idle")  # kept alive by the sweep: not listed
    with relink.sessions() as s:
        data = collect(s, utcnow())
    assert [(c["name"], c["credentials_expiry"]) for c in data["credentials_expiring"]] == [
        ("Sales", "expires in 5 days")
    ]


def test_accounts_set_turns_expiry_heads_ups_off_and_on(
    relink: Relink, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELINK_DATABASE_URL", relink.settings.effective_database_url)
    monkeypatch.setenv("RELINK_DATA_DIR", str(relink.settings.data_dir))
    monkeypatch.setenv("RELINK_SECRET_KEYS", relink.settings.secret_keys.get_secret_value())
    reset_app()
    runner = CliRunner()
    try:
        off = runner.invoke(cli_app, ["accounts", "set", "Acme", "--no-expiry-heads-up"])
        assert off.exit_code == 0, off.output
        assert "expiry heads-up emails off" in off.output
        with relink.sessions() as s:
            assert s.query(Account).filter_by(name="Acme").one().expiry_heads_up is False
        listed: Any = runner.invoke(cli_app, ["accounts", "list", "--json"])
        assert '"expiry_heads_up": false' in listed.output
        nothing = runner.invoke(cli_app, ["accounts", "set", "Acme"])
        assert nothing.exit_code == 1 and "nothing to change" in nothing.output
        unknown = runner.invoke(cli_app, ["accounts", "set", "Nope", "--expiry-heads-up"])
        assert unknown.exit_code == 1 and "unknown account 'Nope'" in unknown.output
    finally:
        reset_app()


def test_the_cli_says_it_too(relink: Relink, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    sales = add_oauth(relink, "salesforce", "Sales")
    expire_in(relink, sales, 5 * DAY + timedelta(hours=1))
    monkeypatch.setenv("RELINK_DATABASE_URL", relink.settings.effective_database_url)
    monkeypatch.setenv("RELINK_DATA_DIR", str(relink.settings.data_dir))
    monkeypatch.setenv("RELINK_SECRET_KEYS", relink.settings.secret_keys.get_secret_value())
    monkeypatch.setenv("COLUMNS", "200")
    reset_app()
    runner = CliRunner()
    try:
        status = runner.invoke(cli_app, ["status"])
        shown = runner.invoke(cli_app, ["connections", "show", str(sales), "--as", EMAILS["owner"]])
    finally:
        reset_app()
    assert status.exit_code == 0, status.output
    assert "credentials expiring (a reconnect renews them): 1" in status.output
    assert f"Sales (id {sales}, salesforce): expires in 5 days" in status.output
    assert shown.exit_code == 0, shown.output
    assert "expires in 5 days" in shown.output
