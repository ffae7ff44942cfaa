"""Restarts: the app database's connections killed in the middle of an email run (the
send-disconnection-emails flow on a real Prefect server, the app database on PostgreSQL).
The run carries on (one email's failure is recorded on that email), and the next run
completes with nothing lost or doubled.

An admin connection kills every backend of the run's app (`pg_terminate_backend`, found
by the app's `application_name`) at a moment the test arranges, so each case is exact:

- `idle`: every worker waits for SendGrid, its connection back in the pool;
- `claim`: one email's claim waits on a row lock the test holds;
- `mark`: SendGrid accepted one email, and recording that waits on the row lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from flows.send_disconnection_emails import send_disconnection_emails
from relink.app import Relink, set_app
from relink.emailing.policy import NotifyPolicy
from relink.timeutil import utcnow
from tests.support.emaildata import API_KEY, World, emails_per_disconnection
from tests.support.promises import scale
from tests.support.sendgrid_endpoint import Held, SendGridEndpoint

ROUNDS = scale(1, 3)
DUE = NotifyPolicy().concurrency  # as many as the run's workers: all in flight at once
TARGET = 1  # the due email whose claim or mark the kill interrupts

pytestmark = [
    pytest.mark.prefect,
    pytest.mark.postgres,
    pytest.mark.usefixtures("prefect_server"),
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.01)


class Database:
    """The run's app database as an admin sees it: its backends, a row lock, the kill."""

    def __init__(self, admin: sa.Engine, app_url: str) -> None:
        self.admin = admin
        self.app_url = app_url
        self.name = f"relink-restarts-{uuid.uuid4().hex[:8]}"

    def url_for_the_run(self) -> str:
        url = sa.make_url(self.app_url).update_query_dict({"application_name": self.name})
        return url.render_as_string(hide_password=False)

    def _backends(self, condition: str = "true") -> int:
        with self.admin.connect() as conn:
            return conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity"
                    f" WHERE application_name = :name AND {condition}"
                ),
                {"name": self.name},
            ).scalar_one()

    def blocked_on_a_lock(self) -> bool:
        return self._backends("wait_event_type = 'Lock'") > 0

    def kill_the_runs_connections(self) -> int:
        with self.admin.connect() as conn:
            return conn.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = :name"
                ),
                {"name": self.name},
            ).scalar_one()

    @contextmanager
    def row_lock(self, disconnection_id: int) -> Iterator[None]:
        """Hold a disconnection's row lock, from a session the kill spares."""
        engine = sa.create_engine(self.app_url, poolclass=sa.pool.NullPool)
        conn = engine.connect()
        try:
            conn.execute(
                sa.text("SELECT id FROM disconnections WHERE id = :id FOR UPDATE"),
                {"id": disconnection_id},
            )
            yield
        finally:
            conn.close()
            engine.dispose()


class Case:
    """One round: DUE due emails (and one not due), one run with its kill, the next run."""

    def __init__(self, where: str, world: World, db: Database, endpoint: SendGridEndpoint):
        self.where, self.world, self.db, self.endpoint = where, world, db, endpoint
        now = utcnow()
        self.due = [self.world.broken(now - timedelta(hours=25 + i)) for i in range(DUE)]
        self.not_due = self.world.broken(now - timedelta(hours=2))
        self.target = self.due[TARGET]
        self.killed = 0
        self.locks = ExitStack()

    def prepare(self) -> None:
        """Before the run: what holds it at the case's moment."""
        if self.where == "idle":
            for d in self.due:
                self.endpoint.script_for("disconnection_id", str(d), Held())
        elif self.where == "claim":
            self.locks.enter_context(self.db.row_lock(self.target))
        else:
            self.endpoint.script_for("disconnection_id", str(self.target), Held())

    def interrupt(self) -> None:
        """During the run: wait for the case's moment, kill the run's connections, let go
        (also when a wait times out: the run must not hang)."""
        try:
            with self.locks:
                self._wait_for_the_moment()
                self.killed = self.db.kill_the_runs_connections()
        finally:
            self.endpoint.release_hangs()

    def _wait_for_the_moment(self) -> None:
        if self.where == "idle":
            wait_until(lambda: self.endpoint.waiting == DUE, "every worker at SendGrid")
            return
        if self.where == "mark":
            wait_until(lambda: self.endpoint.waiting == 1, "SendGrid to hold the email")
        wait_until(self.others_sent, "the other emails to be sent")
        if self.where == "mark":
            self.locks.enter_context(self.db.row_lock(self.target))
            self.endpoint.release_hangs()  # SendGrid accepts it: 202
        wait_until(self.db.blocked_on_a_lock, "the run to wait on the row lock")

    def others_sent(self) -> bool:
        states = self.world.states()
        return all(states.get(d) == "sent" for d in self.due if d != self.target)


