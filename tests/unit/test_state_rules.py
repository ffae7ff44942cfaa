from datetime import UTC, datetime, timedelta

from relink.domain.state import (
    Change,
    ConnState,
    Incident,
    decide,
    detect_incidents,
    plan_incidents,
)
from relink.domain.words import Outcome

T0 = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
healthy = ConnState(status="connected", invalid_since=None, has_open_disconnection=False)


def test_first_auth_failure_opens_a_disconnection_at_the_checks_time():
    d = decide(healthy, Outcome.AUTH_FAILED, "invalid_grant", "token revoked", now=T0)
    assert d.status == "disconnected"
    assert d.invalid_since == T0
    assert d.open_disconnection and not d.close_disconnection
    assert (d.error_code, d.error_message) == ("invalid_grant", "token revoked")


def test_later_failures_keep_the_first_time():
    broken = ConnState("disconnected", T0, True)
    d = decide(broken, Outcome.AUTH_FAILED, "invalid_grant", "again", now=T0 + timedelta(hours=5))
    assert d.invalid_since == T0
    assert not d.open_disconnection


def test_ok_closes_the_open_disconnection_and_clears_the_error():
    d = decide(
        ConnState("disconnected", T0, True), Outcome.OK, None, "ok", now=T0 + timedelta(hours=1)
    )
    assert d.status == "connected" and d.invalid_since is None
    assert d.close_disconnection and not d.open_disconnection
    assert d.error_code is None and d.error_message is None


def test_ok_on_a_healthy_connection_closes_nothing():
    assert not decide(healthy, Outcome.OK, None, "", now=T0).close_disconnection


def test_an_outage_never_opens_a_disconnection():
    d = decide(healthy, Outcome.UNREACHABLE, "timeout", "timed out", now=T0)
    assert d.status == "unreachable"
    assert d.invalid_since is None
    assert not d.open_disconnection and not d.close_disconnection


def test_an_outage_keeps_an_open_disconnection_and_its_start():
    d = decide(
        ConnState("disconnected", T0, True),
        Outcome.UNREACHABLE,
        "http_503",
        "503",
        now=T0 + timedelta(hours=3),
    )
    assert d.invalid_since == T0
    assert not d.open_disconnection and not d.close_disconnection


def test_failure_after_recovery_is_a_new_disconnection():
    recovered = ConnState("connected", None, False)
    later = T0 + timedelta(days=2)
    d = decide(recovered, Outcome.AUTH_FAILED, "28P01", "password authentication failed", now=later)
    assert d.open_disconnection and d.invalid_since == later


def test_most_connections_of_one_provider_failing_alike_is_an_incident():
    results = [("salesforce", "unreachable", "http_503")] * 8 + [("salesforce", "ok", None)] * 2
    results += [("hubspot", "auth_failed", "invalid_grant")] * 1 + [("hubspot", "ok", None)] * 9
    (incident,) = detect_incidents(results)
    assert (incident.provider, incident.code, incident.failed, incident.checked) == (
        "salesforce",
        "http_503",
        8,
        10,
    )
    assert "8 of 10" in incident.describe()


def test_few_connections_or_mixed_codes_are_no_incident():
    assert detect_incidents([("x", "auth_failed", "invalid_grant")] * 4) == []
    mixed = [("x", "unreachable", "timeout")] * 3 + [("x", "unreachable", "http_500")] * 3
    assert detect_incidents(mixed) == []


def test_a_misconfigured_installation_never_opens_a_disconnection():
    d = decide(healthy, Outcome.MISCONFIGURED, "invalid_client", "app refused", now=T0)
    assert d.status == "misconfigured"
    assert d.invalid_since is None
    assert not d.open_disconnection and not d.close_disconnection
    assert (d.error_code, d.error_message) == ("invalid_client", "app refused")


