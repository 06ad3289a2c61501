"""Writing a message: a row in the caller's own transaction (the transactional outbox)."""

from __future__ import annotations

import uuid
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, getaddresses

from sqlalchemy.ext.asyncio import AsyncSession

from saas_app.mail.models import PENDING, MailMessage


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
    for header in (recipient, subject, sender_name or ""):
        if "\r" in header or "\n" in header:  # header injection (a Bcc: smuggled in a subject)
            raise ValueError("a mail header may not contain a line break")
    if "@" not in recipient or getaddresses([recipient]) != [("", recipient)]:
        raise ValueError("a message goes to exactly one address")  # not "a@x, b@y"
    message = MailMessage(
        tenant_id=tenant_id,
        purpose=purpose,
        sender_name=sender_name,
        recipient=recipient,
        subject=subject,
        text_body=text_body,
        html_body=html_body,
        state=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(message)
    return message


def as_email(message: MailMessage, mail_from: str, now: datetime) -> EmailMessage:
    """The RFC 5322 message: a text part, and an HTML alternative when there is one."""
    email = EmailMessage()
    email["From"] = formataddr((message.sender_name or "", mail_from))
    email["To"] = message.recipient
    email["Subject"] = message.subject
    email["Date"] = format_datetime(now)
    # The row's own id: the same on every attempt, so a duplicate (a sender killed between
    # the server's 250 and its record) is recognisable as one.
    email["Message-ID"] = f"<{message.id.hex}@{mail_from.rpartition('@')[2] or 'localhost'}>"
    email.set_content(message.text_body)
    if message.html_body is not None:
        email.add_alternative(message.html_body, subtype="html")
    return email
