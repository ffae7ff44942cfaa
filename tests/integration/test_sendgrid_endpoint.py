"""The local SendGrid endpoint, driven through the official SDK as Relink's email code drives it."""

from __future__ import annotations

import http.client
import json
import selectors
import subprocess
import sys
import time
import urllib.error
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from python_http_client.exceptions import (
    BadRequestsError,
    HTTPError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    TooManyRequestsError,
    UnauthorizedError,
)
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, Mail

from tests.support.sendgrid_endpoint import (
    MAX_BODY_BYTES,
    NO_RESPONSE,
    UNAUTHORIZED_BODY,
    Accept,
    AcceptThenHang,
    BadRequest,
    Hang,
    RateLimited,
    Response,
    SendGridEndpoint,
    ServerError,
    TooLarge,
    Unauthorized,
    request_validator,
)

API_KEY = "SG.test-key"
REPO_ROOT = Path(__file__).resolve().parents[2]
SHORT_TIMEOUT = 0.3


@pytest.fixture
def endpoint() -> Iterator[SendGridEndpoint]:
    with SendGridEndpoint(api_key=API_KEY) as running:
        yield running


def sdk(url: str, api_key: str = API_KEY, timeout: float | None = None) -> SendGridAPIClient:
    """The official client pointed at ``url`` (the SDK has no timeout argument)."""
    client = SendGridAPIClient(api_key, host=url)
    client.client.timeout = timeout
    return client


def a_mail(to: str | list[str] = "owner@example.com") -> Mail:
    return Mail(
        from_email="alerts@relink.example",
        to_emails=to,
        subject="Your connection needs attention",
        plain_text_content="Please reconnect.",
    )


def valid_body(**changes: Any) -> dict[str, Any]:
    return {**a_mail().get(), **changes}


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# ------------------------------------------------------------------------ accepted


def test_valid_mail_gets_202_and_a_unique_message_id(endpoint: SendGridEndpoint) -> None:
    client = sdk(endpoint.url)
    first = client.send(a_mail("a@example.com"))
    second = client.send(a_mail(["b@example.com", "c@example.com"]))

    assert (first.status_code, first.body) == (202, b"")
    ids = [first.headers["X-Message-Id"], second.headers["X-Message-Id"]]
    assert ids[0] != ids[1] and all(len(i) == 22 for i in ids)
    assert [r.message_id for r in endpoint.delivered] == ids
    record = endpoint.delivered[0]
    assert record.status == 202 and record.body == a_mail("a@example.com").get()
    assert record.headers["authorization"] == f"Bearer {API_KEY}"
    assert endpoint.recipients() == ["a@example.com", "b@example.com", "c@example.com"]


def test_validator_is_built_once() -> None:
    assert request_validator() is request_validator()


def test_known_gaps_that_real_sendgrid_accepts(endpoint: SendGridEndpoint) -> None:
    """Template send without subject/content, and the SDK's message-level custom_args."""
    template = Mail(from_email="alerts@relink.example", to_emails="owner@example.com")
    template.template_id = "d-0123456789abcdef"
    template.dynamic_template_data = {"connection": "Postgres"}
    with_args = a_mail()
    with_args.custom_arg = CustomArg("connection_id", "42")

    assert sdk(endpoint.url).send(template).status_code == 202
    assert sdk(endpoint.url).send(with_args).status_code == 202
    assert len(endpoint.delivered) == 2


