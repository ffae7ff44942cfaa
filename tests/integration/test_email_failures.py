"""One email whose delivery raises never stops the run: on the real PostgreSQL, a row lock
held by someone else makes one claim fail (`lock_timeout`); the run records that email's
failure, sends every other one, batch after batch, and the next run sends the one that
failed, once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa

from relink.app import Relink
from relink.emailing.mailer import SendGridMailer
from relink.emailing.policy import NotifyPolicy
from relink.emailing.run import send_due
from tests.support.emaildata import (
    API_KEY,
    RUN,
    Sleeps,
    World,
    assert_in_step,
    emails_per_disconnection,
)
from tests.support.sendgrid_endpoint import SendGridEndpoint

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


@pytest.fixture
def endpoint() -> Iterator[SendGridEndpoint]:
    with SendGridEndpoint(api_key=API_KEY) as running:
        yield running


@pytest.fixture
def impatient_app(relink_app: Relink) -> Iterator[Relink]:
    """The app with a lock timeout: a claim that meets someone else's row lock fails."""
    url = sa.make_url(relink_app.settings.database_url)
    options = f"{url.query.get('options', '')} -c lock_timeout=300".strip()
    url = url.update_query_dict({"options": options})
    settings = relink_app.settings.model_copy(
        update={"database_url": url.render_as_string(hide_password=False)}
    )
    app = Relink(settings)
    yield app
    app.close()


@contextmanager
def row_lock(app: Relink, disconnection_id: int) -> Iterator[None]:
    """Someone else (an admin's session, a stuck process) holds a disconnection's row."""
    with app.engine.connect() as conn, conn.begin():
        conn.execute(
            sa.text("SELECT id FROM disconnections WHERE id = :id FOR UPDATE"),
            {"id": disconnection_id},
        )
        yield


def test_a_failed_claim_is_recorded_on_its_email_and_the_run_goes_on(
    relink_app, impatient_app, endpoint
):
    world = World(relink_app)
    due = [world.broken(RUN - timedelta(hours=25 + i)) for i in range(5)]
    stuck = due[0]  # in the first batch: the later batches must still run
    mailer = SendGridMailer(API_KEY, endpoint.url, timeout=2)
    policy = NotifyPolicy(batch_size=2, concurrency=1)

    with row_lock(relink_app, stuck):
        summary = send_due(impatient_app, now=RUN, mailer=mailer, policy=policy, sleep=Sleeps())

    assert (summary.counts["sent"], summary.counts["error"], summary.batches) == (4, 1, 3)
    (failure,) = summary.failures
    assert failure["disconnection_id"] == stuck and failure["state"] == "due"
    assert "lock timeout" in failure["error"]
    assert "SELECT" not in failure["error"] and "@" not in failure["error"]  # no statement
    assert f"| {stuck} |" in summary.markdown()
    assert stuck not in world.states()  # the claim rolled back: still due
    assert emails_per_disconnection(r.body for r in endpoint.delivered) == {
        d: 1 for d in due if d != stuck
    }
    assert_in_step(relink_app)

    again = send_due(impatient_app, now=RUN + timedelta(hours=1), mailer=mailer, sleep=Sleeps())
    assert (again.counts["sent"], again.counts["error"], again.failures) == (1, 0, [])
    assert emails_per_disconnection(r.body for r in endpoint.delivered) == dict.fromkeys(due, 1)
    assert world.states() == dict.fromkeys(due, "sent")
