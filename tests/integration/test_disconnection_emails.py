"""The disconnection emails on a real database (SQLite, and PostgreSQL when configured),
sent through the official SDK to the local SendGrid endpoint, which validates every body
against SendGrid's contract (an invalid body would be a 400 and fail the test)."""

from __future__ import annotations

import contextlib
import json
import threading
from datetime import timedelta
from email import policy
from email.parser import BytesParser

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import SecretStr

from relink.domain.due import NOT_YET, Episode, cutoff, due
from relink.emailing.due import due_ids, load_due, plan
from relink.emailing.ledger import claim, expire_stale_claims, mark, not_notified, release
from relink.emailing.mailer import Attempt, OutboxMailer, Result, SendGridMailer
from relink.emailing.policy import NotifyPolicy
from relink.emailing.run import send_due
from relink.emailing.sender import SendHooks
from relink.models import Connection, Disconnection, Notification
from relink.models import NotificationState as State
from tests.support.emaildata import (
    ADMIN,
    API_KEY,
    OWNER,
    RUN,
    SECRET,
    World,
    emails_per_disconnection,
)
from tests.support.sendgrid_endpoint import (
    AcceptThenHang,
    BadRequest,
    Hang,
    RateLimited,
    SendGridEndpoint,
    ServerError,
    Unauthorized,
)

H = timedelta(hours=1)
LEASE = NotifyPolicy().lease


@pytest.fixture
def endpoint():
    with SendGridEndpoint(api_key=API_KEY) as running:
        yield running


@pytest.fixture
def world(relink_app):
    return World(relink_app)


@pytest.fixture
def mailer(endpoint):
    return SendGridMailer(API_KEY, endpoint.url, timeout=0.3)


