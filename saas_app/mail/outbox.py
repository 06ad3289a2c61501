"""Writing a message: a row in the caller's own transaction (the transactional outbox)."""

from __future__ import annotations

import uuid
from datetime import datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, getaddresses
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.mail import templates
from saas_app.mail.models import PENDING, SENDER_NAME_LENGTH, SUBJECT_LENGTH, MailMessage

# Bodies in UTF-8, quoted-printable: readable as sent, where base64 would hide the links.
UTF8_QP = Charset("utf-8")
UTF8_QP.body_encoding = QP


def enqueue(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID | None,
    purpose: str,
    recipient: str,
    subject: str,
    text_body: str,
    html_body: str | None = None,
    sender_name: str | None = None,
    now: datetime,
) -> MailMessage:
    """Adds the message to `session`: it is sent only if the caller's transaction commits,
    and it is sent even if the process stops right after (the sender picks it up)."""
    if not recipient.isprintable():
        raise ValueError("a mail header may not contain a line break")
    if "@" not in recipient or getaddresses([recipient]) != [("", recipient)]:
        raise ValueError("a message goes to exactly one address")  # not "a@x, b@y"
    message = MailMessage(
        tenant_id=tenant_id,
        purpose=purpose,
        sender_name=None if sender_name is None else one_line(sender_name, SENDER_NAME_LENGTH),
        recipient=recipient,
        subject=one_line(subject, SUBJECT_LENGTH),
        text_body=text_body,
        html_body=html_body,
        state=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(message)
    return message


def enqueue_template(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    tenant_name: str,
    template: str,
    purpose: str,
    recipient: str,
    subject: str,
    now: datetime,
    **context: Any,
) -> MailMessage:
    """`enqueue` a tenant's message: the text and HTML parts of `template` (given the
    tenant's name with `context`), sent in the tenant's name."""
    text, html = templates.render(template, tenant_name=tenant_name, **context)
    return enqueue(
        session,
        tenant_id=tenant_id,
        purpose=purpose,
        recipient=recipient,
        subject=subject,
        text_body=text,
        html_body=html,
        sender_name=tenant_name,
        now=now,
    )


def one_line(text: str, limit: int) -> str:
    """A header's text on one line, within its column: a tenant's name may hold line breaks
    (CR, LF, U+2028, U+0085, ...) or be long, and neither may cost the user their mail, nor
    start a header of its own (a Bcc: smuggled in a subject)."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def as_email(message: MailMessage, mail_from: str, now: datetime) -> Message:
    """The RFC 5322 message: a text part, and an HTML alternative when there is one.

    Built with the `compat32` classes: the default policy's header objects parse every
    header they are given, which took two thirds of a sender's time per message. That
    policy also refused a line break in a header; here `_header` does, explicitly.
    """
    # MIMEText hands its charset to Message.set_payload, which takes a Charset too (typeshed
    # says str only).
    text = MIMEText(message.text_body, "plain", UTF8_QP)  # type: ignore[arg-type]
    email: Message = text
    if message.html_body is not None:
        email = MIMEMultipart("alternative")
        email.attach(text)
        email.attach(MIMEText(message.html_body, "html", UTF8_QP))  # type: ignore[arg-type]
    name = _header(message.sender_name or "")
    if _plain(name):
        email["From"] = formataddr((name, mail_from))
    else:
        email["From"] = f"{Header(name, 'utf-8').encode()} <{mail_from}>"
    email["To"] = _header(message.recipient)
    subject = _header(message.subject)
    if _plain(subject):
        email["Subject"] = subject
    else:
        email["Subject"] = Header(subject, "utf-8")  # type: ignore[assignment]  # RFC 2047 words
    email["Date"] = format_datetime(now)
    # The row's own id: the same on every attempt, so a duplicate (a sender killed between
    # the server's 250 and its record) is recognisable as one.
    email["Message-ID"] = f"<{message.id.hex}@{mail_from.rpartition('@')[2] or 'localhost'}>"
    return email


def _plain(text: str) -> bool:
    """Whether a header's text goes as it is: ASCII that no reader takes for an encoded word
    (RFC 2047 `=?charset?q?...?=`: a tenant named so would be shown as something else)."""
    return text.isascii() and "=?" not in text


def _header(value: str) -> str:
    """A header's value as stored, refused if it could start a header of its own (a row
    written by other means than `enqueue`: SQL by hand, an older version)."""
    if not value.isprintable():
        raise ValueError("a mail header may not contain a line break")
    return value
