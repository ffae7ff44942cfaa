"""The pure parts of web sessions: safe `next` targets, the signed cookie, CSRF tokens."""

from __future__ import annotations

import pytest

from relink.web.sessions import SessionCodec, WebSession, safe_next


@pytest.mark.parametrize(
    "target",
    [
        "/connections",
        "/connections/7",
        "/connections?status=disconnected",
        "/connections/7/reconnect",
        "/%2F%2Fevil.example",  # stays a path on this site: browsers do not decode it
    ],
)
def test_same_site_paths_are_kept(target: str) -> None:
    assert safe_next(target) == target


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "//evil.example",
        "///evil.example",
        "https://evil.example/connections",
        "HTTPS://evil.example",
        "http:/evil.example",
        "/\\evil.example",
        "\\/evil.example",
        "\\\\evil.example",
        "/connections\\..\\x",
        "/\t/evil.example",
        "/ /evil.example",
        "/\n/evil.example",
        "/ok\r\nSet-Cookie: x=1",
        "javascript:alert(1)",
        "data:text/html,hi",
        "evil.example",
        "connections",
        "/" + "a" * 2001,
    ],
)
def test_anything_else_falls_back(target: str | None) -> None:
    assert safe_next(target) == "/connections"


def test_cookie_round_trip_keeps_user_csrf_and_flash() -> None:
    codec = SessionCodec("k" * 32)
    session = WebSession()
    session.sign_in(7, "fp")
    session.set_flash("Reconnected.", "success")
    loaded = codec.loads(codec.dumps(session))
    assert loaded is not None
    assert (loaded.user_id, loaded.password_fingerprint, loaded.csrf) == (7, "fp", session.csrf)
    assert loaded.pop_flash() == ("success", "Reconnected.")
    assert loaded.pop_flash() is None


def test_tampered_foreign_and_expired_cookies_are_refused() -> None:
    codec = SessionCodec("k" * 32)
    session = WebSession()
    session.sign_in(7, "fp")
    cookie = codec.dumps(session)
    # the signature's first character: every bit of it counts (the last one's lowest
    # bits are base64 padding, so changing A to B there may change nothing)
    signed, signature = cookie.rsplit(".", 1)
    forged = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert codec.loads(f"{signed}.{forged}") is None
    assert SessionCodec("another secret").loads(cookie) is None
    assert SessionCodec("k" * 32, max_age=-1).loads(cookie) is None
    assert codec.loads("x" * 5000) is None
    assert codec.loads(None) is None


def test_csrf_comparison() -> None:
    session = WebSession()
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(session.csrf + "x")
    assert not session.csrf_matches("")
    assert not session.csrf_matches(None)
    before = session.csrf
    session.sign_in(1, "fp")
    assert session.csrf != before  # a new session never keeps a pre-sign-in token
