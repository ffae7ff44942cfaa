"""Rendering the disconnection email: what it says, escaping, the button's link."""

from datetime import UTC, datetime

from relink.emailing.render import DisconnectionFacts, format_local, render_disconnection_email

FACTS = DisconnectionFacts(
    connection_id=42,
    connection_name="Sales DB",
    source_type="PostgreSQL",
    invalid_since=datetime(2026, 3, 1, 16, 30, tzinfo=UTC),
    last_error='password authentication failed for user "report" (28P01)',
)


def test_time_is_shown_in_mst_with_the_utc_offset():
    assert format_local(datetime(2026, 3, 1, 16, 30, tzinfo=UTC)) == (
        "2026-03-01 09:30 MST (UTC\u221207:00)"
    )
    # Phoenix keeps MST in summer too
    assert format_local(datetime(2026, 7, 1, 16, 30, tzinfo=UTC)) == (
        "2026-07-01 09:30 MST (UTC\u221207:00)"
    )


def test_subject_and_both_parts_name_connection_type_time_and_error():
    email = render_disconnection_email(FACTS, base_url="https://relink.example/")
    assert "Sales DB" in email.subject and "PostgreSQL" in email.subject
    assert "2026-03-01 09:30 MST (UTC\u221207:00)" in email.subject
    for part in (email.text, email.html):
        assert "Sales DB" in part
        assert "PostgreSQL" in part
        assert "2026-03-01 09:30 MST (UTC\u221207:00)" in part
        assert "https://relink.example/connections/42" in part
    assert 'password authentication failed for user "report" (28P01)' in email.text
    assert "password authentication failed for user &#34;report&#34; (28P01)" in email.html


def test_html_has_a_blue_button_straight_to_the_connection():
    html = render_disconnection_email(FACTS, base_url="https://relink.example").html
    button = html[html.index('<a href="https://relink.example/connections/42"') :]
    button = button[: button.index("</a>")]
    assert "background:#1a73e8" in button
    assert "Reconnect Sales DB" in button


def test_connection_name_is_escaped_in_html():
    evil = DisconnectionFacts(
        connection_id=7,
        connection_name='<script>alert("x")</script><img src=x onerror=y>',
        source_type="PostgreSQL",
        invalid_since=FACTS.invalid_since,
        last_error="<b>bold</b>",
    )
    email = render_disconnection_email(evil, base_url="https://relink.example")
    assert "<script>" not in email.html and "<img" not in email.html and "<b>" not in email.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in email.html
    assert '<script>alert("x")</script>' in email.text  # plain text is not HTML


def test_subject_is_one_line_whatever_the_name():
    facts = DisconnectionFacts(
        connection_id=1,
        connection_name="Sales\r\nBcc: everyone@acme.test",
        source_type="PostgreSQL",
        invalid_since=FACTS.invalid_since,
        last_error=None,
    )
    email = render_disconnection_email(facts, base_url="https://relink.example")
    assert "\n" not in email.subject and "\r" not in email.subject
    assert "no error message was recorded" in email.text
