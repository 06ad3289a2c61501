"""Delivers the outbox: claims due messages, sends them, records what happened.

- **Each message once, on any number of workers and nodes**: a sender claims a batch in
  one short transaction (`state = sending`, with a lease), PostgreSQL skipping rows
  another sender holds (`FOR UPDATE SKIP LOCKED`), SQLite serialising the claims under
  its write lock; then it sends them on one connection, with no transaction open,
  recording each outcome as soon as the server answers. What it claimed and did not try
  (it is stopping, the server went away, or the lease is running out) goes back,
  uncharged. A sender killed mid-send leaves its claim to expire and that message goes
  again: delivery is at least once, as with any outbox, and a duplicate needs a crash
  between the SMTP server's 250 and the next commit. The Message-ID is the row's, so a
  receiving system can tell the two apart.
- **Retries**: a message's own 4xx (RCPT, DATA) waits 1, 2, 4 ... s, at most 60 s; its
  own 5xx fails it at once. A fault of the server or the configuration (refused or lost
  connection, timeout, TLS, EHLO, login, MAIL FROM, a 5xx greeting) charges no message:
  the sender backs off (1 ... 60 s) and the batch waits. A message still unsent
  `MAIL_MAX_AGE_HOURS` after it was written fails. Every attempt is logged with the
  message's id and purpose, never its body (it holds tokens) or address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import Message

import aiosmtplib
from sqlalchemy import ColumnElement, Update, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from saas_app.core.clock import Clock
from saas_app.core.config import Settings
from saas_app.core.logging import REPEATS
from saas_app.mail.models import FAILED, PENDING, SENDING, SENT, MailMessage
from saas_app.mail.outbox import as_email
from saas_app.mail.smtp import SmtpServer, SmtpSession
from saas_app.runtime import Runtime

logger = logging.getLogger("saas_app.mail")
POLL_SECONDS = 1.0  # how long a new message may wait while the sender is idle
BATCH = 50  # messages claimed, and sent on one connection, at a time
MAX_BACKOFF_SECONDS = 60
# A message's body holds a live one-time link (a reset, a verification, an invitation): kept
# only while the message may still be sent, never for the 30 days a sent row stays listed.
ENDED_BODY: dict[str, object] = {"text_body": "", "html_body": None}
# The server's answer about this message (RCPT, DATA): its own outcome. Anything else
# (connect, TLS, EHLO, login, MAIL FROM, a lost connection) is the server's or the
# operator's state: the messages wait, uncharged, and the sender backs off.
MESSAGE_FAULTS = (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPDataError)
SERVER_FAULTS = (aiosmtplib.SMTPException, OSError)


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str  # SENT, PENDING (try again) or FAILED
    detail: str | None = None  # the SMTP reply code, or the kind of error

    @classmethod
    def of(cls, exc: BaseException) -> Outcome:
        """A message's own refusal: 5xx fails it, anything else tries again."""
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            codes = [refused.code for refused in exc.recipients]
            permanent = bool(codes) and all(500 <= code < 600 for code in codes)
            return cls(FAILED if permanent else PENDING, f"recipient refused {codes}")
        code = getattr(exc, "code", 0)
        return cls(FAILED if 500 <= code < 600 else PENDING, describe(exc))


