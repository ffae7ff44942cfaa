"""Mailers: SendGrid through the official SDK, or the outbox (.eml files) when no API key
is set. Both answer `send(email) -> Attempt`; for SendGrid the answer says whether the
email may have gone out: `sent` (2xx, with SendGrid's `X-Message-Id`), `retry` (429 or
5xx with `Retry-After`, or urllib's `URLError`, raised only while connecting or writing,
before any reply could exist), `rejected_key` (401, 403: our key or sender is refused,
so every email would be: the run stops), `failed` (another 4xx, with SendGrid's error
text: resending changes nothing) or `unknown` (a timeout or dropped connection while
waiting for the reply, anything unexpected: it may have been delivered)."""

from __future__ import annotations

import http.client
import json
import logging
import os
import urllib.error
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from enum import StrEnum
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    ClickTracking,
    CustomArg,
    From,
    Mail,
    To,
    TrackingSettings,
)

from relink.domain.words import NotificationState
from relink.errors import InvalidInput
from relink.settings import Settings

SENDER_NAME = "Relink"


class _WithoutRequestHeaders(logging.Filter):
    """The SDK's HTTP client logs each request's headers at DEBUG, our API key among them
    (`Authorization: Bearer ...`): that line never reaches a handler; the others do."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("HEADERS:")


logging.getLogger("python_http_client.client").addFilter(_WithoutRequestHeaders())


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    """One email, ready to send. `reference` names it everywhere (file, custom args)."""

    reference: str  # "disconnection-<id>"
    sender: str
    to: tuple[str, ...]
    subject: str
    text: str
    html: str
    custom_args: dict[str, str] = field(default_factory=dict)


class Result(StrEnum):
    SENT = "sent"
    RETRY = "retry"  # certainly not delivered, worth trying again
    FAILED = "failed"  # refused for good
    REJECTED_KEY = "rejected_key"  # refused because of our account: stop sending
    UNKNOWN = "unknown"  # may have been delivered


@dataclass(frozen=True, slots=True)
class Attempt:
    result: Result
    message_id: str | None = None
    error: str | None = None
    status: int | None = None
    retry_after: float | None = None  # seconds SendGrid asked us to wait


class Mailer(Protocol):
    delivered_state: NotificationState  # the notification state of a delivered email

    def send(self, email: OutgoingEmail) -> Attempt: ...


# --- SendGrid --------------------------------------------------------------------------


class SendGridMailer:
    """`POST /v3/mail/send` through the official SDK (one client per mailer)."""

    delivered_state = NotificationState.SENT

    def __init__(self, api_key: str, host: str, timeout: float) -> None:
        parts = urlsplit(host)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise InvalidInput(
                f"RELINK_SENDGRID_HOST {host!r} is not an http(s) URL, "
                "e.g. https://api.sendgrid.com"
            )
        if timeout <= 0:
            raise InvalidInput(f"RELINK_EMAIL_TIMEOUT must be positive, got {timeout}")
        self.client = SendGridAPIClient(api_key, host=host)
        self.client.client.timeout = timeout  # send() has no timeout argument

    def send(self, email: OutgoingEmail) -> Attempt:
        try:
            response = self.client.send(to_mail(email))
        except HTTPError as exc:
            return classify_http_error(exc)
        except urllib.error.URLError as exc:
            return Attempt(Result.RETRY, error=f"cannot reach SendGrid: {exc.reason}")
        except (TimeoutError, http.client.HTTPException, OSError) as exc:
            return Attempt(
                Result.UNKNOWN,
                error=f"no reply from SendGrid after the request went out "
                f"({type(exc).__name__}: {exc}); it may have been delivered",
            )
        except Exception as exc:  # noqa: BLE001 - whatever it was, the request may have gone out
            return Attempt(Result.UNKNOWN, error=f"unexpected {type(exc).__name__}: {exc}")
        status = response.status_code
        message_id = _header(response.headers, "X-Message-Id")
        if 200 <= status < 300:
            return Attempt(Result.SENT, message_id=message_id, status=status)
        return Attempt(Result.UNKNOWN, error=f"unexpected HTTP {status} from SendGrid")


def classify_http_error(exc: HTTPError) -> Attempt:
    status = int(getattr(exc, "status_code", 0) or 0)
    text = sendgrid_error_text(getattr(exc, "body", b""))
    error = f"HTTP {status}: {text}" if text else f"HTTP {status}"
    if status == 429 or status >= 500:
        return Attempt(
            Result.RETRY,
            error=error,
            status=status,
            retry_after=_retry_after(getattr(exc, "headers", None)),
        )
    if status in (401, 403):
        return Attempt(Result.REJECTED_KEY, error=error, status=status)
    if 400 <= status < 500:
        return Attempt(Result.FAILED, error=error, status=status)
    return Attempt(Result.UNKNOWN, error=error, status=status)


def sendgrid_error_text(body: bytes | str | None) -> str:
    """The messages of SendGrid's `{"errors": [{"message", "field"}]}`, else the raw body."""
    if not body:
        return ""
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        errors = json.loads(raw).get("errors") or []
        parts = [
            f"{e.get('message')} ({e['field']})" if e.get("field") else str(e.get("message"))
            for e in errors
            if isinstance(e, dict)
        ]
    except (ValueError, AttributeError):
        parts = []
    text = "; ".join(parts) or raw.strip()
    return text[:900]


def _header(headers: object, name: str) -> str | None:
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    value = getter(name)
    return str(value) if value else None


def _retry_after(headers: object) -> float | None:
    value = _header(headers, "Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def to_mail(email: OutgoingEmail) -> Mail:
    mail = Mail(
        from_email=From(email.sender, SENDER_NAME),
        to_emails=[To(address) for address in email.to],
        subject=email.subject,
        plain_text_content=email.text,
        html_content=email.html,
    )
    for key, value in email.custom_args.items():
        mail.custom_arg = CustomArg(key, value)
    # the button goes straight to the connection, not through a tracking redirect
    mail.tracking_settings = TrackingSettings(click_tracking=ClickTracking(False, False))
    return mail


# --- outbox ----------------------------------------------------------------------------


class OutboxMailer:
    """Writes each email as an .eml file (multipart/alternative) and sends nothing."""

    delivered_state = NotificationState.OUTBOX

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_of(self, reference: str) -> Path:
        return self.folder / f"{reference}.eml"

    def send(self, email: OutgoingEmail) -> Attempt:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path_of(email.reference)
        temporary = target.with_suffix(".eml.tmp")
        temporary.write_bytes(to_eml(email).as_bytes())
        os.replace(temporary, target)  # a reader never sees half a file
        return Attempt(Result.SENT, message_id=target.name)


def to_eml(email: OutgoingEmail) -> EmailMessage:
    message = EmailMessage()
    message["From"] = formataddr((SENDER_NAME, email.sender))
    message["To"] = ", ".join(email.to)
    message["Subject"] = email.subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(idstring=email.reference, domain="relink.outbox")
    for key, value in email.custom_args.items():
        message[f"X-Relink-{key.replace('_', '-').title()}"] = value
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message


def outbox_folder(settings: Settings) -> Path:
    return settings.data_dir / "outbox"


def mailer_for(settings: Settings) -> Mailer:
    """SendGrid when an API key is set, else the outbox (the embedded default)."""
    key = settings.sendgrid_api_key.get_secret_value()
    if key:
        return SendGridMailer(key, settings.sendgrid_host, settings.email_timeout)
    return OutboxMailer(outbox_folder(settings))