class Sleeps(list):
    """An injected sleep: records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def run(app, mailer, now=RUN, **kw):
    kw.setdefault("sleep", Sleeps())
    return send_due(app, now=now, mailer=mailer, **kw).as_dict()


def delivered(endpoint):
    return emails_per_disconnection(r.body for r in endpoint.delivered)


# --- the rule, on the database ------------------------------------------------------------


def test_no_email_at_23h59m_and_one_at_24h00m(relink_app, world, endpoint, mailer):
    young = world.broken(RUN - timedelta(hours=23, minutes=59))
    due_now = world.broken(RUN - timedelta(hours=24))
    summary = run(relink_app, mailer)
    assert summary["sent"] == 1
    assert delivered(endpoint) == {due_now: 1}
    # the next day's run sends the younger one
    run(relink_app, mailer, now=RUN + timedelta(days=1))
    assert delivered(endpoint) == {due_now: 1, young: 1}


def test_no_second_email_after_52_hours_disconnected(relink_app, world, endpoint, mailer):
    episode = world.broken(RUN - timedelta(hours=28))
    run(relink_app, mailer)
    again = run(relink_app, mailer, now=RUN + timedelta(hours=24))  # 52 hours disconnected
    assert again["sent"] == 0 and again["batches"] == 0
    assert delivered(endpoint) == {episode: 1}


def test_closed_before_the_run_gets_no_email(relink_app, world, endpoint, mailer):
    episode = world.broken(RUN - timedelta(hours=30))
    world.close(episode, RUN - H)
    assert run(relink_app, mailer)["batches"] == 0
    assert endpoint.requests == [] and world.notifications() == {}


def test_reconnected_then_broken_again_gets_its_own_email(relink_app, world, endpoint, mailer):
    conn = world.connection("Sales DB")
    first = world.disconnection(conn, RUN - timedelta(days=3))
    run(relink_app, mailer, now=RUN - timedelta(days=2))
    world.close(first, RUN - timedelta(days=1, hours=12))
    second = world.disconnection(conn, RUN - timedelta(hours=5))
    run(relink_app, mailer)
    assert delivered(endpoint) == {first: 1}
    run(relink_app, mailer, now=RUN + timedelta(days=1))
    assert delivered(endpoint) == {first: 1, second: 1}


def test_a_missed_run_is_caught_up_nothing_lost_nothing_doubled(
    relink_app, world, endpoint, mailer
):
    older = world.broken(RUN - timedelta(days=3))
    yesterday = world.broken(RUN - timedelta(hours=20))
    this_morning = world.broken(RUN + timedelta(hours=1))
    # the runs at RUN and RUN + 1 day were missed; the next one is late in the day
    run(relink_app, mailer, now=RUN + timedelta(days=2, hours=5))
    run(relink_app, mailer, now=RUN + timedelta(days=3))
    assert delivered(endpoint) == {older: 1, yesterday: 1, this_morning: 1}


@hsettings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    episodes=st.lists(
        st.tuples(
            st.integers(-60, 60),  # started, hours from the run
            st.one_of(st.none(), st.integers(-60, 0)),  # ended, hours from the run
            st.sampled_from(
                [None, "sent", "released", "unknown", "failed", "claimed", "outbox", "no_recipient"]
            ),
        ),
        max_size=8,
    )
)
def test_the_due_query_is_the_pure_rule(relink_app, world, episodes):
    expected = []
    with relink_app.transaction() as session:
        session.query(Notification).delete()
        session.query(Disconnection).delete()
        conn_ids = list(session.scalars(sa.select(Connection.id).order_by(Connection.id)))
    while len(conn_ids) < len(episodes):
        conn_ids.append(world.connection())
    with relink_app.transaction() as session:
        for conn_id, (start, end, state) in zip(conn_ids, episodes, strict=False):
            d = Disconnection(
                connection_id=conn_id,
                started_at=RUN + start * H,
                ended_at=None if end is None else RUN + max(end, start) * H,
                awaiting_email=state is None or state in NOT_YET,  # as relink.emailing.ledger
            )
            session.add(d)
            session.flush()
            if state:
                session.add(
                    Notification(disconnection_id=d.id, state=state, claimed_at=RUN, updated_at=RUN)
                )
            expected.append(Episode(d.id, d.started_at, d.ended_at, state))
    with relink_app.sessions() as session:
        assert due_ids(session, now=RUN) == [e.id for e in due(expected, RUN)]


# --- awaiting_email: the due index's copy of the notification state ------------------------


def flags(app) -> dict[int, bool]:
    with app.sessions() as session:
        return dict(
            session.execute(sa.select(Disconnection.id, Disconnection.awaiting_email)).all()
        )


def assert_in_step(app) -> None:
    """Every disconnection, open or closed: awaiting_email == (no notification, or a
    released one)."""
    with app.sessions() as session:
        rows = session.execute(
            sa.select(Disconnection.id, Disconnection.awaiting_email, Notification.state)
            .outerjoin(Notification, Notification.disconnection_id == Disconnection.id)
            .order_by(Disconnection.id)
        ).all()
    wrong = {d: (flag, state) for d, flag, state in rows if flag != (state in (None, *NOT_YET))}
    assert wrong == {}


def due_by_notifications(app, now) -> list[int]:
    """The due ids as the rule reads them from `notifications` (no flag)."""
    with app.sessions() as session:
        return sorted(
            session.scalars(
                sa.select(Disconnection.id).where(
                    Disconnection.ended_at.is_(None),
                    Disconnection.started_at <= cutoff(now),
                    not_notified(),
                )
            )
        )


def test_awaiting_email_follows_every_transition(relink_app, world):
    app = relink_app
    a, b, c, d, e, f, g = (world.broken(RUN - timedelta(hours=25)) for _ in range(7))
    items = {i.disconnection_id: i for i in load_due(app, [a, b, c, d, e, f, g])}
    assert flags(app) == dict.fromkeys([a, b, c, d, e, f, g], True)  # the server default

    def step(expected: dict[int, bool]) -> None:
        assert {k: flags(app)[k] for k in expected} == expected
        assert_in_step(app)

    def end(held, state, at=RUN):
        assert mark(app, held, state, now=at, attempts=1, message_id="m-1", error="x")

    # claim (INSERT) -> false; sent / failed / unknown stay false
    held_a, held_b, held_c = (claim(app, items[x], now=RUN) for x in (a, b, c))
    step({a: False, b: False, c: False, d: True})
    end(held_a, State.SENT)
    end(held_b, State.FAILED)
    end(held_c, State.UNKNOWN)
    step({a: False, b: False, c: False})
    # a stale claim attempt of an emailed one writes nothing
    assert claim(app, items[a], now=RUN + H) is None
    step({a: False})
    # released (retryable failure) -> true; claim of the released row -> false
    held_d = claim(app, items[d], now=RUN)
    end(held_d, State.RELEASED)
    step({d: True})
    assert due_ids_at(app, RUN + timedelta(days=1)) == [d, e, f, g]
    again = load_due(app, [d])[0]
    assert again.notification_state == "released"
    held_d = claim(app, again, now=RUN + timedelta(days=1))
    step({d: False})
    end(held_d, State.SENT, RUN + timedelta(days=1))
    step({d: False})
    # admin release of an unknown one -> true, then the next run's claim -> false
    with app.transaction() as session:
        release(session, world.notifications()[c].id, now=RUN + H)
    step({c: True})
    held_c = claim(app, load_due(app, [c])[0], now=RUN + timedelta(days=1))
    step({c: False})
    end(held_c, State.OUTBOX, RUN + timedelta(days=1))
    step({c: False})
    # expired claim -> unknown: stays false; released by an admin -> true; the dead
    # run's late report of a delivery -> sent, false
    held_e = claim(app, items[e], now=RUN)
    assert expire_stale_claims(app, now=RUN + LEASE + timedelta(seconds=1)) == 1
    assert world.states()[e] == "unknown"
    step({e: False})
    with app.transaction() as session:
        release(session, world.notifications()[e].id, now=RUN + H)
    step({e: True})
    end(held_e, State.SENT, RUN + H)
    assert world.states()[e] == "sent"
    step({e: False})
    # nobody to email -> no_recipient, false
    assert claim(app, items[f], now=RUN, state=State.NO_RECIPIENT, reason="nobody")
    step({f: False})
    # closed before the claim: no row, nothing written (the flag stays true; the
    # index's ended_at IS NULL leaves it out)
    world.close(g, RUN - H)
    assert claim(app, items[g], now=RUN) is None
    assert g not in world.notifications()
    step({g: True})
    # a released one closed meanwhile is not taken back
    h = world.broken(RUN - timedelta(hours=25))
    held_h = claim(app, load_due(app, [h])[0], now=RUN)
    end(held_h, State.RELEASED)
    world.close(h, RUN + H)
    assert claim(app, load_due(app, [h])[0], now=RUN + timedelta(days=1)) is None
    assert world.states()[h] == "released"
    step({h: True})
    assert due_ids_at(app, RUN + timedelta(days=2)) == []


def due_ids_at(app, now) -> list[int]:
    with app.sessions() as session:
        ids = due_ids(session, now=now)
    assert ids == due_by_notifications(app, now)
    return ids


def test_awaiting_email_through_sendgrids_answers(relink_app, world, endpoint, mailer):
    endpoint.script(
        BadRequest("nope"), Hang(seconds=5), ServerError(), ServerError(), ServerError()
    )
    failed, unknown, released, sent = (world.broken(RUN - timedelta(hours=25)) for _ in range(4))
    at_claim = {}

    def seen(item):
        at_claim[item.disconnection_id] = flags(relink_app)[item.disconnection_id]

    summary = run(
        relink_app, mailer, hooks=SendHooks(after_claim=seen), policy=NotifyPolicy(concurrency=1)
    )
    endpoint.release_hangs()
    assert (summary["failed"], summary["unknown"], summary["released"], summary["sent"]) == (
        1,
        1,
        1,
        1,
    )
    assert at_claim == dict.fromkeys([failed, unknown, released, sent], False)  # committed
    assert flags(relink_app) == {failed: False, unknown: False, released: True, sent: False}
    assert_in_step(relink_app)
    assert due_ids_at(relink_app, RUN + timedelta(days=1)) == [released]
    run(relink_app, mailer, now=RUN + timedelta(days=1))
    assert world.states()[released] == "sent" and not flags(relink_app)[released]
    assert_in_step(relink_app)


def test_migration_backfills_awaiting_email_and_keeps_the_notifications(relink_app, world):
    from relink import db

    states = [None, *sorted(str(s) for s in State)]
    episodes = {world.broken(RUN - timedelta(hours=30)): state for state in states}
    with relink_app.transaction() as session:
        session.add_all(
            Notification(disconnection_id=d, state=state, claimed_at=RUN, updated_at=RUN)
            for d, state in episodes.items()
            if state
        )
    db.downgrade(relink_app.engine, "0004")
    db.upgrade(relink_app.engine)
    assert world.states() == {d: state for d, state in episodes.items() if state}
    assert flags(relink_app) == {d: state in (None, "released") for d, state in episodes.items()}
    assert_in_step(relink_app)


class ScriptedMailer:
    """Answers with the scripted results in order, then SENT."""

    def __init__(self, results, delivered_state=State.SENT) -> None:
        self.results = list(results)
        self.delivered_state = delivered_state
        self._lock = threading.Lock()

    def send(self, email) -> Attempt:
        with self._lock:
            result = self.results.pop(0) if self.results else Result.SENT
        if result is Result.SENT:
            return Attempt(result, message_id=f"m-{email.reference}")
        return Attempt(result, error=f"scripted {result}")


class Crash(Exception):
    pass


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    days=st.lists(
        st.fixed_dictionaries(
            {
                "new": st.lists(st.integers(0, 48), max_size=3),  # hours before the run
                "results": st.lists(st.sampled_from(list(Result)), max_size=6),
                "crash": st.one_of(st.none(), st.integers(0, 5)),  # the n-th claim dies
                "release": st.lists(st.integers(0, 20), max_size=2),  # unknown ones, by rank
                "close": st.lists(st.integers(0, 20), max_size=2),  # open ones, by rank
                "outbox": st.booleans(),
                "concurrency": st.integers(1, 3),
            }
        ),
        min_size=1,
        max_size=4,
    )
)
def test_awaiting_email_is_in_step_after_random_runs(relink_app, world, days):
    app = relink_app
    with app.transaction() as session:
        session.query(Notification).delete()
        session.query(Disconnection).delete()
    for number, day in enumerate(days):
        now = RUN + timedelta(days=number)
        for hours in day["new"]:
            world.broken(now - timedelta(hours=hours))
        claims = []

        def after_claim(item, crash_at=day["crash"], claims=claims):
            claims.append(item.disconnection_id)
            if crash_at is not None and len(claims) == crash_at + 1:
                raise Crash

        mailer = ScriptedMailer(day["results"], State.OUTBOX if day["outbox"] else State.SENT)
        due_before = due_ids_at(app, now)  # also checks flag == notifications
        with contextlib.suppress(Crash):
            send_due(
                app,
                now=now,
                mailer=mailer,
                sleep=Sleeps(),
                hooks=SendHooks(after_claim=after_claim),
                policy=NotifyPolicy(concurrency=day["concurrency"], batch_size=2),
            )
        assert_in_step(app)
        assert set(claims) <= set(due_before)
        unknown = sorted(d for d, s in world.states().items() if s == "unknown")
        for rank in day["release"]:
            if unknown:
                with app.transaction() as session:
                    release(
                        session, world.notifications()[unknown[rank % len(unknown)]].id, now=now
                    )
                unknown = sorted(d for d, s in world.states().items() if s == "unknown")
        with app.sessions() as session:
            opened = list(
                session.scalars(
                    sa.select(Disconnection.id)
                    .where(Disconnection.ended_at.is_(None))
                    .order_by(Disconnection.id)
                )
            )
        for rank in day["close"]:
            if opened:
                world.close(opened.pop(rank % len(opened)), now + H)
        assert_in_step(app)
        due_ids_at(app, now + timedelta(days=1))


# --- recipients ---------------------------------------------------------------------------


def test_inactive_owner_falls_back_to_the_active_admins(relink_app, world, endpoint, mailer):
    world.set_user(OWNER, active=False)
    episode = world.broken(RUN - timedelta(hours=25))
    run(relink_app, mailer)
    (request,) = endpoint.delivered
    assert [t["email"] for t in request.body["personalizations"][0]["to"]] == [ADMIN]
    assert world.notifications()[episode].recipients == [ADMIN]


def test_nobody_to_email_is_recorded_with_the_reason(relink_app, world, endpoint, mailer):
    world.set_user(OWNER, active=False)
    world.set_user(ADMIN, active=False)
    episode = world.broken(RUN - timedelta(hours=25))
    summary = run(relink_app, mailer)
    assert summary["no_recipient"] == 1 and endpoint.requests == []
    row = world.notifications()[episode]
    assert row.state == "no_recipient"
    assert "inactive" in row.last_error and "no active admin" in row.last_error
    assert run(relink_app, mailer, now=RUN + timedelta(days=1))["batches"] == 0


# --- SendGrid's answers -------------------------------------------------------------------


def test_202_is_sent_with_sendgrids_message_id(relink_app, world, endpoint, mailer):
    episode = world.broken(RUN - timedelta(hours=25), name="Sales DB")
    summary = run(relink_app, mailer)
    assert summary["sent"] == 1
    (request,) = endpoint.delivered
    row = world.notifications()[episode]
    assert row.state == "sent" and row.attempts == 1
    assert row.provider_message_id == request.message_id
    assert RUN <= row.sent_at < RUN + timedelta(seconds=10) and row.recipients == [OWNER]
    body = request.body
    assert body["from"] == {"email": relink_app.settings.email_from, "name": "Relink"}
    assert body["subject"] == row.subject
    assert body["custom_args"] == {"disconnection_id": str(episode), "connection_id": "1"}
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert request.headers["authorization"] == f"Bearer {API_KEY}"


def test_400_is_failed_with_sendgrids_text_and_not_retried(relink_app, world, endpoint, mailer):
    endpoint.script(BadRequest("The from address does not match a verified Sender Identity"))
    episode = world.broken(RUN - timedelta(hours=25))
    sleeps = Sleeps()
    summary = run(relink_app, mailer, sleep=sleeps)
    assert summary["failed"] == 1 and len(endpoint.requests) == 1 and sleeps == []
    row = world.notifications()[episode]
    assert row.state == "failed"
    assert row.last_error == (
        "HTTP 400: The from address does not match a verified Sender Identity"
    )
    run(relink_app, mailer, now=RUN + timedelta(days=1))
    assert len(endpoint.requests) == 1


def test_429_waits_for_retry_after_then_sends(relink_app, world, endpoint, mailer):
    endpoint.script(RateLimited(retry_after=7))
    episode = world.broken(RUN - timedelta(hours=25))
    sleeps = Sleeps()
    summary = run(relink_app, mailer, sleep=sleeps)
    assert sleeps == [7.0]
    assert summary["sent"] == 1
    row = world.notifications()[episode]
    assert (row.state, row.attempts) == ("sent", 2)
    assert delivered(endpoint) == {episode: 1}


def test_retry_after_is_capped(relink_app, world, endpoint, mailer):
    endpoint.script(RateLimited(retry_after=3600))
    world.broken(RUN - timedelta(hours=25))
    sleeps = Sleeps()
    run(relink_app, mailer, sleep=sleeps, policy=NotifyPolicy(retry_after_cap=30))
    assert sleeps == [30]


def test_500_every_time_is_released_and_the_next_run_sends(relink_app, world, endpoint, mailer):
    endpoint.script(ServerError(), ServerError(), ServerError())
    episode = world.broken(RUN - timedelta(hours=25))
    sleeps = Sleeps()
    summary = run(relink_app, mailer, sleep=sleeps)
    assert summary["released"] == 1 and sleeps == [1.0, 2.0]
    row = world.notifications()[episode]
    assert (row.state, row.attempts) == ("released", 3)
    assert row.last_error == "HTTP 500: internal error"
    nxt = run(relink_app, mailer, now=RUN + timedelta(days=1))
    assert nxt["sent"] == 1
    row = world.notifications()[episode]
    assert (row.state, row.attempts, row.last_error) == ("sent", 4, None)
    assert delivered(endpoint) == {episode: 1}


def test_refused_connection_is_released(relink_app, world, closed_port):
    episode = world.broken(RUN - timedelta(hours=25))
    mailer = SendGridMailer(API_KEY, f"http://127.0.0.1:{closed_port}", timeout=0.3)
    summary = run(relink_app, mailer)
    assert summary["released"] == 1
    row = world.notifications()[episode]
    assert row.state == "released" and "cannot reach SendGrid" in row.last_error


def test_hang_past_the_timeout_is_unknown_and_never_resent(relink_app, world, endpoint, mailer):
    endpoint.script(Hang(seconds=5))
    episode = world.broken(RUN - timedelta(hours=25))
    summary = run(relink_app, mailer)
    assert summary["unknown"] == 1
    assert [u["disconnection_id"] for u in summary["awaiting_decision"]] == [episode]
    row = world.notifications()[episode]
    assert row.state == "unknown" and "TimeoutError" in row.last_error
    endpoint.release_hangs()
    again = run(relink_app, mailer, now=RUN + timedelta(days=1))
    assert again["batches"] == 0 and len(endpoint.requests) == 1
    assert len(again["awaiting_decision"]) == 1  # still shown until an admin decides


def test_accept_then_hang_is_unknown_and_delivered_exactly_once(
    relink_app, world, endpoint, mailer
):
    endpoint.script(AcceptThenHang(seconds=5))
    episode = world.broken(RUN - timedelta(hours=25))
    assert run(relink_app, mailer)["unknown"] == 1
    endpoint.release_hangs()
    run(relink_app, mailer, now=RUN + timedelta(days=1))
    run(relink_app, mailer, now=RUN + timedelta(days=2))
    assert delivered(endpoint) == {episode: 1}
    assert world.states() == {episode: "unknown"}


def test_released_unknown_email_is_sent_by_the_next_run(relink_app, world, endpoint, mailer):
    endpoint.script(Hang(seconds=5))
    episode = world.broken(RUN - timedelta(hours=25))
    run(relink_app, mailer)
    endpoint.release_hangs()
    notification_id = world.notifications()[episode].id
    with relink_app.transaction() as session:
        release(session, notification_id, now=RUN + H)
    run(relink_app, mailer, now=RUN + timedelta(days=1))
    assert delivered(endpoint) == {episode: 1}
    assert world.states() == {episode: "sent"}


def test_rejected_api_key_stops_the_run_and_loses_nothing(relink_app, world, endpoint, mailer):
    endpoint.script(Unauthorized())
    episodes = [world.broken(RUN - timedelta(hours=25)) for _ in range(5)]
    summary = run(relink_app, mailer, policy=NotifyPolicy(concurrency=1, batch_size=2))
    assert summary["released"] == 1 and summary["deferred"] == 4
    assert "API key" in summary["stopped"]
    assert len(endpoint.requests) == 1
    nxt = run(relink_app, mailer, now=RUN + timedelta(days=1))  # key fixed
    assert nxt["sent"] == 5
    assert delivered(endpoint) == dict.fromkeys(episodes, 1)


def test_sendgrid_down_stops_the_run_after_three_undelivered(relink_app, world, endpoint, mailer):
    endpoint.default = ServerError()
    for _ in range(6):
        world.broken(RUN - timedelta(hours=25))
    summary = run(relink_app, mailer, policy=NotifyPolicy(concurrency=1, attempts=2))
    assert (summary["released"], summary["deferred"]) == (3, 3)
    assert len(endpoint.requests) == 6  # 3 emails x 2 requests, then it stopped


def test_stale_claim_becomes_unknown_after_the_lease_not_before(
    relink_app, world, endpoint, mailer
):
    episode = world.broken(RUN - timedelta(hours=25))
    world.broken(RUN - timedelta(hours=25))

    class Crash(Exception):
        pass

    def crash(item):
        if item.disconnection_id == episode:
            raise Crash

    with pytest.raises(Crash):
        run(
            relink_app,
            mailer,
            hooks=SendHooks(after_claim=crash),
            policy=NotifyPolicy(concurrency=1),
        )
    assert world.states()[episode] == "claimed"
    soon = run(relink_app, mailer, now=RUN + LEASE - timedelta(seconds=1))
    assert soon["expired_claims"] == 0 and world.states()[episode] == "claimed"
    later = run(relink_app, mailer, now=RUN + LEASE + timedelta(seconds=10))
    assert later["expired_claims"] == 1 and world.states()[episode] == "unknown"
    assert episode not in delivered(endpoint)


def test_limit_caps_the_run(relink_app, world, endpoint, mailer):
    for _ in range(5):
        world.broken(RUN - timedelta(hours=25))
    summary = run(relink_app, mailer, limit=3, policy=NotifyPolicy(batch_size=2))
    assert summary["sent"] == 3 and summary["batches"] == 2
    assert run(relink_app, mailer)["sent"] == 2


# --- outbox, content, secrets -------------------------------------------------------------


def test_outbox_mode_writes_an_eml_and_the_row_and_sends_nothing(relink_app, world, endpoint):
    episode = world.broken(RUN - timedelta(hours=25), name="Sales DB")
    folder = relink_app.settings.data_dir / "outbox"
    summary = run(relink_app, OutboxMailer(folder))
    assert summary["outbox"] == 1 and endpoint.requests == []
    row = world.notifications()[episode]
    assert row.state == "outbox" and row.provider_message_id == f"disconnection-{episode}.eml"
    message = BytesParser(policy=policy.default).parsebytes(
        (folder / f"disconnection-{episode}.eml").read_bytes()
    )
    assert message.get_content_type() == "multipart/alternative"
    assert message["To"] == OWNER and message["Subject"] == row.subject
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert "http://relink.test/connections/1" in message.get_body(("html",)).get_content()
    assert list(folder.glob("*.tmp")) == []


def test_connection_name_is_html_escaped_in_the_sent_email(relink_app, world, endpoint, mailer):
    world.broken(RUN - timedelta(hours=25), name="<script>alert(1)</script>")
    run(relink_app, mailer)
    (request,) = endpoint.delivered
    html = next(c["value"] for c in request.body["content"] if c["type"] == "text/html")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_no_credential_or_key_in_any_email(relink_app, world, endpoint, mailer):
    # a leaky connector message: the secret itself in the last error
    world.broken(
        RUN - timedelta(hours=25),
        error=f"login failed: password {SECRET} rejected",
    )
    run(relink_app, mailer)
    folder = relink_app.settings.data_dir / "outbox"
    world.broken(RUN - timedelta(hours=25), error=f"token {SECRET} expired")
    run(relink_app, OutboxMailer(folder))
    (request,) = endpoint.delivered
    everything = json.dumps(request.body) + "".join(
        p.read_text("utf-8") for p in folder.glob("*.eml")
    )
    assert "password [redacted] rejected" in everything
    for secret in (SECRET, API_KEY, relink_app.settings.secret_keys.get_secret_value()):
        assert secret not in everything


def test_dry_run_plans_without_writing(relink_app, world, endpoint, mailer):
    due_one = world.broken(RUN - timedelta(hours=30))
    world.broken(RUN - timedelta(hours=3))
    before = world.row_counts()
    planned = plan(relink_app, now=RUN)
    assert [p.disconnection_id for p in planned] == [due_one]
    assert planned[0].recipients.to == (OWNER,)
    assert world.row_counts() == before and endpoint.requests == []


def test_settings_choose_the_mailer(relink_app):
    from relink.emailing.mailer import mailer_for

    assert isinstance(mailer_for(relink_app.settings), OutboxMailer)
    with_key = relink_app.settings.model_copy(
        update={"sendgrid_api_key": SecretStr(API_KEY), "email_timeout": 2.5}
    )
    chosen = mailer_for(with_key)
    assert isinstance(chosen, SendGridMailer) and chosen.client.client.timeout == 2.5
