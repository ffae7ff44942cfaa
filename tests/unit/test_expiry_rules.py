"""The expiry rules (relink/domain/expiry.py) and the catalogue's lifetimes: no I/O, time
as input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

import connectors
from connectors.oauth2 import token_credentials
from connectors.oauth2.providers import REFRESH_LIFETIMES, refresh_lifetime
from relink.domain.expiry import (
    UNKNOWN,
    Expiry,
    ExpiryKind,
    Lifetime,
    credentials_expiry,
    days_left,
    describe,
    heads_up_due,
    keep_alive_due,
    parse_lifetime,
)

T0 = datetime(2026, 3, 1, 14, 0, tzinfo=UTC)
DAY = timedelta(days=1)
moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
)
spans = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400))
kinds = st.sampled_from(list(ExpiryKind))
R = {"refresh_token": "r"}


def test_the_catalogue_knows_the_providers_of_issue_19():
    assert REFRESH_LIFETIMES["microsoft_graph"] == Lifetime(ExpiryKind.IDLE, 90 * DAY)
    assert REFRESH_LIFETIMES["xero"].grace == timedelta(minutes=30)
    assert {"box", "airtable", "xero", "quickbooks"} <= set(REFRESH_LIFETIMES)
    for provider in ("xero", "box", "airtable"):
        assert connectors.get(provider).display_name  # registered as connectors
    assert refresh_lifetime("salesforce", {}) is None  # the org's policy: unknown
    assert refresh_lifetime("google_sheets", {}) is None  # a published Google app
    assert refresh_lifetime("google_sheets", {"publishing_status": "Testing"}) == Lifetime(
        ExpiryKind.HARD, 7 * DAY
    )
    assert refresh_lifetime("salesforce", {"refresh_token_lifetime": "30 days unused"}) == (
        Lifetime(ExpiryKind.IDLE, 30 * DAY)
    )


def test_a_bad_lifetime_setting_is_one_clear_line():
    with pytest.raises(ValueError, match="write '7 days', '30 days unused' or 'never'"):
        parse_lifetime("soon")
    problem = connectors.get("salesforce").settings_problem({"refresh_token_lifetime": "0 days"})
    assert problem is not None and "\n" not in problem
    assert parse_lifetime("never") is None


def test_google_testing_app_expires_seven_days_after_consent_and_a_refresh_keeps_that_end():
    google = connectors.get("google_analytics")
    settings = {"publishing_status": "testing"}
    consent = google.credentials_expiry(settings, R, now=T0)
    assert consent == Expiry(T0 + 7 * DAY, ExpiryKind.HARD)
    later = google.credentials_expiry(
        settings, R, now=T0 + 3 * DAY, new_refresh_token=False, previous=consent
    )
    assert later == consent


def test_the_token_response_lifetime_wins_and_survives_a_refresh_without_a_new_token():
    quickbooks = connectors.get("quickbooks")
    creds = token_credentials(
        {},
        {"access_token": "a", "refresh_token": "r", "x_refresh_token_expires_in": 8 * 86400},
        T0,
    )
    assert quickbooks.credentials_expiry({}, creds, now=T0) == Expiry(T0 + 8 * DAY, "hard")
    again = token_credentials(creds, {"access_token": "b", "expires_in": 3600}, T0 + DAY)
    assert again["refresh_expires_at"] == creds["refresh_expires_at"]
    rotated = token_credentials(creds, {"access_token": "c", "refresh_token": "r2"}, T0 + DAY)
    assert "refresh_expires_at" not in rotated  # a new token without a said end: unknown
    assert quickbooks.credentials_expiry({}, rotated, now=T0 + DAY) == UNKNOWN


def test_an_unreadable_refresh_lifetime_is_unknown_never_a_refused_token():
    creds = token_credentials({}, {"access_token": "a", "refresh_token_expires_in": "soon"}, T0)
    assert "refresh_expires_at" not in creds


def test_idle_tokens_renew_with_every_refresh():
    xero = connectors.get("xero")
    assert xero.credentials_expiry({}, R, now=T0 + 50 * DAY) == Expiry(
        T0 + 110 * DAY, ExpiryKind.IDLE
    )


def test_databases_and_tokens_without_a_refresh_token_have_no_known_end():
    assert connectors.get("postgres").credentials_expiry({}, {"password": "x"}, now=T0) == UNKNOWN
    assert connectors.get("xero").credentials_expiry({}, {"access_token": "a"}, now=T0) == UNKNOWN


@given(now=moments, length=spans.filter(lambda s: s > timedelta(0)), kind=kinds)
def test_without_a_response_the_end_is_the_lifetime_from_the_grant(now, length, kind):
    got = credentials_expiry(Lifetime(kind, length), granted_at=now)
    assert got == Expiry(now + length, kind)


@given(now=moments, seconds=st.integers(1, 10**8), kind=st.none() | kinds)
def test_the_response_always_wins(now, seconds, kind):
    lifetime = None if kind is None else Lifetime(kind, 7 * DAY)
    got = credentials_expiry(lifetime, granted_at=now, response_seconds=seconds)
    assert got.at == now + timedelta(seconds=seconds)
    assert got.kind == (kind or ExpiryKind.HARD)


@given(now=moments)
def test_unknown_stays_unknown(now):
    assert credentials_expiry(None, granted_at=now) == UNKNOWN
    assert not keep_alive_due(UNKNOWN, now) and not heads_up_due(UNKNOWN, now)
    assert days_left(UNKNOWN, now) is None and describe(UNKNOWN, now) == "unknown"


@given(at=moments, before=spans, margin=spans)
def test_keep_alive_is_due_exactly_within_the_margin_of_an_idle_end(at, before, margin):
    now = at - before
    assert keep_alive_due(Expiry(at, ExpiryKind.IDLE), now, margin) == (before <= margin)
    assert not keep_alive_due(Expiry(at, ExpiryKind.HARD), now, margin)  # refreshing cannot help


@given(at=moments, before=st.timedeltas(min_value=-10 * DAY, max_value=400 * DAY), ahead=spans)
def test_heads_up_is_due_within_ahead_of_a_hard_end_and_not_after_it(at, before, ahead):
    now = at - before
    due = heads_up_due(Expiry(at, ExpiryKind.HARD), now, ahead)
    assert due == (timedelta(0) < before <= ahead)
    assert not heads_up_due(Expiry(at, ExpiryKind.IDLE), now, ahead)  # kept alive instead


def test_the_words_people_read():
    hard = Expiry(T0 + 5 * DAY, ExpiryKind.HARD)
    assert describe(hard, T0) == "expires in 5 days"
    assert describe(hard, T0 + 4 * DAY) == "expires in 1 day"
    assert describe(hard, T0 + 4 * DAY + timedelta(hours=1)) == "expires within a day"
    assert describe(hard, T0 + 5 * DAY) == "expired"
    assert describe(Expiry(T0 + 80 * DAY, ExpiryKind.IDLE), T0).startswith("renewed by use")