def describe(exc: BaseException) -> str:
    """What went wrong, for the log and `last_error`: a reply code or an error kind, never
    the server's text (it may quote the address)."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return f"login refused {exc.code}"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"reply {exc.code}"
    return type(exc).__name__


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(MAX_BACKOFF_SECONDS, 2 ** max(0, attempts - 1)))


@dataclass(frozen=True, slots=True)
class Claim:
    messages: list[MailMessage]
    send_until: datetime  # a message started later might outlive the lease: left to the next pass


class MailSender:
    """Runs in the app's lifespan (`MAIL_SENDER_IN_APP`) or alone (`python -m saas_app
    mail worker`); `deliver_due()` is one pass, `run()` passes until closed."""

    def __init__(
        self,
        reads: async_sessionmaker[AsyncSession],
        writes: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: Clock,
    ) -> None:
        assert settings.SMTP_URL is not None
        self._reads, self._writes = reads, writes
        self._server = SmtpServer.parse(settings.SMTP_URL)
        self._from = settings.MAIL_FROM
        self._timeout = settings.SMTP_TIMEOUT_SECONDS
        self._max_age = timedelta(hours=settings.MAIL_MAX_AGE_HOURS)
        # A message's exchange takes at most about 4 timeouts (MAIL, RCPT, DATA, its end);
        # one started before `send_until` ends before the lease does.
        self._lease = timedelta(seconds=self._timeout * 6 + 30)
        self._send_window = self._lease - timedelta(seconds=self._timeout * 5)
        self._clock = clock
        self._server_failures = 0  # in a row: the sender's own back-off
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_runtime(cls, runtime: Runtime) -> MailSender:
        """The sender of the app's (or the CLI's) runtime: its sessions, settings and clock."""
        return cls(runtime.session_factory, runtime.write_session_factory, runtime.settings, runtime.clock)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="mail sender")

    async def close(self) -> None:
        """Stops after the message being sent (bounded by the SMTP timeouts): what it
        claimed and did not try goes back to the outbox, uncharged, for the next sender."""
        self._stopping.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=self._timeout * 4 + 1)
        if not done:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                claimed = await self.deliver_due()
            except Exception as exc:  # the database is down: try again, say so now and then
                kind = type(exc).__name__
                REPEATS.log(logger, logging.ERROR, "mail:pass", "mail sender: a pass failed (%s)", kind)
                claimed = 0
            if claimed < BATCH:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_SECONDS):
                        await self._stopping.wait()

    async def deliver_due(self) -> int:
        """Claims what is due, sends it, records each outcome as it comes; returns how many
        were claimed."""
        claim = await self._claim()
        if claim.messages:
            await self._deliver(claim)
        return len(claim.messages)

    def _due(self, now: datetime) -> ColumnElement[bool]:
        """Pending and due, or claimed by a sender whose lease ran out."""
        return and_(
            or_(MailMessage.state == PENDING, MailMessage.state == SENDING),
            MailMessage.next_attempt_at <= now,
        )

    async def _claim(self) -> Claim:
        now = self._clock.now()
        async with self._reads() as session:
            # A read first: an idle outbox costs one indexed SELECT a second, no write lock.
            if (await session.scalar(select(MailMessage.id).where(self._due(now)).limit(1))) is None:
                return Claim([], now)
        async with self._writes() as session, session.begin():
            # Too old to send: failed here too, so a message whose sending never gets as far
            # as a record (a sender that dies on it, every time) still ends.
            await session.execute(
                update(MailMessage)
                .where(self._due(now), MailMessage.created_at <= now - self._max_age)
                .values(state=FAILED, last_error="too old", **ENDED_BODY)
                .execution_options(synchronize_session=False)
            )
            # The batch's ids first, locked (PostgreSQL skips rows another sender holds),
            # then their UPDATE. Not one `UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR
            # UPDATE SKIP LOCKED)`: PostgreSQL may run that subquery again for each row it
            # updates, and such a claim took the whole outbox, not a batch.
            due = await session.scalars(
                select(MailMessage.id)
                .where(self._due(now))
                .order_by(MailMessage.next_attempt_at)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            )
            claimed = await session.scalars(
                update(MailMessage)
                .where(MailMessage.id.in_(list(due.all())), self._due(now))
                .values(state=SENDING, next_attempt_at=now + self._lease, attempts=MailMessage.attempts + 1)
                .returning(MailMessage)
                .execution_options(synchronize_session=False)
            )
            messages = list(claimed.all())
            for message in messages:
                session.expunge(message)
        return Claim(messages, now + self._send_window)

    async def _deliver(self, claim: Claim) -> None:
        untried: list[tuple[MailMessage, Message]] = []
        for message in claim.messages:
            try:
                untried.append((message, as_email(message, self._from, self._clock.now())))
            except ValueError:  # a header no server should see (enqueue refuses these)
                await self._record(message, Outcome(FAILED, "malformed message"))
        if not untried:
            return
        try:
            async with SmtpSession(self._server, self._timeout) as smtp:
                self._server_failures = 0
                while untried and not self._stopping.is_set() and self._clock.now() < claim.send_until:
                    message, email = untried.pop(0)
                    try:
                        await smtp.send(email, sender=self._from, recipient=message.recipient)
                    except MESSAGE_FAULTS as exc:
                        await self._record(message, Outcome.of(exc))
                    except SERVER_FAULTS as exc:  # mid-exchange: this one is charged, not the rest
                        await self._record(message, Outcome(PENDING, describe(exc)))
                        raise
                    else:
                        await self._record(message, Outcome(SENT))
        except SERVER_FAULTS as exc:
            self._server_failures += 1
            detail = describe(exc)
            REPEATS.log(
                logger, logging.WARNING, f"mail:server:{detail}", "mail server unavailable: %s", detail
            )
            await self._release(untried, backoff(self._server_failures), detail)
            return
        await self._release(untried, timedelta(0), None)  # stopping, or the lease is running out

    async def _record(self, message: MailMessage, outcome: Outcome) -> None:
        now = self._clock.now()
        state = outcome.state
        if state == PENDING and now - message.created_at >= self._max_age:
            state = FAILED
        values: dict[str, object] = {"state": state, "last_error": outcome.detail}
        if state in (SENT, FAILED):
            values.update(ENDED_BODY)
        if state == SENT:
            values["sent_at"] = now
        elif state == PENDING:
            values["next_attempt_at"] = now + backoff(message.attempts)
        # One statement, committed on its own (the read sessions run in autocommit): no
        # BEGIN and COMMIT round trips for each message sent.
        async with self._reads() as session:
            await session.execute(self._still_ours(message).values(**values))
        level = logging.WARNING if state == FAILED else logging.INFO
        detail = f" ({outcome.detail})" if outcome.detail else ""
        logger.log(
            level,
            "mail %s (%s): %s after %d attempt(s)%s",
            message.id,
            message.purpose,
            state,
            message.attempts,
            detail,
        )

    async def _release(
        self, untried: list[tuple[MailMessage, Message]], wait: timedelta, detail: str | None
    ) -> None:
        """Back to the outbox, uncharged: the attempt the claim counted was never made."""
        if not untried:
            return
        due = self._clock.now() + wait
        async with self._writes() as session, session.begin():
            for message, _ in untried:
                values: dict[str, object] = {"state": PENDING, "next_attempt_at": due}
                values["attempts"] = message.attempts - 1
                if detail is not None:
                    values["last_error"] = detail
                await session.execute(self._still_ours(message).values(**values))

    def _still_ours(self, message: MailMessage) -> Update:
        """An UPDATE of `message` that changes nothing unless it is still this sender's claim
        (not taken again by another after the lease ran out)."""
        return (
            update(MailMessage)
            .where(
                MailMessage.id == message.id,
                MailMessage.state == SENDING,
                MailMessage.attempts == message.attempts,
            )
            .execution_options(synchronize_session=False)
        )
