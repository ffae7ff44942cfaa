"""Runs at the same time on PostgreSQL never send an email twice: the claim (an INSERT
arbitrated by the unique constraint, or `UPDATE ... WHERE state = 'released'`) decides."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from relink.app import Relink
from relink.emailing.mailer import SendGridMailer
from relink.emailing.policy import NotifyPolicy
from relink.emailing.run import send_due
from relink.models import Notification
from tests.support.emaildata import API_KEY, RUN, World, emails_per_disconnection
from tests.support.sendgrid_endpoint import SendGridEndpoint

RUNS = 4
EMAILS = 30

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


def run_at_once(settings, endpoint) -> list[dict]:
    """RUNS whole runs started together, each with its own engine (like separate workers)."""
    start = threading.Barrier(RUNS)

    def one_run(_: int) -> dict:
        app = Relink(settings)
        try:
            start.wait()
            return send_due(
                app,
                now=RUN,
                mailer=SendGridMailer(API_KEY, endpoint.url, timeout=5),
                policy=NotifyPolicy(batch_size=10, concurrency=3),
            ).as_dict()
        finally:
            app.close()

    with ThreadPoolExecutor(RUNS) as pool:
        return list(pool.map(one_run, range(RUNS)))


def test_concurrent_runs_send_each_new_email_exactly_once(relink_app, settings):
    world = World(relink_app)
    episodes = world.many_broken(EMAILS, RUN - timedelta(hours=25))
    with SendGridEndpoint(api_key=API_KEY) as endpoint:
        summaries = run_at_once(settings, endpoint)
        received = emails_per_disconnection(r.body for r in endpoint.delivered)
    assert received == dict.fromkeys(episodes, 1)
    assert sum(s["skipped"] for s in summaries) > 0  # the runs did race for the same emails
    assert sum(s["sent"] for s in summaries) == EMAILS
    assert set(world.states().values()) == {"sent"}


def test_concurrent_runs_send_each_released_email_exactly_once(relink_app, settings):
    world = World(relink_app)
    episodes = world.many_broken(EMAILS, RUN - timedelta(hours=25))
    with relink_app.transaction() as session:
        session.add_all(
            Notification(
                disconnection_id=d,
                state="released",
                attempts=3,
                last_error="HTTP 500: internal error",
                claimed_at=RUN - timedelta(days=1),
                updated_at=RUN - timedelta(days=1),
            )
            for d in episodes
        )
    with SendGridEndpoint(api_key=API_KEY) as endpoint:
        summaries = run_at_once(settings, endpoint)
        received = emails_per_disconnection(r.body for r in endpoint.delivered)
    assert received == dict.fromkeys(episodes, 1)
    assert sum(s["skipped"] for s in summaries) > 0  # the runs did race for the same emails
    assert sum(s["sent"] for s in summaries) == EMAILS
    assert {n.attempts for n in world.notifications().values()} == {4}
