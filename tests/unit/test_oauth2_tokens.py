"""Token sets of the OAuth connector: a token endpoint's answer as stored credentials, and
when an access token needs a refresh; without a server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.base import Unreachable
from connectors.oauth2.tokens import needs_refresh, token_credentials

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_a_token_answer_becomes_string_credentials_over_the_other_secrets():
    base = {"access_token": "old", "refresh_token": "r1", "expires_at": "1", "client_secret": "s"}
    answer = {"access_token": "new", "expires_in": 3600, "instance_url": "https://eu1.sf.com"}
    assert token_credentials(base, answer, NOW) == {
        "access_token": "new",
        "refresh_token": "r1",  # not rotated: the old one stays
        "expires_at": str(int(NOW.timestamp()) + 3600),
        "instance_url": "https://eu1.sf.com",
        "client_secret": "s",
    }
    assert "expires_at" not in token_credentials(base, {"access_token": "n"}, NOW)
    with pytest.raises(Unreachable, match="without an access_token"):
        token_credentials(base, {"token_type": "Bearer"}, NOW)


@pytest.mark.parametrize(
    ("creds", "expected"),
    [
        ({}, True),
        ({"access_token": "a"}, False),  # no expiry known: verified, refreshed when rejected
        ({"access_token": "a", "expires_at": str(NOW.timestamp() + 3600)}, False),
        ({"access_token": "a", "expires_at": str(NOW.timestamp() + 100)}, True),
        ({"access_token": "a", "expires_at": "garbage"}, True),
    ],
)
def test_when_a_token_needs_a_refresh(creds, expected):
    assert needs_refresh(creds, NOW, 300) is expected
