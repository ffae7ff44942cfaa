"""The one definition of "broken" (relink/domain/broken.py) and the state rule that keeps
a known-broken connection disconnected through an outage (relink/domain/state.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from relink.domain.broken import is_broken, listed_under, unreachable_now
from relink.domain.state import ConnState, decide
from relink.domain.words import Outcome, Status

T0 = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
broken = ConnState("disconnected", T0, True, "28P01", "password authentication failed")

statuses = st.sampled_from(list(Status))
moments = st.one_of(st.none(), st.just(T0))
outcomes = st.sampled_from(list(Outcome))


def test_an_outage_keeps_a_broken_connection_disconnected_with_the_error_that_broke_it():
    d = decide(broken, Outcome.UNREACHABLE, "timeout", "timed out", now=T0 + timedelta(hours=3))
    assert d.status == "disconnected" and not d.changes_status(broken)
    assert d.invalid_since == T0
    assert (d.error_code, d.error_message) == ("28P01", "password authentication failed")
    assert (d.last_outcome, d.last_outcome_code) == ("unreachable", "timeout")
    assert not d.open_disconnection and not d.close_disconnection


def test_an_outage_of_a_working_connection_shows_unreachable():
    healthy = ConnState("connected", None, False)
    d = decide(healthy, Outcome.UNREACHABLE, "timeout", "timed out", now=T0)
    assert d.status == "unreachable" and (d.last_outcome, d.last_outcome_code) == (
        "unreachable",
        "timeout",
    )


def test_a_row_the_old_rule_left_unreachable_is_broken_and_listed_disconnected():
    assert is_broken("unreachable", T0)
    assert listed_under("unreachable", T0) is Status.DISCONNECTED
    assert not is_broken("unreachable", None)
    assert listed_under("unreachable", None) is Status.UNREACHABLE


def test_the_second_fact_is_the_last_outcome():
    assert unreachable_now("unreachable")
    others = (None, "ok", "auth_failed", "misconfigured", "error")
    assert not any(unreachable_now(o) for o in others)


@given(status=statuses, invalid_since=moments)
def test_every_connection_is_listed_under_exactly_one_filter(status, invalid_since):
    under = [s for s in Status if listed_under(status, invalid_since) == s]
    assert len(under) == 1
    assert (under[0] is Status.DISCONNECTED) == is_broken(status, invalid_since)


@given(has_open=st.booleans(), outcome=outcomes, code=st.sampled_from([None, "x"]))
def test_after_any_check_an_open_disconnection_is_listed_disconnected(has_open, outcome, code):
    """Whatever a check finds, the status it leaves lists the connection under
    Disconnected exactly while a disconnection is open after it."""
    before = ConnState(
        "disconnected" if has_open else "connected", T0 if has_open else None, has_open
    )
    d = decide(before, outcome, code, "message", now=T0 + timedelta(hours=1))
    still_open = (has_open and not d.close_disconnection) or d.open_disconnection
    assert (listed_under(d.status, d.invalid_since) is Status.DISCONNECTED) == still_open
    assert d.last_outcome == outcome and d.last_outcome_code == code
