"""The disconnection emails on a real database (SQLite, and PostgreSQL when configured),
sent through the official SDK to the local SendGrid endpoint, which validates every body
against SendGrid's contract (an invalid body would be a 400 and fail the test)."""

from __future__ import annotations

import json
from datetime import timedelta
from email import policy
from email.parser import BytesParser

import pytest
from pydantic import SecretStr

from relink.emailing.due import plan
from relink.emailing.ledger import release
from relink.emailing.mailer import OutboxMailer, SendGridMailer
from relink.emailing.policy import NotifyPolicy
from relink.emailing.run import send_due
from relink.emailing.sender import SendHooks
from tests.support.emaildata import (
    ADMIN,
    API_KEY,
    OWNER,
    RUN,
    SECRET,
    Sleeps,
    World,
    assert_in_step,
    due_ids_at,
    emails_per_disconnection,
    flags,
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

pytestmark = pytest.mark.both_backends  # the due rule runs as SQL

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


# --- the awaiting_email flag through SendGrid's answers (more in test_email_ledger.py) ----


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


def test_email_concurrency_setting_caps_the_emails_in_flight(
    relink_app, settings, endpoint, monkeypatch
):
    """RELINK_EMAIL_CONCURRENCY=3: while SendGrid holds every request, three are in
    flight and no fourth goes out; once answered, all six are sent, once each."""
    import threading

    from pydantic import ValidationError

    from relink.app import Relink
    from relink.settings import Settings
    from tests.support.sendgrid_endpoint import Held

    monkeypatch.setenv("RELINK_EMAIL_CONCURRENCY", "3")
    configured = settings.model_copy(
        update={"email_concurrency": Settings(_env_file=None).email_concurrency}
    )
    assert configured.email_concurrency == 3
    monkeypatch.setenv("RELINK_EMAIL_CONCURRENCY", "0")
    with pytest.raises(ValidationError, match="email_concurrency"):
        Settings(_env_file=None)

    app = Relink(configured)
    app_world = World(app)
    ids = [app_world.broken(RUN - 25 * H) for _ in range(6)]
    endpoint.default = Held(seconds=30)
    mailer = SendGridMailer(API_KEY, endpoint.url, timeout=30)
    result: dict = {}
    runner = threading.Thread(
        target=lambda: result.update(send_due(app, now=RUN, mailer=mailer).as_dict())
    )
    runner.start()
    try:
        deadline = threading.Event()
        for _ in range(500):  # at most 10 s for the first three to arrive
            if endpoint.waiting >= 3:
                break
            deadline.wait(0.02)
        in_flight = endpoint.waiting
        deadline.wait(0.3)  # a fourth sender would have sent by now
        in_flight_later = endpoint.waiting
    finally:
        while runner.is_alive():
            endpoint.release_hangs()
            runner.join(0.05)
        app.close()
    assert in_flight == in_flight_later == 3
    assert result["sent"] == 6
    assert emails_per_disconnection(r.body for r in endpoint.delivered) == {i: 1 for i in ids}