def test_keep_alive_client_is_served(endpoint: SendGridEndpoint) -> None:
    """Benchmarks may reuse connections (HTTP/1.1); the SDK itself opens one per send."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=endpoint.url, headers=headers) as client:
        statuses = [client.post("/v3/mail/send", json=valid_body()).status_code for _ in range(5)]
    assert statuses == [202] * 5
    assert len(endpoint.delivered) == 5


# ------------------------------------------------------------------------ rejected


def _many(n: int) -> list[dict[str, Any]]:
    return [{"to": [{"email": f"user{i}@example.com"}]} for i in range(n)]


@pytest.mark.parametrize(
    ("body", "field", "message_part"),
    [
        (valid_body(**{"from": None}), "$.from", "None is not of type 'object'"),
        ({k: v for k, v in valid_body().items() if k != "from"}, "$.from", "'from' is a required"),
        (valid_body(personalizations=[]), "$.personalizations", "at least one personalization"),
        (valid_body(personalizations=_many(1001)), "$.personalizations", "at most 1000"),
        (valid_body(subject=""), "$.subject", "should be non-empty"),
        (
            valid_body(personalizations=[{"to": [{"email": "nobody"}]}]),
            "$.personalizations[0].to[0].email",
            "'nobody' is not a 'email'",
        ),
    ],
    ids=["from-null", "no-from", "no-personalization", "1001", "empty-subject", "bad-address"],
)
def test_invalid_body_is_400_with_the_reason(
    endpoint: SendGridEndpoint, body: dict[str, Any], field: str, message_part: str
) -> None:
    with pytest.raises(BadRequestsError) as raised:
        sdk(endpoint.url).send(body)

    assert raised.value.status_code == 400
    [error] = raised.value.to_dict["errors"]
    assert error["field"] == field and message_part in error["message"]
    assert error["help"] is None
    assert endpoint.delivered == [] and endpoint.requests[0].status == 400


def test_mail_without_from_via_mail_helper_is_400(endpoint: SendGridEndpoint) -> None:
    mail = Mail(to_emails="owner@example.com", subject="s", plain_text_content="x")
    with pytest.raises(BadRequestsError) as raised:
        sdk(endpoint.url).send(mail)
    assert raised.value.to_dict == {
        "errors": [{"message": "'from' is a required property", "field": "$.from", "help": None}]
    }


def test_body_that_is_not_json_is_400(endpoint: SendGridEndpoint) -> None:
    response = httpx.post(
        f"{endpoint.url}/v3/mail/send",
        content=b"{not json",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["errors"][0]["message"]


def test_wrong_key_is_401_with_sendgrids_body(endpoint: SendGridEndpoint) -> None:
    with pytest.raises(UnauthorizedError) as raised:
        sdk(endpoint.url, api_key="SG.wrong").send(a_mail())
    message = "The provided authorization grant is invalid, expired, or revoked"
    expected = {"errors": [{"message": message, "field": None, "help": None}]}
    assert raised.value.to_dict == UNAUTHORIZED_BODY == expected
    assert endpoint.delivered == [] and endpoint.requests[0].status == 401


def test_body_over_30_mb_is_413(endpoint: SendGridEndpoint) -> None:
    mail = a_mail()
    mail.add_content("x" * MAX_BODY_BYTES, "text/html")
    with pytest.raises(PayloadTooLargeError) as raised:
        sdk(endpoint.url).send(mail)
    assert raised.value.status_code == 413 and raised.value.to_dict["errors"]
    assert endpoint.delivered == [] and endpoint.requests[0].status == 413


def test_other_paths_are_404_json(endpoint: SendGridEndpoint) -> None:
    client = sdk(endpoint.url)
    with pytest.raises(NotFoundError) as get_raised:
        client.client.templates.get()
    with pytest.raises(NotFoundError):
        client.client.mail.batch.post(request_body={})
    assert get_raised.value.to_dict["errors"][0]["message"] == "resource not found"
    assert endpoint.requests == []


def test_refused_connection_raises_urlerror() -> None:
    with SendGridEndpoint() as stopped:
        url = stopped.url
    with pytest.raises(urllib.error.URLError) as raised:
        sdk(url).send(a_mail())
    assert isinstance(raised.value.reason, ConnectionRefusedError)
    assert not isinstance(raised.value, HTTPError)


# ------------------------------------------------------------------------- scripted


@pytest.mark.parametrize(
    ("response", "error", "status"),
    [
        (
            BadRequest("The from address does not match a Sender Identity.", "from"),
            BadRequestsError,
            400,
        ),
        (Unauthorized(), UnauthorizedError, 401),
        (TooLarge(), PayloadTooLargeError, 413),
        (RateLimited(retry_after=7), TooManyRequestsError, 429),
        (ServerError(), InternalServerError, 500),
    ],
    ids=["400", "401", "413", "429", "500"],
)
def test_scripted_error_responses(
    endpoint: SendGridEndpoint, response: Response, error: type[HTTPError], status: int
) -> None:
    endpoint.script(response)
    with pytest.raises(error) as raised:
        sdk(endpoint.url).send(a_mail())
    assert type(raised.value) is error and raised.value.status_code == status
    assert raised.value.to_dict["errors"][0]["message"]
    assert endpoint.requests[0].status == status and endpoint.delivered == []


def test_rate_limit_retry_after_is_readable_from_the_exception(endpoint: SendGridEndpoint) -> None:
    endpoint.script(RateLimited(retry_after=7))
    with pytest.raises(TooManyRequestsError) as raised:
        sdk(endpoint.url).send(a_mail())
    assert raised.value.headers["Retry-After"] == "7"
    assert raised.value.headers["X-RateLimit-Remaining"] == "0"


def test_script_is_fifo_then_falls_back_to_default(endpoint: SendGridEndpoint) -> None:
    client = sdk(endpoint.url)
    endpoint.script(ServerError(), RateLimited())
    with pytest.raises(BadRequestsError):  # an invalid body does not consume the script
        client.send(valid_body(personalizations=[]))
    with pytest.raises(InternalServerError):
        client.send(a_mail())
    with pytest.raises(TooManyRequestsError):
        client.send(a_mail())
    assert client.send(a_mail()).status_code == 202

    endpoint.default = ServerError()
    endpoint.script(Accept())
    assert client.send(a_mail()).status_code == 202
    with pytest.raises(InternalServerError):
        client.send(a_mail())
    assert [r.status for r in endpoint.requests] == [400, 500, 429, 202, 202, 500]

    endpoint.reset()
    assert endpoint.requests == [] and isinstance(endpoint.default, Accept)
    assert client.send(a_mail()).status_code == 202


# --------------------------------------------------------------------------- hangs


def test_hang_makes_the_sdk_time_out(endpoint: SendGridEndpoint) -> None:
    endpoint.script(Hang(30))
    started = time.monotonic()
    with pytest.raises(TimeoutError):  # socket.timeout is TimeoutError; not wrapped by urllib
        sdk(endpoint.url, timeout=SHORT_TIMEOUT).send(a_mail())
    assert time.monotonic() - started < 2
    [record] = endpoint.requests
    assert record.status == NO_RESPONSE and not record.delivered and record.message_id is None


def test_hang_blocks_only_its_request_and_release_closes_it(endpoint: SendGridEndpoint) -> None:
    endpoint.script(Hang(30))
    with ThreadPoolExecutor(1) as pool:
        hanging = pool.submit(sdk(endpoint.url, timeout=10).send, a_mail("late@example.com"))
        wait_until(lambda: len(endpoint.requests) == 1)

        assert sdk(endpoint.url, timeout=2).send(a_mail()).status_code == 202
        endpoint.release_hangs()
        error = hanging.exception(timeout=5)

    assert type(error) is http.client.RemoteDisconnected  # connection closed, no response
    assert endpoint.recipients() == ["owner@example.com"]


def test_accept_then_hang_is_delivered_although_the_sdk_times_out(
    endpoint: SendGridEndpoint,
) -> None:
    endpoint.script(AcceptThenHang(30))
    with pytest.raises(TimeoutError):
        sdk(endpoint.url, timeout=SHORT_TIMEOUT).send(a_mail("lost-reply@example.com"))

    [record] = endpoint.delivered
    assert record.status == NO_RESPONSE and record.message_id
    assert endpoint.recipients() == ["lost-reply@example.com"]
    endpoint.release_hangs()


# ---------------------------------------------------------------------- standalone


def _read_line(stream: Any, timeout: float) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        assert selector.select(timeout), "no output from the standalone endpoint"
    return stream.readline()


def test_standalone_process_logs_each_delivered_email(tmp_path: Path) -> None:
    log = tmp_path / "delivered.jsonl"
    module = "tests.support.sendgrid_endpoint"
    args = ["--port", "0", "--api-key", "SG.crash-test", "--log", str(log)]
    command = [sys.executable, "-m", module, *args]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        word, url = _read_line(process.stdout, timeout=10).split()
        assert word == "ready" and url.startswith("http://127.0.0.1:")

        client = sdk(url, api_key="SG.crash-test")
        ids = [client.send(a_mail(f"u{i}@example.com")).headers["X-Message-Id"] for i in (1, 2)]
        with pytest.raises(UnauthorizedError):
            sdk(url, api_key="SG.wrong").send(a_mail())

        lines = [json.loads(line) for line in log.read_text().splitlines()]
        assert [line["message_id"] for line in lines] == ids
        assert [line["to"] for line in lines] == [["u1@example.com"], ["u2@example.com"]]
        assert lines[0]["body"] == a_mail("u1@example.com").get()
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0