def run_flow() -> Any:
    return asyncio.run(send_disconnection_emails(return_state=True))


def run_interrupted(case: Case) -> Any:
    """The run in this thread (as a deployment runs it), the interruption beside it."""
    case.prepare()
    with ThreadPoolExecutor(1) as pool:
        interruption = pool.submit(case.interrupt)
        state = run_flow()
        interruption.result(timeout=60)
    return state


@pytest.fixture
def endpoint() -> Iterator[SendGridEndpoint]:
    with SendGridEndpoint(api_key=API_KEY) as running:
        yield running


@pytest.fixture
def db(relink_app: Relink, pg_engine: sa.Engine) -> Database:
    return Database(pg_engine, relink_app.settings.database_url)


@pytest.fixture
def app(relink_app: Relink, db: Database, endpoint: SendGridEndpoint) -> Iterator[Relink]:
    """The app the flow runs with (`get_app`): its connections carry `db.name`."""
    settings = relink_app.settings.model_copy(
        update={
            "database_url": db.url_for_the_run(),
            "sendgrid_api_key": SecretStr(API_KEY),
            "sendgrid_host": endpoint.url,
        }
    )
    app = Relink(settings)
    set_app(app)
    yield app
    set_app(None)
    app.close()


@pytest.mark.promise(
    "An email run whose database connections are killed carries on, recording the failure on "
    "the email it hit, and the next run completes with no email lost or doubled"
)
@pytest.mark.parametrize("where", ["idle", "claim", "mark"])
def test_killed_database_connections_lose_and_double_nothing(
    where, app, db, endpoint, caplog, capfd, record_property
):
    caplog.set_level(logging.WARNING)
    world = World(app)
    emails = 0
    for _ in range(ROUNDS):
        endpoint.reset()
        case = Case(where, world, db, endpoint)
        first = run_interrupted(case)
        assert case.killed > 0, "the kill found no connection of the run"
        _assert_first_run(case, first, capfd.readouterr().err)

        second = run_flow()
        assert second.is_completed(), second.message
        received = emails_per_disconnection(r.body for r in endpoint.delivered)
        assert received == dict.fromkeys(case.due, 1)  # none lost, none doubled
        states = case.world.states()
        assert [states.get(d) for d in case.due] == ["sent"] * DUE
        assert case.not_due not in states
        emails += DUE

    strays = [r for r in caplog.records if not r.name.startswith("prefect")]
    assert strays == [], "log records beside Prefect's own: " + "; ".join(
        f"{r.name}: {r.getMessage()[:200]}" for r in strays
    )
    record_property("trials", ROUNDS)
    record_property(
        "outcome",
        f"{where}: trials={ROUNDS} emails={emails} unknown=0 duplicates=0 lost=0; "
        + FIRST_RUN[where],
    )


FIRST_RUN = {
    "idle": "killed while every worker waited for SendGrid: the run carried on (the pool "
    "reconnects)",
    "claim": "killed inside a claim: the run recorded the database's reason on that email and "
    "completed, the claim rolled back, the next run sent that email",
    "mark": "killed while recording a 202: recorded on a new connection, the run completed",
}


def _assert_first_run(case: Case, state: Any, stderr: str) -> None:
    """Carried on, with the failure recorded on the email it hit and nothing on stderr."""
    assert "Exception in thread" not in stderr
    assert state.is_completed(), state.message
    assert "Traceback" not in stderr
    if case.where == "claim":
        summary = state.result()
        (failure,) = summary["failures"]
        assert (summary["error"], failure["disconnection_id"]) == (1, case.target)
        assert "terminating connection due to administrator command" in failure["error"]
        assert failure["state"] == "due"
        assert case.target not in case.world.states()  # the claim was rolled back
        return
    notification = case.world.notifications()[case.target]
    assert (notification.state, notification.provider_message_id is not None) == ("sent", True)
