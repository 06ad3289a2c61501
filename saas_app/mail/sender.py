"""Delivers the outbox: claims due messages, sends them, records what happened.

- **Each message once, on any number of workers and nodes**: a sender claims a batch in
  one short transaction (`state = sending`, with a lease), PostgreSQL skipping rows
  another sender holds (`FOR UPDATE SKIP LOCKED`), SQLite serialising the claims under
  its write lock; then it sends, with no transaction open, and records the outcome. A
  sender that dies mid-send leaves the claim to expire, and the message goes again:
  delivery is at least once, as with any outbox (a duplicate needs a crash between the
  SMTP server's 250 and the next commit).
- **Retries**: a 4xx reply, a refused or lost connection, a timeout or a failed login
  wait 1, 2, 4 ... s, at most 60 s, between tries; a 5xx reply fails the message at once;
  one still unsent `MAIL_MAX_AGE_HOURS` after it was written fails. Every attempt is
  logged with the message's id and purpose, never its body (it holds tokens) or address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage

import aiosmtplib
from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from saas_app.core.clock import Clock
from saas_app.core.config import Settings
from saas_app.core.logging import REPEATS
from saas_app.mail.models import FAILED, PENDING, SENDING, SENT, MailMessage
from saas_app.mail.outbox import as_email
from saas_app.mail.smtp import SmtpServer, SmtpSession

logger = logging.getLogger("saas_app.mail")
POLL_SECONDS = 1.0  # how long a new message may wait while the sender is idle
BATCH = 50  # messages claimed, and sent on one connection, at a time
MAX_BACKOFF_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str  # SENT, PENDING (try again) or FAILED
    detail: str | None = None  # the SMTP reply code, or the kind of error

    @classmethod
    def of(cls, exc: BaseException) -> Outcome:
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            codes = [refused.code for refused in exc.recipients]
            permanent = bool(codes) and all(500 <= code < 600 for code in codes)
            return cls(FAILED if permanent else PENDING, f"recipient refused {codes}")
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            # A 535 is the operator's configuration, not the message's fault: keep the
            # message until the credentials are fixed (or it grows too old).
            return cls(PENDING, f"login refused {exc.code}")
        if isinstance(exc, aiosmtplib.SMTPResponseException) and not isinstance(
            exc, aiosmtplib.SMTPServerDisconnected
        ):
            return cls(FAILED if 500 <= exc.code < 600 else PENDING, f"reply {exc.code}")
        return cls(PENDING, type(exc).__name__)  # connection refused or lost, timeout, TLS


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(MAX_BACKOFF_SECONDS, 2 ** max(0, attempts - 1)))


class MailSender:
    """Runs in the app's lifespan (`MAIL_SENDER_IN_APP`) or alone (`python -m saas_app
    mail worker`); `deliver_due()` is one pass, `run()` passes until closed."""

    def __init__(self, factory: async_sessionmaker[AsyncSession], settings: Settings, clock: Clock) -> None:
        assert settings.SMTP_URL is not None
        self._factory = factory
        self._server = SmtpServer.parse(settings.SMTP_URL)
        self._from = settings.MAIL_FROM
        self._timeout = settings.SMTP_TIMEOUT_SECONDS
        self._max_age = timedelta(hours=settings.MAIL_MAX_AGE_HOURS)
        self._lease = timedelta(seconds=settings.SMTP_TIMEOUT_SECONDS * 3 + 30)
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="mail sender")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        while True:
            try:
                sent = await self.deliver_due()
            except Exception as exc:  # the database is down: try again, say so now and then
                kind = type(exc).__name__
                REPEATS.log(logger, logging.ERROR, "mail:pass", "mail sender: a pass failed (%s)", kind)
                sent = 0
            if sent < BATCH:
                await asyncio.sleep(POLL_SECONDS)

    async def deliver_due(self) -> int:
        """Claims what is due, sends it, records each outcome; returns how many were claimed."""
        claimed = await self._claim()
        if not claimed:
            return 0
        outcomes = await self._send(claimed)
        await self._record(claimed, outcomes)
        return len(claimed)

    def _due(self, now: datetime) -> ColumnElement[bool]:
        """Pending and due, or claimed by a sender whose lease ran out."""
        return and_(
            or_(MailMessage.state == PENDING, MailMessage.state == SENDING),
            MailMessage.next_attempt_at <= now,
        )

    async def _claim(self) -> list[MailMessage]:
        now = self._clock.now()
        async with self._factory() as session:
            # A read first: an idle outbox costs one indexed SELECT a second, no write lock.
            if (await session.scalar(select(MailMessage.id).where(self._due(now)).limit(1))) is None:
                return []
        async with self._factory() as session, session.begin():
            # Too old to send: failed here too, so a message whose sending never gets as far
            # as a record (a sender that dies on it, every time) still ends.
            await session.execute(
                update(MailMessage)
                .where(self._due(now), MailMessage.created_at <= now - self._max_age)
                .values(state=FAILED, last_error="too old")
                .execution_options(synchronize_session=False)
            )
            due = (
                select(MailMessage.id)
                .where(self._due(now))
                .order_by(MailMessage.next_attempt_at)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            )
            claimed = await session.scalars(
                update(MailMessage)
                .where(MailMessage.id.in_(due), self._due(now))
                .values(state=SENDING, next_attempt_at=now + self._lease, attempts=MailMessage.attempts + 1)
                .returning(MailMessage)
                .execution_options(synchronize_session=False)
            )
            messages = list(claimed.all())
            for message in messages:
                session.expunge(message)
            return messages

    async def _send(self, messages: list[MailMessage]) -> dict[uuid.UUID, Outcome]:
        outcomes: dict[uuid.UUID, Outcome] = {}
        emails: dict[uuid.UUID, EmailMessage] = {}
        for message in messages:
            try:
                emails[message.id] = as_email(message, self._from, self._clock.now())
            except ValueError:  # a header no server should see (enqueue refuses these)
                outcomes[message.id] = Outcome(FAILED, "malformed message")
        if not emails:
            return outcomes
        try:
            async with SmtpSession(self._server, self._timeout) as smtp:
                for message_id, email in emails.items():
                    try:
                        await smtp.send(email)
                        outcomes[message_id] = Outcome(SENT)
                    except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPResponseException) as exc:
                        outcomes[message_id] = Outcome.of(exc)  # the connection goes on
        except (aiosmtplib.SMTPException, OSError) as exc:  # connect, TLS, login, lost connection
            failure = Outcome.of(exc)
            for message_id in emails:
                outcomes.setdefault(message_id, failure)  # the ones not sent before it
        return outcomes

    async def _record(self, messages: list[MailMessage], outcomes: dict[uuid.UUID, Outcome]) -> None:
        now = self._clock.now()
        async with self._factory() as session, session.begin():
            for message in messages:
                outcome = outcomes[message.id]
                state = outcome.state
                if state == PENDING and now - message.created_at >= self._max_age:
                    state = FAILED
                values: dict[str, object] = {"state": state, "last_error": outcome.detail}
                if state == SENT:
                    values["sent_at"] = now
                elif state == PENDING:
                    values["next_attempt_at"] = now + backoff(message.attempts)
                await session.execute(
                    update(MailMessage)
                    # Still this sender's claim (not taken again after its lease ran out).
                    .where(
                        MailMessage.id == message.id,
                        MailMessage.state == SENDING,
                        MailMessage.attempts == message.attempts,
                    )
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                level = logging.WARNING if state == FAILED else logging.INFO
                logger.log(
                    level,
                    "mail %s (%s): %s after %d attempt(s)%s",
                    message.id,
                    message.purpose,
                    state,
                    message.attempts,
                    f" ({outcome.detail})" if outcome.detail else "",
                )
