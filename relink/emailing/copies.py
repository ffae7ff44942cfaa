"""The text of one disconnection email, for an admin to read: the outbox's .eml file
when the email went to the outbox, else the email rendered again from its disconnection
(SendGrid keeps the copy it sent; Relink keeps only the record)."""

from __future__ import annotations

from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage

from relink.app import Relink
from relink.emailing.due import email_reference, load_due
from relink.emailing.mailer import OutboxMailer, outbox_folder
from relink.emailing.outbox import NotificationView
from relink.emailing.sender import build_email
from relink.errors import NotFound


@dataclass(frozen=True, slots=True)
class EmailCopy:
    subject: str
    text: str
    html: str
    kept: bool  # True: the copy written to the outbox; False: rendered again now


def copy_of(app: Relink, view: NotificationView) -> EmailCopy:
    """The email of `view`'s disconnection, as its recipients read it."""
    eml = OutboxMailer(outbox_folder(app.settings)).path_of(email_reference(view.disconnection_id))
    if eml.exists():
        message = message_from_bytes(eml.read_bytes(), policy=policy.default)
        assert isinstance(message, EmailMessage)
        return EmailCopy(
            subject=str(message["Subject"] or ""),
            text=_part(message, "plain"),
            html=_part(message, "html"),
            kept=True,
        )
    found = load_due(app, [view.disconnection_id])
    if not found:
        raise NotFound(f"disconnection {view.disconnection_id} is gone")
    settings = app.settings
    email = build_email(found[0], sender=settings.email_from, base_url=settings.base_url)
    return EmailCopy(subject=email.subject, text=email.text, html=email.html, kept=False)


def _part(message: EmailMessage, subtype: str) -> str:
    body = message.get_body((subtype,))
    return body.get_content() if body is not None else ""
