from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from saas_app.core.db import Base, UUIDPrimaryKey

PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
SUBJECT_LENGTH = SENDER_NAME_LENGTH = 200


class MailMessage(UUIDPrimaryKey, Base):
    """One e-mail, written in the same transaction as the change that causes it (the
    transactional outbox): the change and its message both commit, or neither. The sender
    claims due rows, delivers them and records the outcome; a claim that outlives its
    lease (a sender that died) is claimed again."""

    __tablename__ = "mail_message"
    __table_args__ = (Index("ix_mail_message_due", "state", "next_attempt_at"),)

    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenant.id", ondelete="CASCADE"), index=True
    )
    purpose: Mapped[str] = mapped_column(String(40))  # password_reset, email_verification, ...
    sender_name: Mapped[str | None] = mapped_column(String(SENDER_NAME_LENGTH))  # the From's display name
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(SUBJECT_LENGTH))
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(10), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]  # pending: when it is due; sending: when the lease ends
    last_error: Mapped[str | None] = mapped_column(String(300))  # the SMTP reply or error kind
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
