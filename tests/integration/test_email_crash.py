"""A run killed (SIGKILL) between claim and send, or between send and mark, never makes
the next run send twice: its claim becomes `unknown` (it may have been sent) and stays
unsent until an admin releases it."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from relink.cli import app as cli_app
from relink.cli._common import reset_app
from relink.emailing.mailer import SendGridMailer
from relink.emailing.run import send_due
from tests.support.emaildata import API_KEY, RUN, World, emails_per_disconnection, read_log
from tests.support.sendgrid_endpoint import EndpointProcess

pytestmark = pytest.mark.both_backends  # what a crash leaves depends on the backend's transactions

REPO = Path(__file__).resolve().parents[2]


def read_line(proc: subprocess.Popen[str], timeout: float = 20) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            proc.kill()
            pytest.fail(f"no output within {timeout} s")
    return proc.stdout.readline().strip()


class Endpoint(EndpointProcess):
    """The standalone SendGrid endpoint process, logging each delivered email."""

    def __init__(self, log: Path) -> None:
        super().__init__(API_KEY, log)
        self.seen = 0

    def new_bodies(self) -> list[dict]:
        """Bodies delivered since the last call (the process outlives one test)."""
        assert self.log is not None
        bodies = read_log(self.log)
        new, self.seen = bodies[self.seen :], len(bodies)
        return new


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory) -> Iterator[Endpoint]:
    running = Endpoint(tmp_path_factory.mktemp("sendgrid") / "delivered.jsonl")
    yield running
    running.stop()


def environment(settings, endpoint: Endpoint) -> dict[str, str]:
    return {
        "RELINK_DATABASE_URL": settings.database_url,
        "RELINK_DATA_DIR": str(settings.data_dir),
        "RELINK_SECRET_KEYS": settings.secret_keys.get_secret_value(),
        "RELINK_BASE_URL": settings.base_url,
        "RELINK_SENDGRID_API_KEY": API_KEY,
        "RELINK_SENDGRID_HOST": endpoint.url,
    }


def run_and_kill_at(point: str, settings, endpoint: Endpoint) -> None:
    env = {**os.environ, **environment(settings, endpoint)}
    env.update(RELINK_TEST_CRASH_AT=point, RELINK_TEST_NOW=RUN.isoformat())
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.notify_crash"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert read_line(proc) == f"at {point}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("point", ["after_claim", "after_send"])
def test_killed_run_never_leads_to_a_second_email(point, relink_app, settings, endpoint):
    world = World(relink_app)
    first, second, third = (world.broken(RUN - timedelta(hours=25)) for _ in range(3))
    endpoint.new_bodies()

    run_and_kill_at(point, settings, endpoint)
    at_kill = emails_per_disconnection(endpoint.new_bodies())
    assert at_kill == ({} if point == "after_claim" else {first: 1})
    assert world.states() == {first: "claimed"}

    mailer = SendGridMailer(API_KEY, endpoint.url, timeout=5)
    nxt = send_due(relink_app, now=RUN + timedelta(days=1), mailer=mailer).as_dict()
    assert nxt["expired_claims"] == 1 and nxt["sent"] == 2
    assert [u["disconnection_id"] for u in nxt["awaiting_decision"]] == [first]
    assert world.states() == {first: "unknown", second: "sent", third: "sent"}
    delivered = at_kill + emails_per_disconnection(endpoint.new_bodies())
    assert delivered == {**at_kill, second: 1, third: 1}
    assert all(count <= 1 for count in delivered.values())

    # another run: the unknown one is never resent automatically
    send_due(relink_app, now=RUN + timedelta(days=2), mailer=mailer)
    assert endpoint.new_bodies() == []

    if point == "after_claim":
        # the admin checks SendGrid's activity, sees nothing, and releases it
        env = environment(settings, endpoint)
        reset_app()
        result = CliRunner().invoke(
            cli_app, ["outbox", "release", str(world.notifications()[first].id)], env=env
        )
        reset_app()
        assert result.exit_code == 0, result.output
        send_due(relink_app, now=RUN + timedelta(days=3), mailer=mailer)
        send_due(relink_app, now=RUN + timedelta(days=4), mailer=mailer)
        assert emails_per_disconnection(endpoint.new_bodies()) == {first: 1}
        assert world.states()[first] == "sent"
