"""What each SendGrid answer means for an email: sent, retry, failed, stop, or unknown."""

import json

import pytest
from python_http_client.exceptions import HTTPError, err_dict

from relink.emailing.mailer import Result, classify_http_error, sendgrid_error_text


def http_error(status: int, body: object = None, headers: dict | None = None) -> HTTPError:
    raw = json.dumps(body).encode() if body is not None else b""
    return err_dict.get(status, HTTPError)(status, "reason", raw, headers or {})


@pytest.mark.parametrize(
    ("status", "result"),
    [
        (400, Result.FAILED),
        (413, Result.FAILED),
        (404, Result.FAILED),
        (401, Result.REJECTED_KEY),
        (403, Result.REJECTED_KEY),
        (429, Result.RETRY),
        (500, Result.RETRY),
        (502, Result.RETRY),  # no subclass in the SDK: the base HTTPError
        (503, Result.RETRY),
    ],
)
def test_status_decides_the_result(status, result):
    assert classify_http_error(http_error(status)).result is result


def test_failed_keeps_sendgrids_error_text():
    body = {
        "errors": [
            {
                "message": "Does not contain a valid address.",
                "field": "personalizations.0.to.0.email",
            }
        ]
    }
    attempt = classify_http_error(http_error(400, body))
    assert attempt.error == (
        "HTTP 400: Does not contain a valid address. (personalizations.0.to.0.email)"
    )


def test_retry_after_in_seconds_is_read_and_a_date_is_ignored():
    assert classify_http_error(http_error(429, headers={"Retry-After": "12"})).retry_after == 12
    dated = http_error(503, headers={"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"})
    assert classify_http_error(dated).retry_after is None


def test_error_text_of_a_body_that_is_not_sendgrids():
    assert sendgrid_error_text(b"<html>Bad gateway</html>") == "<html>Bad gateway</html>"
    assert sendgrid_error_text(b"") == ""
