from datetime import UTC, datetime

from relink.domain.health import dataset_error, metric_error


def error_of(dataset_status="ok", dataset_err=None, status="connected", conn_err=None, since=None):
    return dataset_error(
        dataset_status=dataset_status,
        dataset_error=dataset_err,
        connection_name="Sales",
        connection_status=status,
        connection_error=conn_err,
        connection_invalid_since=since,
    )


def test_dataset_on_disconnected_connection_shows_the_connections_error():
    message = error_of(status="disconnected", conn_err="invalid_grant: token revoked")
    assert "Sales" in message and "invalid_grant: token revoked" in message
    assert "reconnect" in message


def test_dataset_on_unreachable_connection_keeps_its_last_good_state():
    assert error_of(status="unreachable") is None


def test_broken_credentials_stay_an_error_through_a_later_outage():
    since = datetime(2026, 1, 1, tzinfo=UTC)
    assert "reconnect" in error_of(status="unreachable", conn_err="timeout", since=since)


def test_failed_refresh_is_the_datasets_own_error():
    assert error_of(dataset_status="error", dataset_err="table missing") == "table missing"


def test_metric_errors_while_any_dataset_errors():
    assert metric_error([None, "boom", "later"]) == "boom"
    assert metric_error([None, None]) is None


def test_dataset_on_a_misconfigured_connection_waits_for_an_administrator():
    message = error_of(status="misconfigured", conn_err="invalid_client: set RELINK_OAUTH__X")
    assert "waiting for an administrator" in message
    assert "reconnect" not in message and "RELINK_OAUTH" not in message