def test_a_misconfigured_installation_keeps_an_open_disconnection_as_it_was():
    """The owner's connection stays Disconnected since T0, with the error that broke it
    (what the owner's email says), neither closed nor moved by the installation's fault."""
    broken = ConnState("disconnected", T0, True, "invalid_grant", "token revoked")
    later = T0 + timedelta(hours=30)
    d = decide(broken, Outcome.MISCONFIGURED, "invalid_client", "app refused", now=later)
    assert d.status == "disconnected" and d.invalid_since == T0
    assert not d.open_disconnection and not d.close_disconnection
    assert (d.error_code, d.error_message) == ("invalid_grant", "token revoked")


def test_once_the_installation_is_fixed_the_next_check_decides_as_usual():
    misconfigured = ConnState("misconfigured", None, False, "invalid_client", "app refused")
    assert decide(misconfigured, Outcome.OK, None, "", now=T0).status == "connected"
    d = decide(misconfigured, Outcome.AUTH_FAILED, "invalid_grant", "revoked", now=T0)
    assert d.status == "disconnected" and d.open_disconnection and d.invalid_since == T0


def test_a_misconfigured_provider_is_an_installation_problem_not_an_incident():
    results = [("salesforce", "misconfigured", "invalid_client")] * 10
    assert detect_incidents(results) == []


# --- which changes are events -------------------------------------------------------------


def change(before: ConnState, outcome: Outcome, code: str | None = None):
    return decide(before, outcome, code, "message", now=T0).change(before)


def test_a_connection_breaking_recovering_or_misconfigured_is_an_event():
    broken = ConnState("disconnected", T0, True)
    misconfigured = ConnState("misconfigured", None, False)
    assert change(healthy, Outcome.AUTH_FAILED, "invalid_grant") == Change.DISCONNECTED
    assert change(misconfigured, Outcome.AUTH_FAILED, "invalid_grant") == Change.DISCONNECTED
    assert change(broken, Outcome.OK) == Change.RECOVERED
    assert change(misconfigured, Outcome.OK) == Change.RECOVERED
    assert change(healthy, Outcome.MISCONFIGURED, "invalid_client") == Change.MISCONFIGURED
    assert str(Change.RECOVERED) == "relink.connection.recovered"


def test_what_changes_nothing_a_user_hears_about_is_no_event():
    broken = ConnState("disconnected", T0, True)
    misconfigured = ConnState("misconfigured", None, False)
    unreachable = ConnState("unreachable", None, False)
    assert change(healthy, Outcome.OK) is None
    assert change(broken, Outcome.AUTH_FAILED, "invalid_grant") is None  # still the same one
    assert change(broken, Outcome.MISCONFIGURED, "invalid_client") is None  # stays broken
    assert change(misconfigured, Outcome.MISCONFIGURED, "invalid_client") is None
    # an outage is the provider's incident, not news about one connection
    assert change(healthy, Outcome.UNREACHABLE, "http_503") is None
    assert change(unreachable, Outcome.OK) is None
    assert change(ConnState("unchecked", None, False), Outcome.OK) is None


# --- a provider incident's life -----------------------------------------------------------


def test_an_incident_opens_is_updated_and_ends_when_enough_connections_are_well():
    outage = Incident("salesforce", "unreachable", "http_503", 412, 430)
    first = plan_incidents([outage], [], {"salesforce": 430})
    assert (first.open, first.update, first.close) == ([outage], [], [])
    again = plan_incidents([outage], ["salesforce"], {"salesforce": 430})
    assert (again.open, again.update, again.close) == ([], [outage], [])
    well = plan_incidents([], ["salesforce"], {"salesforce": 430})
    assert (well.open, well.update, well.close) == ([], [], ["salesforce"])


def test_a_sweep_that_checked_too_few_of_a_provider_leaves_its_incident_open():
    # a re-check of one connection says nothing about the provider
    assert plan_incidents([], ["salesforce"], {"salesforce": 1}).close == []
    assert plan_incidents([], ["salesforce"], {}).close == []


def test_one_incident_per_provider_its_most_common_failure():
    timeouts = Incident("hubspot", "unreachable", "timeout", 6, 10)
    errors = Incident("hubspot", "unreachable", "http_500", 4, 10)
    assert plan_incidents([errors, timeouts], [], {"hubspot": 10}).open == [timeouts]
