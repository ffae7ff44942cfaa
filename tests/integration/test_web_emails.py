"""The Emails page: an admin sees every disconnection email of the account with its
state, reads one as its recipients do (HTML in a sandboxed frame, plain text beside it),
and releases an `unknown` one; nobody else sees them."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest

from relink import passwords
from relink.emailing.mailer import OutboxMailer, SendGridMailer, outbox_folder
from relink.emailing.run import send_due
from relink.web import create_app
from tests.support.emaildata import ADMIN, API_KEY, OWNER, RUN, SECRET, World
from tests.support.sendgrid_endpoint import Hang, SendGridEndpoint
from tests.support.web import PASSWORD, TestClient, cheap_hashing, page_csrf, sign_in

ROW_RE = re.compile(r'<tr data-email-id="(\d+)">')


@pytest.fixture
def world(relink_app):
    cheap_hashing()
    world = World(relink_app)
    with relink_app.transaction() as session:
        for email in (ADMIN, OWNER):
            passwords.set_password(session, email, PASSWORD, now=RUN)
    return world


@pytest.fixture
def client(relink_app):
    with TestClient(create_app(relink_app), follow_redirects=False) as client:
        yield client


def signed_in(client: TestClient, email: str) -> TestClient:
    assert sign_in(client, email).status_code == 303
    return client


def text_of(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_an_admin_reads_the_email_as_its_owner_did(world, relink_app, client):
    episode = world.broken(RUN - timedelta(hours=25), name="Sales DB")
    summary = send_due(relink_app, now=RUN, mailer=OutboxMailer(outbox_folder(relink_app.settings)))
    assert summary.counts.get("outbox") == 1
    signed_in(client, ADMIN)

    listing = client.get("/emails")
    assert listing.status_code == 200
    (email_id,) = ROW_RE.findall(listing.text)
    row = text_of(listing.text)
    assert "Sales DB" in row and "In the outbox" in row and OWNER in row
    assert 'id="nav-emails"' in listing.text

    page = client.get(f"/emails/{email_id}")
    assert page.status_code == 200
    shown = text_of(page.text)
    assert "The copy written to the outbox" in shown
    assert "Reconnect your PostgreSQL connection" in shown  # the subject
    assert f"#{episode}, still open" in shown and OWNER in shown
    assert "frame-src 'self'" in page.headers["content-security-policy"]
    assert 'sandbox title="The email' in page.text

    frame = client.get(f"/emails/{email_id}/html")
    assert frame.status_code == 200 and "Sales DB" in frame.text
    policy = frame.headers["content-security-policy"]
    assert policy.startswith("sandbox;") and "script-src" not in policy
    assert "frame-ancestors 'self'" in policy and frame.headers["x-frame-options"] == "SAMEORIGIN"
    for response in (listing, page, frame):
        assert SECRET not in response.text


def test_the_emails_times_are_in_mst_with_utc_on_hover(world, relink_app, client):
    """The 14:00 UTC run's email was claimed and written at 07:00 MST, as the email says;
    the page shows no microseconds."""
    run = RUN.replace(microsecond=654321)
    world.broken(run - timedelta(hours=25), name="Sales DB")
    send_due(relink_app, now=run, mailer=OutboxMailer(outbox_folder(relink_app.settings)))
    signed_in(client, ADMIN)
    listing = client.get("/emails").text
    (email_id,) = ROW_RE.findall(listing)
    page = client.get(f"/emails/{email_id}").text
    tag = (
        '<time datetime="2026-03-02T14:00:00+00:00" title="2026-03-02 14:00 UTC">'
        "2026-03-02 07:00 MST</time>"
    )
    assert tag in listing and tag in page
    for shown in (listing, page):
        assert "654321" not in shown and not re.search(r"\d{2}:\d{2}:\d{2}\.\d", shown)
        assert " UTC<" not in shown


def test_an_email_sendgrid_sent_is_rendered_again_and_says_so(world, relink_app, client):
    world.broken(RUN - timedelta(hours=25), name="Sales DB")
    with SendGridEndpoint(api_key=API_KEY) as endpoint:
        send_due(relink_app, now=RUN, mailer=SendGridMailer(API_KEY, endpoint.url, 5))
        assert len(endpoint.delivered) == 1
    signed_in(client, ADMIN)
    (email_id,) = ROW_RE.findall(client.get("/emails?state=sent").text)
    shown = text_of(client.get(f"/emails/{email_id}").text)
    assert "Rendered again from the disconnection as it stands now" in shown
    assert "Sales DB" in client.get(f"/emails/{email_id}/html").text


def test_an_admin_releases_an_unknown_email_and_the_next_run_sends_it(world, relink_app, client):
    episode = world.broken(RUN - timedelta(hours=25), name="Sales DB")
    with SendGridEndpoint(api_key=API_KEY) as endpoint:
        endpoint.script(Hang(seconds=5))
        send_due(relink_app, now=RUN, mailer=SendGridMailer(API_KEY, endpoint.url, 0.3))
        endpoint.release_hangs()
    assert world.states() == {episode: "unknown"}
    signed_in(client, ADMIN)
    (email_id,) = ROW_RE.findall(client.get("/emails?state=unknown").text)
    page = client.get(f"/emails/{email_id}")
    assert 'id="release"' in page.text and "may or may not have gone out" in text_of(page.text)

    released = client.post(f"/emails/{email_id}/release", data={"csrf_token": page_csrf(client)})
    assert released.status_code == 303
    after = client.get(released.headers["location"])
    assert "the next email run sends it again" in text_of(after.text)
    assert world.states() == {episode: "released"}
    again = client.post(f"/emails/{email_id}/release", data={"csrf_token": page_csrf(client)})
    assert "only an unknown one can be released" in text_of(
        client.get(again.headers["location"]).text
    )
    assert world.states() == {episode: "released"}
    with SendGridEndpoint(api_key=API_KEY) as endpoint:
        send_due(
            relink_app, now=RUN + timedelta(days=1), mailer=SendGridMailer(API_KEY, endpoint.url, 5)
        )
        assert len(endpoint.delivered) == 1
    assert world.states() == {episode: "sent"}


def test_members_do_not_see_the_emails(world, relink_app, client):
    world.broken(RUN - timedelta(hours=25))
    send_due(relink_app, now=RUN, mailer=OutboxMailer(outbox_folder(relink_app.settings)))
    signed_in(client, OWNER)
    assert 'id="nav-emails"' not in client.get("/connections").text
    assert client.get("/emails").status_code == 403
    assert client.get("/emails/1").status_code == 403
    assert client.get("/emails/1/html").status_code == 403


def test_an_unknown_state_says_so_and_shows_every_email(world, relink_app, client):
    world.broken(RUN - timedelta(hours=25))
    send_due(relink_app, now=RUN, mailer=OutboxMailer(outbox_folder(relink_app.settings)))
    signed_in(client, ADMIN)
    page = client.get("/emails?state=delivered")
    assert page.status_code == 200
    assert 'There is no email state "delivered"' in text_of(page.text).replace("“", '"').replace(
        "”", '"'
    )
    assert len(ROW_RE.findall(page.text)) == 1
