"""`relink notify` and `relink outbox` end to end on a real database."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from relink.cli import app as cli_app
from relink.cli._common import reset_app
from relink.emailing.mailer import SendGridMailer
from relink.emailing.run import send_due
from relink.timeutil import utcnow
from tests.support.emaildata import API_KEY, OWNER, RUN, SECRET, World
from tests.support.sendgrid_endpoint import Hang, SendGridEndpoint


class Cli:
    def __init__(self, settings, **env: str) -> None:
        self.env = {
            "RELINK_DATABASE_URL": settings.database_url,
            "RELINK_DATA_DIR": str(settings.data_dir),
            "RELINK_SECRET_KEYS": settings.secret_keys.get_secret_value(),
            "RELINK_BASE_URL": settings.base_url,
            "RELINK_SENDGRID_API_KEY": "",
            **env,
        }
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None):
        reset_app()
        try:
            return self.runner.invoke(cli_app, list(args), env={**self.env, **(env or {})})
        finally:
            reset_app()

    def ok(self, *args: str, **kw):
        result = self(*args, **kw)
        assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str, **kw):
        return json.loads(self.ok(*args, "--json", **kw).stdout)


@pytest.fixture
def cli(relink_app, settings):
    return Cli(settings)


@pytest.fixture
def world(relink_app):
    return World(relink_app)


def test_dry_run_as_of_lists_exactly_the_due_ones_and_writes_nothing(cli, world, relink_app):
    due_at_run = world.broken(RUN - timedelta(hours=24), name="Sales DB")
    due_tomorrow = world.broken(RUN - timedelta(hours=2), name="CRM")
    world.broken(RUN + timedelta(hours=1), name="Too young")
    closed = world.broken(RUN - timedelta(days=3))
    world.close(closed, RUN - timedelta(hours=1))
    before = world.row_counts()

    plan = cli.json("notify", "--dry-run", "--as-of", "2026-03-02T07:00-07:00")
    assert plan["as_of"] == RUN.isoformat()
    assert [e["disconnection_id"] for e in plan["emails"]] == [due_at_run]
    assert plan["emails"][0]["to"] == [OWNER]
    tomorrow = cli.json("notify", "--dry-run", "--as-of", "2026-03-03T14:00Z")
    assert [e["disconnection_id"] for e in tomorrow["emails"]] == [due_at_run, due_tomorrow]

    table = " ".join(cli.ok("notify", "--dry-run", "--as-of", "2026-03-02T14:00").stdout.split())
    assert "1 email(s) due; nothing sent or changed" in table and "Sales DB" in table
    assert "2026-03-02 07:00 MST" in table
    assert world.row_counts() == before
    assert not (relink_app.settings.data_dir / "outbox").exists()


def test_as_of_without_dry_run_catches_up_a_missed_run_as_its_dry_run_showed(cli, world):
    """An operator re-runs yesterday's 07:00: it decides at 07:00, not at the wall clock,
    so it emails exactly what `--dry-run --as-of` listed for that time."""
    due_at_run = world.broken(RUN - timedelta(hours=24), name="Sales DB")
    world.broken(RUN - timedelta(hours=2), name="CRM")  # due only from the next day's run
    planned = cli.json("notify", "--dry-run", "--as-of", "2026-03-02T07:00-07:00")
    assert [e["disconnection_id"] for e in planned["emails"]] == [due_at_run]

    ran = cli.json("notify", "--as-of", "2026-03-02T07:00-07:00")
    assert ran["outbox"] == 1 and ran["sent"] == 0
    assert world.states() == {due_at_run: "outbox"}
    again = cli.json("notify", "--as-of", "2026-03-02T14:00Z")  # once per disconnection
    assert again["outbox"] == 0 and world.states() == {due_at_run: "outbox"}


def test_as_of_in_the_future_without_dry_run_is_refused(cli, world):
    world.broken(RUN - timedelta(hours=24), name="Sales DB")
    tomorrow = (utcnow() + timedelta(days=1)).isoformat()
    result = cli("notify", "--as-of", tomorrow)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: --as-of {tomorrow!r} is in the future: a run can only catch up a time that "
        "has passed (add --dry-run to see what that run will send)"
    )
    assert world.notifications() == {}
    assert cli("notify", "--dry-run", "--as-of", tomorrow).exit_code == 0


def test_malformed_as_of_is_a_clear_error(cli, world):
    result = cli("notify", "--dry-run", "--as-of", "tomorrow 7am")
    assert result.exit_code == 1
    assert "--as-of 'tomorrow 7am' is not an ISO 8601 time" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_notify_without_an_api_key_fills_the_outbox(cli, world, relink_app):
    episode = world.broken(utcnow() - timedelta(hours=25), name="Sales DB")
    summary = cli.json("notify")
    assert summary["outbox"] == 1 and summary["sent"] == 0
    (row,) = cli.json("outbox", "list", "--state", "outbox")
    assert row["disconnection_id"] == episode and row["to"] == [OWNER]
    shown = cli.ok("outbox", "show", str(row["id"])).stdout
    assert "Content-Type: multipart/alternative" in shown
    assert "Subject: Reconnect your PostgreSQL connection" in shown
    assert SECRET not in shown
    assert cli.json("notify")["outbox"] == 0  # once, ever


def test_notify_sends_through_sendgrid_when_a_key_is_set(cli, world):
    episode = world.broken(utcnow() - timedelta(hours=25))
    with SendGridEndpoint(api_key=API_KEY) as endpoint:
        env = {"RELINK_SENDGRID_API_KEY": API_KEY, "RELINK_SENDGRID_HOST": endpoint.url}
        output = cli.ok("notify", env=env).stdout
        assert "through SendGrid" in output
        assert len(endpoint.delivered) == 1
    assert world.states() == {episode: "sent"}


def test_outbox_release_hands_an_unknown_email_to_the_next_run(cli, world, relink_app):
    unknown = world.broken(RUN - timedelta(hours=25), name="Sales DB")
    with SendGridEndpoint(api_key=API_KEY) as endpoint:
        endpoint.script(Hang(seconds=5))
        send_due(relink_app, now=RUN, mailer=SendGridMailer(API_KEY, endpoint.url, 0.3))
        endpoint.release_hangs()
    (row,) = cli.json("outbox", "list", "--state", "unknown")
    assert row["disconnection_id"] == unknown
    listed = " ".join(cli.ok("outbox", "list", "--state", "unknown").stdout.split())
    assert "Sales DB" in listed and "unknown" in listed

    result = cli.ok("outbox", "release", str(row["id"]), "--as", "ann@acme.test")
    assert "released" in result.stdout
    assert world.states() == {unknown: "released"}
    again = cli("outbox", "release", str(row["id"]))
    assert again.exit_code == 1
    assert "is released: only an unknown one can be released" in again.stderr


def test_release_refuses_other_states_and_unknown_ids(cli, world, relink_app):
    world.broken(utcnow() - timedelta(hours=25))
    cli.ok("notify")
    (row,) = cli.json("outbox", "list")
    result = cli("outbox", "release", str(row["id"]))
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: notification {row['id']} is outbox: only an unknown one can be released "
        "(see `relink outbox list --state unknown`)"
    )
    missing = cli("outbox", "release", "999")
    assert missing.exit_code == 1 and "no notification 999" in missing.stderr
    member = cli("outbox", "release", str(row["id"]), "--as", "cid@acme.test")
    assert member.exit_code == 1 and "not an active admin" in member.stderr


def test_outbox_list_rejects_an_unknown_state(cli, world):
    result = cli("outbox", "list", "--state", "lost")
    assert result.exit_code == 1 and "unknown state 'lost'" in result.stderr
