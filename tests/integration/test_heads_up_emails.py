"""The expiry heads-up (issue 19): one email to the owner RELINK_HEADS_UP_DAYS before a
hard expiry, exactly once per expiry, through the disconnection emails' run, ledger
protocol and outbox/SendGrid path; none when the account turned heads-ups off. Time is
an input: each run is told its `now`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from relink.app import Relink
from relink.cli import app as cli_app
from relink.cli._common import reset_app
from relink.cli.status import collect
from relink.connections import NewConnection, add_connection
from relink.domain.expiry import Expiry, ExpiryKind, heads_up_due
from relink.emailing.headsup import due_query, heads_up_reference
from relink.emailing.ledger import CLAIM_LEASE
from relink.emailing.mailer import OutboxMailer, outbox_folder
from relink.emailing.render import BUTTON_COLOR
from relink.emailing.run import send_due
from relink.emailing.sender import SendHooks
from relink.models import Account, Connection, HeadsUp
from relink.web import create_app
from tests.support.web import EMAILS, T0, World, build_world, client_for, make_relink

pytestmark = pytest.mark.both_backends

DAY = timedelta(days=1)


@pytest.fixture
def relink(database_url: str, tmp_path) -> Iterator[Relink]:
    app = make_relink(database_url, tmp_path / "data")
    yield app
    app.close()


@pytest.fixture
def world(relink: Relink) -> World:
    return build_world(relink)


def add_expiring(relink: Relink, name: str, who: str, lifetime: str = "8 days") -> int:
    """A Salesforce connection whose org ends refresh tokens `lifetime` after consent,
    granted at T0."""
    with relink.transaction() as s:
        return add_connection(
            s,
            relink.vault,
            NewConnection(
                type="salesforce",
                name=name,
                owner=EMAILS[who],
                settings={"client_id": "app", "refresh_token_lifetime": lifetime},
                secrets={"access_token": "a-token", "refresh_token": "r-token"},
            ),
            now=T0,
        ).id


def heads_ups(relink: Relink) -> list[HeadsUp]:
    with relink.sessions() as s:
        return list(s.scalars(sa.select(HeadsUp).order_by(HeadsUp.id)))


def test_expires_in_8_days_then_one_heads_up_at_7_and_never_again(
    relink: Relink, world: World
) -> None:
    sales = add_expiring(relink, "Sales", "owner")
    with relink.sessions() as s:
        assert s.get(Connection, sales).credentials_expire_at == T0 + 8 * DAY

    quiet = send_due(relink, now=T0)  # expires in 8 days: not yet
    assert quiet.heads_ups["outbox"] == 0 and heads_ups(relink) == []

    run = send_due(relink, now=T0 + DAY)  # expires in 7 days: the heads-up
    assert run.heads_ups["outbox"] == 1 and run.counts["outbox"] == 0
    [row] = heads_ups(relink)
    assert (row.connection_id, row.expires_at, row.state) == (sales, T0 + 8 * DAY, "outbox")
    assert row.recipients == [EMAILS["owner"]]
    eml = OutboxMailer(outbox_folder(relink.settings)).path_of(
        heads_up_reference(sales, T0 + 8 * DAY)
    )
    text = eml.read_text()
    assert "Reconnect Sales" in text and BUTTON_COLOR in text
    assert f"/connections/{sales}" in text and "7 days" in text
    assert "r-token" not in text and "a-token" not in text

    for later in (T0 + DAY + timedelta(hours=1), T0 + 2 * DAY, T0 + 7 * DAY):
        again = send_due(relink, now=later)
        assert again.heads_ups["outbox"] == 0
    assert len(heads_ups(relink)) == 1  # once per expiry

    gone = send_due(relink, now=T0 + 9 * DAY)  # expired: a heads-up would come too late
    assert gone.heads_ups["outbox"] == 0


def test_an_account_that_turned_heads_ups_off_gets_none(relink: Relink, world: World) -> None:
    add_expiring(relink, "Sales", "owner")
    with relink.transaction() as s:
        s.scalars(sa.select(Account).where(Account.name == "Acme")).one().expiry_heads_up = False
    run = send_due(relink, now=T0 + DAY)
    assert run.heads_ups["outbox"] == 0 and heads_ups(relink) == []


def test_a_broken_connection_gets_its_disconnection_email_not_a_heads_up(
    relink: Relink, world: World
) -> None:
    sales = add_expiring(relink, "Sales", "owner")
    with relink.transaction() as s:
        conn = s.get(Connection, sales)
        conn.status = "disconnected"
        conn.invalid_since = T0
    run = send_due(relink, now=T0 + DAY)
    assert run.heads_ups["outbox"] == 0


def test_two_runs_at_once_send_one_heads_up(relink: Relink, world: World) -> None:
    add_expiring(relink, "Sales", "owner")
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: send_due(relink, now=T0 + DAY), range(2)))
    assert sum(r.heads_ups["outbox"] for r in runs) == 1
    assert len(heads_ups(relink)) == 1


def test_relink_status_counts_the_heads_ups_of_the_next_run(relink: Relink, world: World) -> None:
    add_expiring(relink, "Sales", "owner")
    with relink.sessions() as s:
        assert collect(s, T0)["emails"]["heads_ups_due"] == 0  # next run: T0's 07:00 MST
        assert collect(s, T0 + DAY)["emails"]["heads_ups_due"] == 1


class Crash(Exception):
    """The run dies here."""


def test_a_run_that_dies_after_its_claim_never_resends_the_heads_up(
    relink: Relink, world: World
) -> None:
    add_expiring(relink, "Sales", "owner")

    def die(item: object) -> None:
        raise Crash

    with pytest.raises(Crash):
        send_due(relink, now=T0 + DAY, hooks=SendHooks(after_claim=die))
    [row] = heads_ups(relink)
    assert row.state == "claimed"  # committed before the request would have gone out
    assert send_due(relink, now=T0 + DAY).heads_ups["outbox"] == 0  # still claimed: skipped
    later = send_due(relink, now=T0 + DAY + CLAIM_LEASE + timedelta(minutes=1))
    assert later.counts["expired_claims"] == 1 and later.heads_ups["outbox"] == 0
    [row] = heads_ups(relink)
    assert row.state == "unknown"  # it may have been sent: never resent automatically


@pytest.mark.parametrize("hours", [-30, 0, 1, 24, 47, 48, 49, 7 * 24, 8 * 24, 9 * 24, 30 * 24])
def test_the_due_query_is_the_domain_rule(relink: Relink, world: World, hours: int) -> None:
    """`headsup.due_query` (SQL) and `domain.expiry.heads_up_due` agree, at the edges too."""
    sales = add_expiring(relink, "Sales", "owner", lifetime="2 days")
    now = T0 + timedelta(hours=hours) - 7 * DAY + 2 * DAY  # around the window's start
    for at in (now, T0 + 2 * DAY, T0 + 2 * DAY - 7 * DAY):
        expected = heads_up_due(Expiry(T0 + 2 * DAY, ExpiryKind.HARD), at)
        with relink.sessions() as s:
            found = sales in s.scalars(due_query(at)).all()
        assert found == expected, at


def test_admins_see_the_heads_ups_on_the_emails_page_and_the_cli_lists_them(
    relink: Relink, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    sales = add_expiring(relink, "Sales", "owner")
    send_due(relink, now=T0 + DAY)
    with client_for(create_app(relink), "admin") as admin:
        page = admin.get("/emails").text
        table = page.split('id="heads-ups"')[1].split("</table>")[0]
        assert f'href="/connections/{sales}"' in table and EMAILS["owner"] in table
    with client_for(create_app(relink), "outsider") as outsider:  # another account's admin
        assert 'id="no-heads-ups"' in outsider.get("/emails").text
    monkeypatch.setenv("RELINK_DATABASE_URL", relink.settings.effective_database_url)
    monkeypatch.setenv("RELINK_DATA_DIR", str(relink.settings.data_dir))
    monkeypatch.setenv("RELINK_SECRET_KEYS", relink.settings.secret_keys.get_secret_value())
    reset_app()
    try:
        listed = CliRunner().invoke(cli_app, ["outbox", "heads-ups", "--json"])
    finally:
        reset_app()
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert (row["connection_id"], row["state"], row["to"]) == (sales, "outbox", [EMAILS["owner"]])
